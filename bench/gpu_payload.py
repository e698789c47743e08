"""Put what the GPU check needs of the pretrained model and SST-2, which the GPU machine cannot
fetch, into .device/.

    python bench/gpu_payload.py     # then run bench/gpu_check.sh with carry=[".device"]

The GPU machine has no network, and the device tool carries at most 64 MiB of files with the
repository. all-MiniLM-L6-v2's model.safetensors is 87 MiB in float32, so this writes a float16
copy (44 MiB; minillm reads it back upcast to float32) with its config and tokenizer files, as the
cache folder .device/home/all-MiniLM-L6-v2 (gpu_check.sh points MINILLM_HOME there, so the tests
that use the pretrained model run on the GPU too), and copies SST-2's train.tsv and dev.tsv to
.device/sst2 (its sst2 step). The config says float32, so that transformers, which would load a
float16 file in float16, upcasts as minillm does. .device/ is listed in .git/info/exclude: it is
never committed, and the device tool's `carry` names it.
"""
import argparse
import json
import os
import pathlib
import shutil

import numpy

from minillm import pretrained, safetensors_io

REPO = pathlib.Path(__file__).resolve().parent.parent
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def write_float16_model(source, target):
    target.mkdir(parents=True, exist_ok=True)
    weights, _ = safetensors_io.read_safetensors(source / "model.safetensors")
    safetensors_io.write_safetensors({name: array.astype(numpy.float16) for name, array in weights.items()},
                                 target / "model.safetensors")
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, target / name)
    config = json.loads((source / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "torch_dtype": "float32", "dtype": "float32"}, indent=2))


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
    write_float16_model(pathlib.Path(pretrained.resolve("all-MiniLM-L6-v2")), out / "home" / "all-MiniLM-L6-v2")
    (out / "sst2").mkdir(parents=True, exist_ok=True)
    for name in ("train.tsv", "dev.tsv"):
        shutil.copy(os.path.join(args.data, name), out / "sst2" / name)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB; run with carry=['.device'] and "
          "GPU_CHECK_SST2='.device/home/all-MiniLM-L6-v2 .device/sst2'")


if __name__ == "__main__":
    main()
