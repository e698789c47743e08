"""Fuzz targets: every entry point that reads what others wrote, or runs compiled code on user arrays,
as one function of bytes.

A target has
    seeds(folder)        valid inputs (bytes) written by minillm: where mutation starts
    mutate(rng, seed)    a broken input: the faults the format invites (structural), then byte noise
    run(data, folder)    feed ``data`` to the entry point and check its contract; returns the outcome:
                         "accepted", or the expected (named) error it raised. A broken contract is an
                         AssertionError; any other exception is a crash.

tests/test_fuzz.py draws from these with hypothesis in CI; bench/fuzz.py runs them for minutes, with
atheris (coverage-guided, libFuzzer's mutations and ours) or with seeded random mutation alone.
"""
import collections
import csv
import io
import json
import math
import random
import re
import shutil
import struct
import tracemalloc
import warnings

import numpy as np

from finetune_helpers import tiny_model, tiny_tokenizer
from minillm import kernels, safetensors_io
from minillm.data import DataError, encode_labels, read_examples
from minillm.data.readers import LABEL_COLUMNS
from minillm.optim.adamw import update as adamw_update
from minillm.safetensors_io import CheckpointError
from minillm.tokenizer import PADDING

ODD_BYTES = [b"\x00", b"\xff", b"\r", b"\n", b"\r\n", b"\t", b'"', b"\\", b"{", b"[", b"\xc3", b"\xed\xa0\x80"]
ODD_NUMBERS = [0, -1, 1, 2, 3, 7, 2 ** 31, 2 ** 32 + 1, 2 ** 63, 2 ** 64, 10 ** 30, 1.5, float("nan"), True, None,
               "4", [], {}, [1], -2 ** 63]


# ---- mutation shared by every target -------------------------------------------------------------
def mutate_bytes(rng, data, rounds=None):
    """libFuzzer-style byte noise: flip, delete, insert, duplicate, overwrite, truncate."""
    data = bytearray(data)
    for _ in range(rounds or rng.randint(1, 4)):
        at = rng.randint(0, len(data))
        kind = rng.randrange(6)
        if kind == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del data[at:at + rng.randint(1, 16)]
        elif kind == 2:
            data[at:at] = rng.choice(ODD_BYTES) if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 8))
        elif kind == 3:
            data[at:at] = data[at:at + rng.randint(1, 64)]
        elif kind == 4 and data:
            data[at:at + 1] = rng.choice(ODD_BYTES)
        else:
            del data[at:]
    return bytes(data)


def odd_value(rng, value):
    """A replacement for a JSON value: a number near it, an odd number, or the wrong type."""
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
        return rng.choice([value * 2, value + 1, value - 1, -value, value * 1000, 0])
    return rng.choice(ODD_NUMBERS + ["", "x" * 200, "F32", "gelu", [value, value], {"a": value}])


def mutate_json(rng, values):
    """Delete, retype or add one field somewhere in a JSON value (a copy)."""
    values = json.loads(json.dumps(values))
    target = values
    while isinstance(target, (dict, list)) and target and rng.random() < 0.6:
        child = rng.choice(list(target) if isinstance(target, dict) else range(len(target)))
        if not isinstance(target[child], (dict, list)) or not target[child]:
            break
        target = target[child]
    if isinstance(target, dict) and target:
        key = rng.choice(list(target))
        kind = rng.randrange(3)
        if kind == 0:
            del target[key]
        elif kind == 1:
            target[key] = odd_value(rng, target[key])
        else:
            target[key + rng.choice(["", "_x"])] = odd_value(rng, target[key])
    elif isinstance(target, list) and target:
        target[rng.randrange(len(target))] = odd_value(rng, target[0])
    return values


def dumps_json(rng, values):
    """JSON text, sometimes with a key twice or nested far too deep."""
    text = json.dumps(values, allow_nan=True)
    kind = rng.randrange(8)
    if kind == 0 and text.startswith("{") and len(text) > 2:
        text = "{" + text[1:text.index(",") + 1 if "," in text else -1] + text[1:]  # the first key twice
    elif kind == 1:
        depth = rng.choice([100, 1000, 100_000])
        text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    return text.encode("utf-8")


# ---- the safetensors reader ----------------------------------------------------------------------
def safetensors_seeds(folder):
    """Files the writer makes: several dtypes, a scalar, a size-0 tensor, metadata; and a model's."""
    path = folder / "seed.safetensors"
    rng = np.random.default_rng(0)
    seeds = []
    for tensors in ({"w": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(3, dtype=np.int64)},
                    {"h": rng.standard_normal(5).astype(np.float16), "mask": np.array([True, False]),
                     "s": np.float64(2.5), "empty": np.zeros((0, 3), np.float32), "u": np.arange(4, dtype=np.uint8)}):
        safetensors_io.write_safetensors(tensors, path, metadata={"format": "pt"})
        seeds.append(path.read_bytes())
    bf16 = {"x": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}
    seeds.append(_safetensors_file(bf16, rng.integers(0, 2 ** 16, 4, dtype=np.uint16).tobytes()))
    tiny_model(0).save_pretrained(folder / "model")
    seeds.append((folder / "model" / safetensors_io.WEIGHTS_NAME).read_bytes())
    return seeds


def _safetensors_file(header, data, header_bytes=None):
    header_bytes = json.dumps(header).encode() if header_bytes is None else header_bytes
    return struct.pack("<Q", len(header_bytes)) + header_bytes + data


def _split_safetensors(data):
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def mutate_safetensors(rng, seed):
    """The faults the issue names: cut anywhere, a header length past the end, offsets out of range,
    overlapping or leaving gaps, shapes whose byte size overflows, unknown or mismatched dtypes,
    non-UTF-8, deeply nested or duplicate-key JSON; then, or instead, byte noise."""
    header, data = _split_safetensors(seed)
    names = [k for k in header if k != "__metadata__"]
    kind = rng.randrange(10)
    if kind == 0:
        return seed[:rng.randrange(len(seed))]  # truncated anywhere
    if kind == 1:  # the header length lies
        return struct.pack("<Q", rng.choice([len(seed), 2 ** 64 - 1, 2 ** 40, rng.randrange(len(seed) + 64)])) + seed[8:]
    if kind == 2 and names:  # offsets out of range, overlapping, leaving gaps
        entry = header[rng.choice(names)]
        begin, end = entry["data_offsets"]
        shift = rng.choice([-4, -1, 1, 2, 8, len(data), 2 ** 62])
        entry["data_offsets"] = rng.choice([[begin + shift, end + shift], [begin, end + shift], [0, end - begin],
                                            [end, begin]])
    elif kind == 3 and names:  # shapes whose byte size overflows (2**64 wraps to 0 in int64)
        header[rng.choice(names)]["shape"] = rng.choice([[2 ** 32, 2 ** 32], [2 ** 63, 2], [2 ** 64, 0],
                                                        [10 ** 40], [3] * 70, [-1, -4], [0, 2 ** 100]])
    elif kind == 4 and names:  # unknown or mismatched dtypes
        header[rng.choice(names)]["dtype"] = rng.choice(["F8_E4M3", "C64", "f32", "", "I8", "F64", "BOOL", 7,
                                                        ["F32"], None])
    elif kind == 5:  # non-UTF-8 or odd bytes in the header
        raw = bytearray(seed[8:8 + len(json.dumps(header).encode())])
        raw[rng.randrange(len(raw))] = rng.choice([0x80, 0xC3, 0xFF, 0xED])
        return struct.pack("<Q", len(raw)) + bytes(raw) + data
    elif kind == 6:
        return _safetensors_file(None, data, dumps_json(rng, header))  # duplicate keys or deep nesting
    elif kind == 7:
        header = mutate_json(rng, header)
    elif kind == 8:  # metadata of the wrong type, or a tensor named __metadata__
        header["__metadata__"] = odd_value(rng, header.get("__metadata__"))
    else:
        return mutate_bytes(rng, seed)
    body = _safetensors_file(header, data)
    return mutate_bytes(rng, body, 1) if rng.random() < 0.2 else body


def run_safetensors(data, folder):
    """read_safetensors: a CheckpointError naming the file, or the very arrays the safetensors library
    reads; never memory beyond the file's size (and float32 room to widen bf16)."""
    path = folder / "fuzz.safetensors"
    path.write_bytes(data)
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    try:
        arrays, _ = safetensors_io.read_safetensors(path)
        outcome = "accepted"
    except CheckpointError as err:
        assert str(path) in str(err), f"the error does not name the file: {err}"
        arrays, outcome = None, err
    peak = tracemalloc.get_traced_memory()[1] - before
    if started:
        tracemalloc.stop()
    bound = 2 * len(data) + 64 * 1024 + 64 * min(len(data), 1 << 16)  # bf16 widens 2x; the header's objects
    assert peak <= bound, f"reading a {len(data)}-byte file took {peak} bytes of memory (bound {bound})"
    if arrays is not None:
        _same_as_the_safetensors_library(data, arrays)
    return outcome


def _same_as_the_safetensors_library(data, arrays):
    """What minillm accepts, the safetensors library (the format's reference) accepts, with the same values."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    header, _ = _split_safetensors(data)
    try:
        theirs = load(data)
    except KeyError as err:  # its NumPy side has no bfloat16 (minillm widens it to float32)
        assert str(err) == "'BF16'", err
        return
    except SafetensorError as err:
        raise AssertionError(f"minillm read a file the safetensors library refuses: {err}") from None
    assert set(theirs) == set(arrays), f"tensors {sorted(arrays)} vs the library's {sorted(theirs)}"
    for name, array in arrays.items():
        expected = theirs[name]
        assert array.shape == expected.shape, name
        assert array.astype(expected.dtype).tobytes() == expected.tobytes(), f"tensor {name!r} differs"


# ---- config.json and the tokenizer files -----------------------------------------------------------
MODEL_FILES = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json")


def model_folder(folder):
    """A tiny fine-tunable model folder (weights, config, tokenizer), made once."""
    model = folder / "model-files"
    if not model.exists():
        model.mkdir()
        tiny_model(0).save_pretrained(model)
        tiny_tokenizer(model).save_pretrained(model)
    return model


def model_files_seeds(folder):
    """Each file of the folder, prefixed with the byte that says which file it is."""
    model = model_folder(folder)
    return [bytes([i]) + (model / name).read_bytes() for i, name in enumerate(MODEL_FILES)]


def mutate_model_files(rng, seed):
    """config.json and tokenizer files with missing fields, wrong types, a vocabulary larger or
    smaller than the embedding table; then, or instead, byte noise."""
    which, content = seed[0], seed[1:]
    name = MODEL_FILES[which % len(MODEL_FILES)]
    if name == "vocab.txt" and rng.random() < 0.5:
        lines = content.decode().splitlines()
        kind = rng.randrange(3)
        if kind == 0:
            lines += [f"extra{i}" for i in range(rng.choice([1, 5, 1000]))]  # more tokens than embedding rows
        elif kind == 1:
            del lines[rng.randrange(len(lines)):]
        else:
            lines.insert(rng.randrange(len(lines)), rng.choice(lines))  # a token twice
        content = ("\n".join(lines) + "\n").encode()
    elif name.endswith(".json") and rng.random() < 0.7:
        values = json.loads(content)
        if name == "config.json" and rng.random() < 0.3:
            values[rng.choice(["vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size",
                               "max_position_embeddings", "type_vocab_size", "num_attention_heads",
                               "num_labels"])] = odd_value(rng, rng.choice([1, 16, 24, 10 ** 9]))
        else:
            values = mutate_json(rng, values)
        content = dumps_json(rng, values)
    if rng.random() < 0.4:
        content = mutate_bytes(rng, content)
    return bytes([which]) + content


def run_model_files(data, folder):
    """The CLI's loading (tokenizer, then config.json, then the weights): an error naming the file,
    raised before any weight is read; or a model whose every token id has an embedding row."""
    from minillm.cli.options import load_classifier

    model_dir = model_folder(folder)
    name = MODEL_FILES[data[0] % len(MODEL_FILES)] if data else MODEL_FILES[0]
    target = model_dir / name
    original = target.read_bytes()
    target.write_bytes(data[1:])
    reads = []
    read_into = safetensors_io.read_into
    safetensors_io.read_into = lambda *args: reads.append(1) or read_into(*args)
    try:
        model, tokenizer = load_classifier(str(model_dir))
        outcome = "accepted"
    except CheckpointError as err:
        assert str(model_dir) in str(err), f"the error does not name the folder's file: {err}"
        assert not reads, f"weights were read before the error: {err}"
        outcome = err
    finally:
        safetensors_io.read_into = read_into
        target.write_bytes(original)
    if outcome == "accepted":
        batch = tokenizer(["a good movie", "the plot was dull and the acting flat"], max_length=16)
        if batch["input_ids"].shape[1] == 0:  # a tokenizer that encodes the texts to nothing
            try:
                model(**batch)
            except ValueError as err:
                assert "input_ids has shape (2, 0): no token per sequence" in str(err), err
                return outcome
            raise AssertionError("a (2, 0) batch was not refused")
        assert batch["input_ids"].max() < model.config.vocab_size
        logits = model(**batch).logits
        assert logits.shape == (2, model.config.num_labels)
    return outcome


# ---- the data readers ---------------------------------------------------------------------------
WHOLE_FILE = ("empty file", "there are no rows", "no labels")  # the errors with no line to name


def _delimited_oracle(text, dialect):
    """(texts, labels) of a file as Python's csv module reads it with ``dialect``, or None where it
    refuses the file or the file is not a good one (no sentence or label column, a short row, an
    empty text or label): the outside oracle of read_examples."""
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline=""), strict=True, **dialect)
                if any(field.strip() for field in row)]
    except csv.Error:
        return None
    header = [name.strip() for name in rows[0]] if rows else []
    label = next((name for name in LABEL_COLUMNS if name in header), None)  # the documented defaults
    if len(rows) < 2 or "sentence" not in header or label is None:
        return None
    text_at, label_at = header.index("sentence"), header.index(label)
    texts, labels = [], []
    for row in rows[1:]:
        if len(row) < len(header) or not row[text_at].strip() or not row[label_at].strip() or \
                any("\0" in field for field in row):
            return None
        texts.append(row[text_at])
        labels.append(row[label_at])
    return texts, labels


def _jsonl_oracle(text):
    """(texts, labels) of a JSON Lines file as its spec reads it (jsonlines.org: a JSON value a line,
    lines separated by \\n, so a \\r before one is JSON's whitespace), each line by Python's json
    module; or None where the file is not a good one: a line that is not an object, has a key twice
    or is not JSON; a first object without 'sentence' and a default label key; a row without them, a
    text that is not a non-blank string, a label that is null, a list, an object or blank."""
    objects = []
    for line in text.split("\n"):
        if not line.strip(" \t\r"):  # JSON's whitespace alone: a blank line, not a row
            continue
        try:
            values = json.loads(line, object_pairs_hook=_pairs)
        except (ValueError, RecursionError):  # not JSON, a key twice, a 5000-digit number, nested too deep
            return None
        if not isinstance(values, dict):
            return None
        objects.append(values)
    label = next((name for name in LABEL_COLUMNS if objects and name in objects[0]), None)  # the defaults
    if label is None or "sentence" not in objects[0]:
        return None
    texts, labels = [], []
    for values in objects:
        text, y = values.get("sentence"), values.get(label)
        if not isinstance(text, str) or not text.strip() or y is None or isinstance(y, (list, dict)) or \
                (isinstance(y, str) and not y.strip()):
            return None
        texts.append(text)
        labels.append(y)
    return texts, labels


def _pairs(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        raise ValueError("a key twice")
    return dict(pairs)


def read_labeled(path):
    """(texts, raw labels) of a data file by read_examples, after encode_labels has taken the labels
    (ids or names: a DataError or a Labels, never another exception)."""
    examples = read_examples(path)
    encode_labels(examples)
    return examples.texts, examples.labels


def delimited_seed(separator):
    def seed(rows):
        quote = (lambda t: '"' + t.replace('"', '""') + '"') if separator == "," else (lambda t: t)
        return (f"sentence{separator}label\n" + "".join(f"{quote(text)}{separator}{label}\n"
                                                       for text, label in rows)).encode()
    return seed


def jsonl_seed(rows):
    """One object a line, as Hugging Face datasets' to_json writes them (UTF-8, not \\u escapes)."""
    return "".join(json.dumps({"sentence": text, "label": label}, ensure_ascii=False) + "\n"
                   for text, label in rows).encode()


def mutate_text(rng, content):
    """Mixed line endings, stray quotes, NUL bytes, missing columns, odd labels; then byte noise."""
    kind = rng.randrange(5)
    if kind == 0:
        ending = rng.choice([b"\r\n", b"\r", b"\n\n", b"\x0b", b"\x0c", "\u2028".encode(), b"\x85"])
        content = content.replace(b"\n", ending, rng.randint(1, 4))
    elif kind == 1:
        at = rng.randrange(len(content))
        content = content[:at] + rng.choice([b'"', b"'", b"\x00", b"\t", "\ufeff".encode(), "²".encode()]) + content[at:]
    elif kind == 2:
        label = rng.choice([b"2", b"-1", b"1.0", b" 1", b"", b"9" * 5000, "١".encode(), "²".encode(), b"0x1"])
        content = content.replace(b"1\n", label + b"\n", 1)
    elif kind == 3:
        content = content[:rng.randrange(len(content) + 1)]
    if kind == 4 or rng.random() < 0.3:
        content = mutate_bytes(rng, content)
    return content


JSONL_ODD_LINES = [b"[1, 2]", b'"a sentence"', b"3", b"null", b"true", b"{}", b"{", b"}", b"NaN", b"  ", b"\t\r",
                   "\u2028".encode(), b"\x0c", b"\x00", "\ufeff".encode(), b'{"sentence": "x"}', b'{"label": 1}']


def mutate_jsonl(rng, content):
    """The faults JSON Lines invites, on one line (or between two): an object's key deleted, retyped
    (a number, list or null for a string), added or written twice; a line that is not an object, a
    blank line, a truncated one, JSON nested far too deep, invalid UTF-8, a NUL byte, a byte-order
    mark, CR or CRLF line ends; or (one time in eight) mutate_text's faults."""
    lines = content.split(b"\n")
    at = rng.randrange(len(lines))
    kind = rng.randrange(8)
    if kind <= 1:  # deleted, retyped, added (kind 0), or a key twice, nested deep (kind 1)
        try:
            values = json.loads(lines[at])
        except ValueError:  # the line is no longer JSON (an earlier mutation): cut it instead
            values = None
        if isinstance(values, dict):
            lines[at] = dumps_json(rng, mutate_json(rng, values)) if kind == 0 else dumps_json(rng, values)
        else:
            lines[at] = lines[at][:rng.randrange(len(lines[at]) + 1)]
    elif kind == 2:  # a line that is not an object, or is blank, or is a bare fragment
        lines.insert(at, rng.choice(JSONL_ODD_LINES))
    elif kind == 3:  # a value nested too deep for the stack, in a text or a label
        depth = rng.choice([10, 500, 990, 1000, 100_000])
        lines[at] = re.sub(rb'(: )("[^"]*"|[0-9]+)', lambda m: m[1] + b"[" * depth + m[2] + b"]" * depth,
                           lines[at], count=1)
    elif kind == 4:  # a line cut short
        lines[at] = lines[at][:rng.randrange(len(lines[at]) + 1)]
    elif kind == 5:  # invalid UTF-8, a NUL byte, a byte-order mark, escapes of a NUL or of half a surrogate pair
        odd = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\x00", "\ufeff".encode(), b"\\u0000",
                          b"\\ud800", b"\\udc00x", b"\\"])
        cut = rng.randrange(len(lines[at]) + 1)
        lines[at] = lines[at][:cut] + odd + lines[at][cut:]
    elif kind == 6:  # line ends: CRLF, a lone CR, a blank line of whitespace
        return rng.choice([b"\r\n", b"\r", b"\n \t\n", b"\n\r\n"]).join(lines)
    else:
        return mutate_text(rng, content)
    content = b"\n".join(lines)
    return mutate_bytes(rng, content, 1) if rng.random() < 0.2 else content


# (suffix, reader(path), seed(rows) -> bytes, oracle(text) -> (texts, labels) or None, mutate(rng, bytes)):
# a new reader is one more line here, and every data fuzz test and the fuzz run take it up
DataReader = collections.namedtuple("DataReader", ["suffix", "read", "seed", "oracle", "mutate"])
DATA_READERS = [
    DataReader(".tsv", read_labeled, delimited_seed("\t"),
               lambda text: _delimited_oracle(text, dict(delimiter="\t", quoting=csv.QUOTE_NONE)),  # GLUE's TSV
               mutate_text),
    DataReader(".csv", read_labeled, delimited_seed(","), lambda text: _delimited_oracle(text, dict(delimiter=",")),
               mutate_text),
    DataReader(".jsonl", read_labeled, jsonl_seed, _jsonl_oracle, mutate_jsonl),
]


def data_seeds(folder):
    rows = [("a charming , funny film", 1), ("it 's \"dull\"", 0), ("l'été était beau", 1), ("plot ; twist", 0)]
    return [bytes([i]) + reader.seed(rows) for i, reader in enumerate(DATA_READERS)]


def mutate_data(rng, seed):
    """The faults of the seed's format (its reader's mutate), then byte noise at times."""
    which, content = seed[0], seed[1:]
    return bytes([which]) + DATA_READERS[which % len(DATA_READERS)].mutate(rng, content)


def run_data(data, folder):
    """A data reader: an error naming file:line (or the file, for what is about the whole file), or
    exactly the rows the outside oracle reads (no row dropped, split or relabeled)."""
    reader = DATA_READERS[data[0] % len(DATA_READERS)] if data else DATA_READERS[0]
    path = folder / f"train{reader.suffix}"
    path.write_bytes(data[1:])
    try:
        texts, labels = reader.read(path)
    except DataError as err:
        named = re.match(rf"{re.escape(str(path))}(:[0-9]+)?: ", str(err))
        assert named, f"the error does not name the file: {err}"
        assert named[1] or any(whole in str(err) for whole in WHOLE_FILE), f"the error names no line: {err}"
        return err
    try:
        expected = reader.oracle(data[1:].decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise AssertionError("the reader accepted a file that is not UTF-8") from None
    assert expected is not None, f"the reader accepted a file its oracle refuses: {data[1:200]!r}"
    assert (list(texts), list(labels)) == expected, "the rows differ from the oracle's"
    return "accepted"


# ---- the tokenizer wrapper -----------------------------------------------------------------------
def tokenizer_seeds(folder):
    return [b"\x00\x10" + "a good movie".encode(), b"\x01\x20" + "l'été, 東京 ! ##ing".encode(),
            b"\x02\x08" + "the plot was dull".encode()]


def mutate_tokenizer(rng, seed):
    head, text = seed[:2], seed[2:]
    if rng.random() < 0.3:
        text = "".join(chr(rng.choice([rng.randrange(0x110000), rng.randrange(0x20), 0xD800 + rng.randrange(2048),
                                       0xFEFF, 0x200B, 0x0301, 0x4E00 + rng.randrange(100)]))
                       for _ in range(rng.randint(0, 40))).encode("utf-8", "surrogatepass")
    head = bytes([rng.randrange(256), rng.randrange(256)])
    return head + mutate_bytes(rng, text)


_TOKENIZER = {}


def run_tokenizer(data, folder):
    """BertTokenizer on arbitrary Unicode, a megabyte at times: arrays of the asked shape, every id
    in the vocabulary, the mask 1s then 0s; or a ValueError naming the text."""
    if "tok" not in _TOKENIZER:
        _TOKENIZER["tok"] = tiny_tokenizer(_fresh(folder / "tokenizer"))
    tok = _TOKENIZER["tok"]
    mode, limit = (data[0], data[1]) if len(data) >= 2 else (0, 16)
    if mode & 1:  # code points straight from the bytes, lone surrogates and all
        text = "".join(chr(int.from_bytes(data[i:i + 3], "little") % 0x110000) for i in range(2, len(data) - 2, 3))
    else:
        text = data[2:].decode("utf-8", "replace")
    max_length = 2 + limit % 64
    texts = [text, text[::-1]] if mode & 4 else [text]
    pairs = [text[len(text) // 2:]] * len(texts) if mode & 8 else None
    if mode & 2 and not mode & 0x60:  # one case in eight: a megabyte, alone or paired with the short text
        texts = [(text or "x") * (1_000_000 // max(len(text), 1) + 1)]
        pairs = pairs and pairs[:1]
    padding = ("longest", "max_length", False)[(mode >> 4) % 3]
    try:
        batch = tok(texts, pairs, padding=padding, truncation=True, max_length=max_length)
    except ValueError as err:
        assert "text" in str(err) or "tokenizer" in str(err) or "max_length" in str(err), err
        return err
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if pairs is not None and len(texts[0]) < 10_000:  # the library itself, on the uncut pair (affordable when short)
        tok._configure(PADDING[padding], "longest_first", max_length)
        expected = [e.ids for e in tok._tokenizer.encode_batch(list(zip(texts, pairs)))]
        assert ids.tolist() == expected, "the pair is truncated otherwise than by the tokenizers library"
    assert ids.shape[0] == len(texts) and ids.shape[1] <= max_length, ids.shape
    assert ids.shape == mask.shape == batch["token_type_ids"].shape
    assert ids.min() >= 0 and ids.max() < len(tok)
    assert np.all(np.diff(mask, axis=1) <= 0), "the mask must be 1s then 0s"
    return "accepted"


def _fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---- the kernels ----------------------------------------------------------------------------------
DTYPES = [np.float32, np.float32, np.float64, np.float64, np.float16, np.int64, np.bool_, np.complex64]
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-40, 88.0, -88.0, 1e4]


def _array(rng, shape, dtype=None):
    """A random array of ``shape``: odd dtypes at times, NaN and inf at times, and a layout that is
    C-contiguous, Fortran, reversed, strided or a broadcast (read-only, zero strides)."""
    dtype = dtype if dtype is not None and rng.random() < 0.9 else rng.choice(DTYPES)
    values = np.random.default_rng(rng.randrange(2 ** 32)).standard_normal(shape) * rng.choice([1, 3, 30])
    if values.size and rng.random() < 0.3:
        flat = values.reshape(-1)
        for _ in range(rng.randint(1, 3)):
            flat[rng.randrange(flat.size)] = rng.choice(SPECIAL)
    with np.errstate(invalid="ignore", over="ignore"):
        values = values.astype(dtype)
    layout = rng.randrange(6)
    if layout == 1:
        values = np.asfortranarray(values)
    elif layout == 2 and values.ndim:
        values = np.ascontiguousarray(values[..., ::-1])[..., ::-1]
    elif layout == 3 and values.ndim:
        wide = np.zeros(shape[:-1] + (2 * shape[-1],), values.dtype)
        wide[..., ::2] = values
        values = wide[..., ::2]
    elif layout == 4 and values.ndim and values.size:
        values = np.broadcast_to(values[..., :1], shape)
    return values


def _side(rng):
    return rng.choice([0, 1, 1, 2, 3, 4, 5, 7, 8, 16, 33])


def _maybe_wrong(rng, shape):
    """Usually ``shape``; at times one side off, or one dimension more or fewer."""
    if rng.random() > 0.1 or not shape:
        return shape
    kind = rng.randrange(3)
    if kind == 0:
        at = rng.randrange(len(shape))
        return shape[:at] + (shape[at] + 1,) + shape[at + 1:]
    return shape[1:] if kind == 1 else (2,) + shape


def kernel_case(rng):
    """(name, kernel, args, kwargs) drawn from ``rng``: every public kernel, random shapes,
    layouts, dtypes, size-0 axes, NaN and inf; mostly consistent arguments, at times not."""
    dtype = rng.choice([np.float32, np.float64])
    name = rng.choice(["softmax_forward", "softmax_backward", "layer_norm_forward", "layer_norm_backward",
                       "add_layer_norm_forward", "gelu_forward", "gelu_backward", "matmul", "attention_forward",
                       "attention_backward", "adamw"])
    rows = tuple(_side(rng) for _ in range(rng.randint(0, 3)))
    n = _side(rng)
    A = lambda shape, dt=dtype: _array(rng, _maybe_wrong(rng, shape), dt)  # noqa: E731
    if name == "softmax_forward":
        shape = rows + (n,)
        mask = A(shape) if rng.random() < 0.3 else None
        if mask is not None and rng.random() < 0.5:
            mask = np.where(np.isfinite(mask) & (mask > 0), 0, -np.inf).astype(dtype)
        return name, kernels.softmax_forward, (A(shape), mask), {}
    if name == "softmax_backward":
        if rng.random() < 0.8:  # mostly after the forward, as training runs them
            return name, _softmax_forward_then_backward, (A(rows + (n,)), A(rows + (n,))), {}
        # a y that is no forward's output: the gradient of no function, y (g - <g, y>) of products that overflow
        return "softmax_backward, any output", kernels.softmax_backward, (A(rows + (n,)), A(rows + (n,))), {}
    if name in ("layer_norm_forward", "layer_norm_backward", "add_layer_norm_forward"):
        shape = (_side(rng), n)
        weight, bias = (A((n,)) if rng.random() < 0.8 else None), (A((n,)) if rng.random() < 0.8 else None)
        eps = rng.choice([1e-12, 1e-5, -1.0, float("nan"), 1e30])  # not 0: a constant row is 0/0
        if name == "layer_norm_forward":
            return name, kernels.layer_norm_forward, (A(shape), weight, bias, eps), {}
        if name == "add_layer_norm_forward":  # layer_norm_forward's arguments, the residual last
            return name, _add_layer_norm_forward, (A(shape), weight, bias, eps, A(shape)), {}
        if rng.random() < 0.8:  # mostly after the forward, as training runs them
            return name, _layer_norm_forward_then_backward, (A(shape), weight, bias, eps, A(shape)), {}
        # a mean and rstd that no forward made: the gradient of no function (see layer_norm_backward)
        return "layer_norm_backward, any statistics", kernels.layer_norm_backward, (
            A(shape), A(shape), weight, A(shape[:1]), A(shape[:1])), {}
    if name in ("gelu_forward", "gelu_backward"):
        approximate = rng.choice(["none", "tanh", "none", "erf"])
        shape = rows + (n,)
        args = (A(shape),) if name == "gelu_forward" else (A(shape), A(shape))
        return name, getattr(kernels, name), args + (approximate,), {}
    if name == "matmul":
        batch = tuple(_side(rng) for _ in range(rng.randint(0, 2)))
        m, k, n2 = _side(rng), _side(rng), _side(rng)
        ta, tb = rng.random() < 0.5, rng.random() < 0.5
        a = A(batch + ((k, m) if ta else (m, k)))
        b = A(batch + ((n2, k) if tb else (k, n2)))
        return name, kernels.matmul, (a, b, ta, tb), {}
    if name == "adamw":
        shape = rows + (n,)
        param = np.ascontiguousarray(_array(rng, shape, dtype)) if rng.random() < 0.9 else A(shape)
        state = [np.ascontiguousarray(np.abs(_array(rng, shape, dtype))) for _ in range(2)]
        scalars = dict(decay=rng.choice([1.0, 0.999]), beta1=0.9, beta2=0.999, step_size=rng.choice([1e-3, 0.0]),
                       bias_correction2_sqrt=rng.choice([1.0, 0.3]), eps=rng.choice([1e-8, 0.0]))
        return name, adamw_update, (param, A(shape), *state), scalars
    B, H, L, S, D = (rng.choice([0, 1, 2]), rng.choice([1, 2]), _side(rng), _side(rng), rng.choice([1, 4, 8]))
    q, k, v = A((B, H, L, D)), A((B, H, S, D)), A((B, H, S, D))
    key_mask = (np.random.default_rng(rng.randrange(99)).random((B, S)) < 0.7) if rng.random() < 0.4 else None
    bias = A((L, S)) if rng.random() < 0.2 else None
    scale = rng.choice([None, 0.5, 0.0, float("inf")])
    dropout_p = rng.choice([0.0, 0.0, 0.1, 1.0])
    seed = rng.randrange(99)
    if name == "attention_forward":
        return name, kernels.attention_forward, (q, k, v, key_mask, bias, scale, dropout_p, seed), {}
    grad = A((B, H, L, D))
    if rng.random() < 0.8:  # mostly after the forward, as training runs them
        return name, _attention_forward_then_backward, (q, k, v, grad, key_mask, bias, scale, dropout_p, seed), {}
    # an lse that no forward made: the gradients of no function (see attention_backward), and exp(s - lse)
    # overflows at either twin's rounding of s: the errors, shapes and dtypes are the contract
    return "attention_backward, any lse", kernels.attention_backward, (
        q, k, v, A((B, H, L, D)), A((B, H, L)), grad, key_mask, bias, scale, dropout_p, seed), {}


def _softmax_forward_then_backward(x, grad):
    """(y, dx): softmax_backward on the same twin's forward output."""
    y = kernels.softmax_forward(x)
    return y, kernels.softmax_backward(y, grad)


def _add_layer_norm_forward(x, weight, bias, eps, residual):
    """add_layer_norm_forward with layer_norm_forward's arguments first, as the checks below read them."""
    return kernels.add_layer_norm_forward(x, residual, weight, bias, eps)


def _as_layer_norm(name, args):
    """An add_layer_norm_forward case as the layer_norm_forward case of its sum x + residual, which
    both twins compute alike (one rounded add): the same rounding to allow for, on the same rows."""
    if name != "add_layer_norm_forward":
        return name, args
    x, weight, bias, eps, residual = args
    return "layer_norm_forward", (x + residual, weight, bias, eps)


def _layer_norm_forward_then_backward(x, weight, bias, eps, grad):
    """(y, mean, rstd, dx, dweight, dbias): layer_norm_backward on the same twin's forward statistics."""
    y, mean, rstd = kernels.layer_norm_forward(x, weight, bias, eps)
    return (y, mean, rstd) + kernels.layer_norm_backward(grad, x, weight, mean, rstd)


def _attention_forward_then_backward(q, k, v, grad, key_mask, bias, scale, dropout_p, seed):
    """(out, lse, dq, dk, dv): attention_backward on the out and lse of the same twin's forward."""
    out, lse = kernels.attention_forward(q, k, v, key_mask, bias, scale, dropout_p, seed)
    return (out, lse) + kernels.attention_backward(q, k, v, out, lse, grad, key_mask, bias, scale, dropout_p, seed)


def _copies(args):
    return tuple(a.copy() if isinstance(a, np.ndarray) and a.flags.writeable else a for a in args)


def _call(mode, kernel, args, kwargs):
    args = _copies(args)
    with kernels.use(mode), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of a size-0 row, say
        try:
            result = kernel(*args, **kwargs)
        except (TypeError, ValueError) as err:
            return err, args
    return result, args


def run_kernels(data, folder):
    """A kernel through the public API, in compiled mode and in numpy mode: the same named error,
    or the same answer (NaN where NaN, the same infinities, close elsewhere), in-place updates
    included, on NaN, inf and overflowing inputs too. Where rounding decides which values are
    non-finite (_rounding_decides_overflow), only the finite values common to both are compared,
    and a case whose NaN or inf differ is counted apart: "rounding decides inf and NaN"."""
    name, kernel, args, kwargs = kernel_case(random.Random(data))
    compiled, compiled_args = _call("compiled", kernel, args, kwargs)
    reference, reference_args = _call("numpy", kernel, args, kwargs)
    if isinstance(reference, Exception) or isinstance(compiled, Exception):
        assert type(compiled) is type(reference) and str(compiled) == str(reference), \
            f"{name}: compiled {compiled!r}, numpy {reference!r}"
        return reference
    if name == "adamw":
        compiled, reference = compiled_args, reference_args  # it updates its arguments in place
    outputs = lambda r: [np.asarray(r)] if isinstance(r, (np.ndarray, np.generic)) else [  # noqa: E731
        a for a in r if isinstance(a, np.ndarray)]  # (a 0-d input gives NumPy a scalar)
    pairs = list(zip(outputs(compiled), outputs(reference)))
    if ", any " in name:  # saved values that no forward made
        for i, (got, want) in enumerate(pairs):
            _assert_same_kind(name, i, got, want)
        return "accepted"
    arrays = [a for a in args if isinstance(a, np.ndarray) and a.dtype.kind in "fc" and a.size]
    largest = max([float(np.abs(a[np.isfinite(a)]).max(initial=0)) for a in arrays], default=0.0)
    with np.errstate(all="ignore"):  # inf - inf in the bounds of a row with infinities: NaN, compared False
        amplification = max(_amplification(name, args, reference), largest)
        undecided = _rounding_decides_overflow(name, args, reference)
    differ = [_assert_close(name, i, got, want, amplification, undecided) for i, (got, want) in enumerate(pairs)]
    return f"rounding decides inf and NaN ({name})" if any(differ) else "accepted"


def _amplification(name, args, reference):
    """How far the inputs magnify rounding, as a scale for the tolerance. Layer norm: |x| / std, the
    rounding of a row's mean magnified (1/sqrt(eps) on a near-constant row, whose mean each twin
    rounds its own way); its backward's dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) also
    cancels terms up to (2 + sqrt N) rstd |g w| (xhat's root mean square is at most 1), a difference
    that is 0 exactly for N = 2. Attention: its worst rounding error, at most a product of three
    inputs (eps D scale |q| |k| moves the scores, hence p, and out = p v, dv = p^T g with them;
    ds = p (dp - delta) cancels terms of D |g| |v| when p is one-hot, and dq, dk multiply by scale
    |k|, |q|). A rounding error is turned into a scale at which the tolerance is 64 of those errors."""
    if name.startswith("attention"):
        return _errors_to_scale(_attention_rounding(*_attention_args(name, args)), args[0].dtype)
    name, args = _as_layer_norm(name, args)
    if not name.startswith("layer_norm") or not args[0].size:
        return 1.0
    x, rstd = args[0], np.abs(reference[2])
    finite = np.isfinite(rstd) & np.isfinite(x).all(axis=1)  # the rows whose rounding can be bounded
    x, rstd = x[finite], float(rstd[finite].max(initial=0))
    spread = max(1.0, float(np.abs(x).max(initial=0)) * rstd)
    if name == "layer_norm_forward":
        return spread
    weight, grad = args[1], args[4]
    dxhat = np.abs(grad.astype(np.float64) * (1 if weight is None else weight))
    terms = (2 + x.shape[1] ** 0.5) * rstd * float(dxhat[np.isfinite(dxhat)].max(initial=0))
    return max(spread, _errors_to_scale(terms * spread, x.dtype))


def _attention_args(name, args):
    """(q, k, v, grad or None, scale) from the forward's arguments or _attention_forward_then_backward's."""
    return args[:3] + (None, args[5]) if name == "attention_forward" else args[:4] + (args[6],)


def _errors_to_scale(bound, dtype):
    """The tolerance scale at which _assert_close allows 64 rounding errors of ``bound`` (|values| eps)."""
    return bound * 64 * float(np.finfo(dtype).eps) / _TOLERANCE[np.dtype(dtype).type]


def _rounding_decides_overflow(name, args, reference):
    """Whether rounding, not either twin, decides where this case's outputs are inf or NaN. Two ways:
    - the terms the outputs are made of reach the dtype's largest value: a product, a partial sum,
      or a rounding residue times a large input overflows in one twin's order of operations and not
      in the other's (matmul: sum_k a_ik b_kj, with or without a fused multiply-add; attention: a ds
      that is 0 exactly in one twin and an ulp of |g| |v| in the other, times a q of 1e30), and an
      inf, once there, can meet a 0 (NaN);
    - attention at a scale of inf, where a score q k^T of finite q and k is within its rounding of 0:
      0 * inf = NaN in one twin, +-inf in the other (q k^T of [c, c] and [1e30, -1e30], say);
    - layer norm with an infinite weight or gradient, on a row holding a value that equals its mean
      to within the mean's rounding (n eps |x - x0|, the twins summing in different orders): xhat is
      0 in one twin and a residue in the other, and inf * xhat is NaN in one and inf in the other.
    Neither is a bug of either twin (torch gives one or the other, by its own order). The terms are
    bounded from the finite inputs only: infinite inputs alone put NaN and inf where both twins agree."""
    name, args = _as_layer_norm(name, args)
    biggest = float(np.finfo(args[0].dtype).max) if isinstance(args[0], np.ndarray) and \
        args[0].dtype.kind == "f" else np.inf
    finite = lambda a: np.where(np.isfinite(a), np.abs(a.astype(np.float64)), 0)  # noqa: E731
    if name == "matmul":
        a, b, ta, tb = args
        a, b = (np.swapaxes(a, -1, -2) if ta else a), (np.swapaxes(b, -1, -2) if tb else b)
        return float(np.matmul(finite(a), finite(b)).max(initial=0)) >= biggest
    if name.startswith("attention"):
        q, k, v, grad, scale = _attention_args(name, args)
        if scale is not None and math.isinf(scale):  # every score is +-inf, or NaN where q k^T is 0
            return _rounding_leaves_a_score_zero(q, k)
        return _attention_rounding(q, k, v, grad, scale) >= biggest
    if name.startswith("layer_norm") and args[0].size:
        x, weight = args[0], args[1]
        infinite = np.zeros(x.shape, bool) if weight is None else np.broadcast_to(np.isinf(weight), x.shape)
        if name == "layer_norm_backward":
            infinite = infinite | np.isinf(args[4])
        shifted = np.abs(x.astype(np.float64) - np.where(np.isfinite(x[:, :1]), x[:, :1], 0))
        rounding = x.shape[1] * float(np.finfo(x.dtype).eps) * np.where(np.isfinite(shifted), shifted, 0).max(
            axis=1, keepdims=True)
        near_mean = np.abs(x - reference[1][:, None].astype(np.float64)) < 4 * rounding
        return bool((infinite & near_mean.any(axis=1, keepdims=True)).any())
    return False


def _rounding_leaves_a_score_zero(q, k):
    """Whether some q_i . k_j, of finite rows, is within its float rounding (D eps |q_i| . |k_j|) of 0
    but not 0 term by term: the twins' sums, in their orders, may give 0 or a residue of either sign."""
    if not q.size or not k.size:
        return False
    q64, k64 = q.astype(np.float64), k.astype(np.float64)
    both = np.isfinite(q64).all(axis=-1)[..., :, None] & np.isfinite(k64).all(axis=-1)[..., None, :]
    q64, k64 = np.where(np.isfinite(q64), q64, 0), np.where(np.isfinite(k64), k64, 0)
    scores = np.matmul(q64, np.swapaxes(k64, -1, -2))
    rounding = q.shape[-1] * float(np.finfo(q.dtype).eps) * np.matmul(np.abs(q64), np.swapaxes(np.abs(k64), -1, -2))
    return bool((both & (rounding > 0) & (np.abs(scores) <= 4 * rounding)).any())


def _attention_rounding(q, k, v, grad, scale):
    """D scale (|q| |k| (|v| + |g|) + |g| |v| (|q| + |k|)), each the largest finite value of its input."""
    mq, mk, mv, mg = (float(np.abs(a[np.isfinite(a)]).max(initial=0)) if a is not None else 0.0
                      for a in (q, k, v, grad))
    d = q.shape[-1]
    scale = d ** -0.5 if scale is None else abs(scale)
    with np.errstate(invalid="ignore", over="ignore"):
        return d * scale * (mq * mk * (mv + mg) + mg * mv * (mq + mk))


def _assert_same_kind(name, i, got, want):
    assert got.shape == want.shape and got.dtype == want.dtype, f"{name} output {i}: {got.shape} {got.dtype} " \
                                                                 f"vs numpy's {want.shape} {want.dtype}"


_TOLERANCE = {np.float32: 2e-3, np.float64: 1e-9}


def _assert_close(name, i, got, want, amplification=1.0, undecided=False):
    """got == want where want is NaN or infinite; elsewhere within tol of the largest of |want|
    and ``amplification`` (the largest finite input: a gradient of 1e30 times a derivative each twin
    approximates to 1e-16 differs by 1e14, an error relative to the input, not to the output).
    ``undecided``: rounding decides where values are non-finite; only the values finite in both are
    compared, and the return value says whether the non-finite ones differ."""
    _assert_same_kind(name, i, got, want)
    nan, finite = np.isnan(want), np.isfinite(want)
    differ = not (np.array_equal(np.isnan(got), nan) and np.array_equal(np.isfinite(got), finite)
                  and np.array_equal(got[~finite & ~nan], want[~finite & ~nan]))
    assert undecided or not differ, f"{name} output {i}: NaN or infinities in other places than numpy's"
    tol = _TOLERANCE[want.dtype.type]
    scale = max(float(np.abs(want[finite]).max(initial=0)), 1.0, amplification)
    both = finite & np.isfinite(got)
    if both.any():
        worst = float(np.abs(got[both].astype(np.float64) - want[both]).max())
        assert math.isfinite(worst) and worst <= tol * scale, f"{name} output {i}: off by {worst} (scale {scale})"
    return differ


# ---- the registry ------------------------------------------------------------------------------------
TARGETS = {
    "safetensors": (safetensors_seeds, mutate_safetensors, run_safetensors),
    "model_files": (model_files_seeds, mutate_model_files, run_model_files),
    "data": (data_seeds, mutate_data, run_data),
    "tokenizer": (tokenizer_seeds, mutate_tokenizer, run_tokenizer),
    "kernels": (lambda folder: [b"seed"], lambda rng, seed: rng.randbytes(16), run_kernels),
}
