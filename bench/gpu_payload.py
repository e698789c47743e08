"""Put what the GPU check's SST-2 step needs, and the GPU machine cannot fetch, into .device/.

    python bench/gpu_payload.py          # then: GPU_CHECK_SST2=".device/minilm-fp16 .device/sst2"

The GPU machine has no network, and the device tool carries at most 64 MiB of files with the
repository. all-MiniLM-L6-v2's model.safetensors is 87 MiB in float32, so this writes a float16
copy (44 MiB; minillm reads it back upcast to float32) beside its config and tokenizer files, and
copies SST-2's train.tsv and dev.tsv. .device/ is listed in .git/info/exclude: it is never committed,
and the device tool's `carry` names it.
"""
import argparse
import os
import pathlib
import shutil

import numpy

from minillm import checkpoint, pretrained

REPO = pathlib.Path(__file__).resolve().parent.parent
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def write_float16_model(source, target):
    target.mkdir(parents=True, exist_ok=True)
    weights, _ = checkpoint.read_safetensors(source / "model.safetensors")
    checkpoint.write_safetensors({name: array.astype(numpy.float16) for name, array in weights.items()},
                                 target / "model.safetensors")
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, target / name)


def exclude_from_git(folder):
    exclude = REPO / ".git" / "info" / "exclude"
    lines = exclude.read_text().splitlines() if exclude.is_file() else []
    if f"/{folder}/" not in lines:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        exclude.write_text("\n".join(lines + [f"/{folder}/"]) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.path.join(os.environ.get("MINILLM_DATA", REPO.parent / "shared" / "data"),
                                                       "sst2"), help="the SST-2 folder (default %(default)s)")
    args = parser.parse_args()
    out = REPO / ".device"
    exclude_from_git(".device")
    write_float16_model(pathlib.Path(pretrained.resolve("all-MiniLM-L6-v2")), out / "minilm-fp16")
    (out / "sst2").mkdir(parents=True, exist_ok=True)
    for name in ("train.tsv", "dev.tsv"):
        shutil.copy(os.path.join(args.data, name), out / "sst2" / name)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB; run with carry=['.device'] and "
          "GPU_CHECK_SST2='.device/minilm-fp16 .device/sst2'")


if __name__ == "__main__":
    main()
