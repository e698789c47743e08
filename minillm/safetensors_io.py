"""Checkpoints: the safetensors format, and matching a checkpoint's tensors to a model's parameters.

A safetensors file is three parts, all little-endian:

    8 bytes     N, the length of the header
    N bytes     a JSON header: {name: {"dtype": "F32", "shape": [384, 384], "data_offsets": [begin, end]},
                                ..., "__metadata__": {"format": "pt"}}
    the rest    the tensors' bytes; tensor `name` is bytes [begin, end) of this part

The reader below is our own (about 80 lines) for three reasons: NumPy has no bfloat16, so bf16 weights
must be widened by hand (a bf16 number is the top 16 bits of a float32); a broken file (cut short, a
header that lies about sizes, an unknown dtype) must fail with a message that names the file and the
tensor; and loading must not hold the weights twice. A model is loaded in two steps: the headers
alone say every tensor's name, shape and dtype, enough to match the checkpoint to the model and
report every problem before a weight is read; then each tensor's bytes are read from the file
straight into its parameter's array (``f.readinto``), so loading BERT-base (418 MiB) needs the
model's memory and nothing more. (A memory map of the file would not do: the pages it reads count
in the process's resident memory, a second copy as far as RSS goes.)

Writing goes through the `safetensors` library and a temporary file that is renamed into place, so
a crash mid-write never leaves a half-written checkpoint behind.
"""
import dataclasses
import json
import os
import re
import reprlib
import tempfile
from collections import OrderedDict

import numpy
from safetensors.numpy import save

from . import backend
from .tensor import Tensor

MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors library sets
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
MAX_DIMS = 64  # NumPy's limit on an array's dimensions
MAX_ELEMENTS = (2 ** 63 - 1) // 8  # and on its elements: their bytes must fit an int64, at up to 8 bytes each
WEIGHTS_NAME, WEIGHTS_INDEX_NAME = "model.safetensors", "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model; the message names the file and key."""


# ---- the format ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file, as its header says (checked; no data read yet).
    It has an array's ``shape`` and ``dtype``, so a checkpoint can be matched to a model before any
    weight is read."""
    path: str
    name: str
    stored: str    # the file's dtype code: "F32", "BF16", ...
    shape: tuple
    offset: int    # of its first byte, counted from the start of the file
    nbytes: int

    @property
    def dtype(self):
        """The NumPy dtype it is read as: the stored one in native byte order, bfloat16 as float32."""
        if self.stored == "BF16":
            return numpy.dtype(numpy.float32)
        return numpy.dtype(DTYPES[self.stored]).newbyteorder("=")


def read_header(path):
    """The tensors of a .safetensors file, from its header alone: (OrderedDict name -> TensorInfo,
    metadata dict). Every claim the header makes is checked here, against the others and against
    the file's size, as the safetensors library checks them: the header is UTF-8 JSON of at most
    MAX_HEADER_BYTES with no key twice, each tensor's bytes match its shape and dtype, and the
    tensors tile the data exactly (no gap, no overlap, nothing left over). So a broken file fails
    before any weight is read, and no array is ever allocated larger than the file."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated: {size} bytes, too short for the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(f"{path}: the header length says {n} bytes but only {size - 8} follow "
                                  "(a truncated or corrupt file)")
        header = _parse_header(path, f.read(n))
    metadata = _metadata(path, header.pop("__metadata__", None))
    data_start, data_size = 8 + n, size - 8 - n
    infos = OrderedDict((name, _tensor_info(path, name, entry, data_start, data_size))
                        for name, entry in header.items())
    _check_layout(path, infos, data_start, data_size)
    return infos, metadata


def _parse_header(path, raw):
    """The header's JSON object. Strict where Python's json is lenient: UTF-8 only (json.loads
    would also take UTF-16), no key twice (json.loads keeps the last), no NaN, Infinity or
    -Infinity (JavaScript's constants, which json.loads takes and JSON has not: the safetensors
    library refuses them), no -0 (json.loads reads it as 0; the library reads it as a float and
    refuses it where the format wants an unsigned integer, and it has no other numbers), and
    nesting too deep or a number too long for Python is a CheckpointError, not a RecursionError or
    a bare ValueError."""
    def not_json(constant):
        raise CheckpointError(f"{path}: the header is not valid JSON ({constant} is not a JSON value)")

    def integer(digits):
        if digits == "-0":
            raise CheckpointError(f"{path}: the header has the number -0 where only unsigned integers belong")
        return int(digits)

    def no_duplicates(pairs):
        keys = [key for key, _ in pairs]
        if len(set(keys)) < len(keys):
            twice = next(key for key in keys if keys.count(key) > 1)
            raise CheckpointError(f"{path}: the header has the key {twice!r} twice")
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=not_json,
                            parse_int=integer)
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path}: the header is not UTF-8 ({err.reason} at byte {8 + err.start})") from None
    except CheckpointError:
        raise
    except (ValueError, RecursionError) as err:  # JSONDecodeError, a 5000-digit number, [[[[...]]]]
        raise CheckpointError(f"{path}: the header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the header must be a JSON object, got {type(header).__name__}")
    return header


def _metadata(path, metadata):
    """__metadata__, which the format makes a map of strings to strings (or absent)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: __metadata__ must be an object of strings, got {reprlib.repr(metadata)}")
    return metadata


def _tensor_info(path, name, entry, data_start, data_size):
    """One header entry, after checking its claims against each other and against the file's size."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CheckpointError(f"{where}: header entry {reprlib.repr(entry)} needs dtype, shape and "
                              "data_offsets [begin, end]")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(f"{where} has dtype {reprlib.repr(dtype)}, which minillm does not read "
                              f"(known: {', '.join(DTYPES)})")
    if not _naturals(shape) or not _naturals(offsets) or len(offsets) != 2:
        raise CheckpointError(f"{where}: shape {reprlib.repr(shape)} and data_offsets {reprlib.repr(offsets)} "
                              "must be lists of non-negative integers, data_offsets two of them")
    if len(shape) > MAX_DIMS:
        raise CheckpointError(f"{where} has {len(shape)} dimensions; NumPy arrays have at most {MAX_DIMS}")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise CheckpointError(f"{where} needs bytes [{begin}, {end}) of the data, but the file holds only "
                              f"{data_size} bytes of data (a truncated file?)")
    extent = 1
    for d in shape:  # capped: a hostile shape's product may have thousands of digits
        extent = min(extent * max(d, 1), MAX_ELEMENTS + 1)
    if extent > MAX_ELEMENTS:  # even with a 0 among them, NumPy refuses such sides
        raise CheckpointError(f"{where}: shape {reprlib.repr(shape)} is larger than any NumPy array can be")
    needed = (0 if 0 in shape else extent) * numpy.dtype(DTYPES[dtype]).itemsize
    if end - begin != needed:
        raise CheckpointError(f"{where}: the header lies about its size: shape {reprlib.repr(shape)} of {dtype} "
                              f"needs {needed} bytes but data_offsets [{begin}, {end}] span {end - begin}")
    return TensorInfo(path, name, dtype, tuple(shape), data_start + begin, needed)


def _naturals(value):
    """Whether ``value`` is a JSON list of non-negative integers (true and false are not integers)."""
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def _check_layout(path, infos, data_start, data_size):
    """The tensors, in the order of their offsets, must tile the data: each begins where the one
    before ended, and the last ends at the end of the file (the safetensors library's rule)."""
    covered, previous = 0, None
    for info in sorted(infos.values(), key=lambda i: (i.offset, i.nbytes)):
        begin = info.offset - data_start
        if begin != covered:
            what = (f"overlaps tensor {previous!r}" if begin < covered
                    else f"leaves bytes [{covered}, {begin}) of the data unused (a gap)")
            raise CheckpointError(f"{path}: tensor {info.name!r} at data bytes [{begin}, {begin + info.nbytes}) {what}")
        covered, previous = begin + info.nbytes, info.name
    if covered != data_size:
        raise CheckpointError(f"{path}: the tensors cover {covered} bytes of data but {data_size} follow the "
                              "header (trailing bytes: a corrupt file, or two files joined?)")


def read_tensor(f, info, out=None):
    """Read one tensor from ``f``, its file opened in binary mode, into ``out`` (a C-contiguous NumPy
    array of info.shape, filled in place) or into a new array of info.dtype. Returns the array.

    When ``out`` has the stored dtype (float32 weights into float32 parameters) the file's bytes are
    read straight into its memory: no copy of the tensor exists even for a moment. Otherwise (bf16,
    fp16, float64 weights) the stored tensor is read into a temporary and converted.
    """
    stored = numpy.dtype(DTYPES[info.stored])
    out = numpy.empty(info.shape, info.dtype) if out is None else out
    if out.shape != info.shape:
        raise ValueError(f"{info.path}: tensor {info.name!r} has shape {info.shape}, out has {out.shape}")
    raw = out if out.dtype == stored and out.flags.c_contiguous else numpy.empty(info.shape, stored)
    f.seek(info.offset)
    if f.readinto(raw) != info.nbytes:  # the header was checked against the file's size: it shrank since
        raise CheckpointError(f"{info.path}: tensor {info.name!r}: the file ended before its {info.nbytes} "
                              f"bytes at offset {info.offset} (truncated while being read?)")
    if raw is not out:
        # bfloat16 is the upper half of a float32: shift its bits back into place
        out[...] = (raw.astype(numpy.uint32) << 16).view(numpy.float32) if info.stored == "BF16" else raw
    return out


def read_safetensors(path):
    """Read every tensor of a .safetensors file. Returns (OrderedDict name -> NumPy array, metadata dict).

    Arrays keep their dtype, except bfloat16, which NumPy lacks: it comes back as float32 (exactly).
    """
    infos, metadata = read_header(path)
    with open(path, "rb") as f:
        return OrderedDict((name, read_tensor(f, info)) for name, info in infos.items()), metadata


def write_safetensors(tensors, path, metadata=None):
    """Write {name: array or Tensor} to a .safetensors file, atomically (temporary file, then rename).
    Arrays on a GPU are copied to the host first."""
    arrays = OrderedDict()
    for name, value in tensors.items():
        array = numpy.asarray(backend.to_host(value.data if isinstance(value, Tensor) else value), order="C")
        if array.dtype.kind not in "fiub":
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {array.dtype}, which safetensors cannot store")
        arrays[name] = array
    atomic_write(path, save(arrays, metadata=metadata))


def atomic_write(path, content):
    """Write bytes or text to ``path`` through a temporary file in the same folder and os.replace:
    readers see the old file or the new one, never a part of it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private (0600); give it a plain file's mode
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno is not None:  # a full disk: say which file, and what is kept
            kept = "the previous one is unchanged" if os.path.exists(path) else "nothing was written"
            raise OSError(err.errno, f"cannot write {path}: {err.strerror}; {kept}") from None
        raise


def remove_temporaries(folder):
    """Delete what atomic_write leaves when its process is killed mid-write: ".name.XXXXXXXX.tmp"
    files, which no reader opens (a run killed a thousand times must not fill the disk with them)."""
    for name in os.listdir(folder):
        if TEMPORARY.fullmatch(name):
            os.remove(os.path.join(folder, name))


TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # mkstemp's names in atomic_write


# ---- a model folder ---------------------------------------------------------------------------------
def index_weights(folder):
    """The tensors of a Hugging Face model folder, model.safetensors or the shards its index lists,
    from the headers only: OrderedDict name -> TensorInfo (which names its file)."""
    folder = os.fspath(folder)
    single, index = os.path.join(folder, WEIGHTS_NAME), os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: expected a 'weight_map' object of tensor name -> shard file")
        files = [os.path.join(folder, shard) for shard in dict.fromkeys(weight_map.values())]
    else:
        other = [n for n in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")
                 if os.path.exists(os.path.join(folder, n))]
        hint = (f" It has {other[0]}, a format minillm does not read: convert it once with transformers, "
                "model.save_pretrained(folder, safe_serialization=True).") if other else ""
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME}) in this folder.{hint}")
    infos = OrderedDict()
    for path in files:
        for name, info in read_header(path)[0].items():
            if name in infos:
                raise CheckpointError(f"{path}: tensor {name!r} is also in {infos[name].path}")
            infos[name] = info
    return infos


def read_weights(folder):
    """All tensors of a model folder (see index_weights), each read into a new array.
    Returns (OrderedDict name -> array, dict name -> the file it came from)."""
    infos = index_weights(folder)
    arrays = OrderedDict((name, numpy.empty(info.shape, info.dtype)) for name, info in infos.items())
    read_into(arrays, infos)
    return arrays, {name: info.path for name, info in infos.items()}


def read_into(arrays, infos):
    """Fill arrays in place from their tensors: {name: NumPy array} (a model's state_dict(), whose
    arrays are the parameters' own) and {name: TensorInfo} (from index_weights or match_state_dict).
    Each file is opened once and read front to back, its bytes going straight into the arrays, so
    loading a model takes no memory beyond the model itself (and one tensor, to widen bf16 or fp16)."""
    by_file = OrderedDict()
    for name, info in infos.items():
        by_file.setdefault(info.path, []).append((info.offset, name))
    for path, names in by_file.items():
        with open(path, "rb") as f:
            for _, name in sorted(names):
                read_tensor(f, infos[name], out=arrays[name])


def rename_legacy(key):
    """The one place old names are mapped: TF-era BERT checkpoints call LayerNorm's weight and bias
    gamma and beta."""
    return re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", key))


def match_state_dict(model, infos, prefix, heads=(), buffers=(), new_heads=()):
    """Map a checkpoint's tensors onto ``model``'s parameter names, checking everything, before any
    weight is read.

    model:     a Module; its parameter names may or may not start with ``prefix`` + "." (the base model,
               e.g. "bert", inside a task model). Checkpoint keys are matched either way.
    infos:     name -> TensorInfo, the checkpoint's tensors (index_weights).
    heads:     regexes of weights of heads the model lacks (BERT's MLM/NSP "cls."): ignored, and listed.
    buffers:   regexes of non-weight tensors (position_ids): ignored silently.
    new_heads: regexes of the model's parameters a checkpoint may lack (a new classifier): listed, and
               left as the model initialized them.
    Returns (parameter name -> TensorInfo, newly_initialized names, ignored names). Everything else
    (unexpected or missing keys, shape mismatches, non-float tensors) is one CheckpointError listing
    every problem with its key, file and shapes.
    """
    own = dict(model.named_parameters())
    nested = any(name.startswith(prefix + ".") for name in own)
    matched, seen, ignored, problems = OrderedDict(), {}, [], []
    for key, info in infos.items():
        name = rename_legacy(key)
        if nested and not name.startswith(prefix + ".") and f"{prefix}.{name}" in own:
            name = f"{prefix}.{name}"
        elif not nested and name.startswith(prefix + "."):
            name = name[len(prefix) + 1:]
        where = f"{info.path}: tensor {key!r}"
        if name not in own:
            if any(re.search(p, name) for p in buffers):
                continue
            if any(re.search(p, name) for p in heads):
                ignored.append(key)
            else:
                problems.append(f"{where} is not a parameter of {type(model).__name__} (unexpected key {name!r})")
            continue
        if name in seen:
            problems.append(f"{where} gives {name!r} a second time (also as {seen[name]!r})")
            continue
        seen[name] = key
        if info.dtype.kind != "f":
            problems.append(f"{where} has dtype {info.dtype}; the parameter {name!r} needs floating point")
        elif info.shape != own[name].shape:
            problems.append(f"{where}: shape mismatch for {name!r}: {info.shape} in the checkpoint, "
                            f"{own[name].shape} in the model")
        else:
            matched[name] = info
    missing = [name for name in own if name not in seen]
    new = [name for name in missing if any(re.search(p, name) for p in new_heads)]
    files = ", ".join(sorted({info.path for info in infos.values()})) or "the checkpoint"
    problems += [f"{files}: missing key {name!r} (shape {own[name].shape}): the checkpoint has no tensor for it"
                 for name in missing if name not in new]
    if problems:
        raise CheckpointError(f"the checkpoint does not fit {type(model).__name__}:\n  " + "\n  ".join(problems))
    return matched, new, ignored
