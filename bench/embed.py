"""Sentence embeddings of SST-2 sentences: minillm's SentenceEncoder against sentence-transformers.

    python bench/embed.py                                  # 10,000 sentences, 2 threads, 3 rounds
    python bench/embed.py --data ../shared/data/sst2/train.tsv --n 10000 --rounds 3 --threads 2
    python bench/embed.py --level avx2                     # both sides held to AVX2 (bench/machine.py)

The sentences are the first N of SST-2's train.tsv (its path: --data, else $MINILLM_DATA/sst2, else
../shared/data/sst2). Each measurement is a fresh process (two thread pools in one process distort
both), the sides alternate A B A B, and the table shows medians over the rounds. Both sides load
all-MiniLM-L6-v2 from the same local folder (sentence-transformers with HF_HUB_OFFLINE=1) and run
encode(sentences, batch_size) with the same thread count; the timed call follows a warm-up encode
of 64 sentences. Peak RSS is the worker's own (imports and weights included). The last column is
the lowest cosine between the two sides' embeddings of the same sentence. The machine and what each
side runs come first (bench/machine.py: probes launched as the workers are; sentence-transformers
runs torch).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import machine

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = {"minillm": "minillm", "sentence-transformers": "torch"}  # the library machine.ran() reads per side


def sentences(path, n):
    """The first ``n`` sentences of a GLUE TSV file (header row, sentence in the first column)."""
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t")[0] for line in f][1:]
    if len(rows) < n:
        raise SystemExit(f"{path} has {len(rows)} sentences, fewer than --n {n}")
    return rows[:n]


def data_file(argument):
    if argument:
        return argument
    root = os.environ.get("MINILLM_DATA") or os.path.join(HERE, "..", "..", "shared", "data")
    return os.path.join(root, "sst2", "train.tsv")


# ---- workers: one side per process ---------------------------------------------------------------
def minillm_encoder(folder, threads):
    import minillm
    from minillm.embeddings import SentenceEncoder
    minillm.kernels.set_threads(threads)
    return SentenceEncoder.from_pretrained(folder).encode


def st_encoder(folder, threads):
    os.environ["HF_HUB_OFFLINE"] = "1"  # the local folder only, never a hub name
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(threads)
    return SentenceTransformer(folder, device="cpu").encode


def worker(side, args):
    import numpy
    from minillm import pretrained
    folder = pretrained.resolve("all-MiniLM-L6-v2")
    texts = sentences(data_file(args.data), args.n)
    encode = (minillm_encoder if side == "minillm" else st_encoder)(folder, args.threads)
    encode(texts[:64], batch_size=args.batch_size, show_progress_bar=False)  # warm-up
    start = time.perf_counter()
    vectors = encode(texts, batch_size=args.batch_size, show_progress_bar=False)
    seconds = time.perf_counter() - start
    numpy.save(args.vectors, numpy.asarray(vectors, dtype=numpy.float32))
    rss = machine.peak_rss_mb()
    ran = machine.ran(ENGINE[side])
    print(json.dumps({"seconds": seconds, "rss_mb": rss, "ran": ran}))


# ---- the driver ------------------------------------------------------------------------------------
def measure(side, args, vectors):
    env = machine.worker_env(args.level, args.threads, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, __file__, "--worker", side, "--n", str(args.n), "--threads", str(args.threads),
           "--batch-size", str(args.batch_size), "--vectors", vectors, "--data", data_file(args.data)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{side} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    machine.check(args.level, ENGINE[side], result["ran"])
    return result


def lowest_cosine(a_file, b_file):
    import numpy
    a, b = numpy.load(a_file).astype(numpy.float64), numpy.load(b_file).astype(numpy.float64)
    return float(((a * b).sum(1) / numpy.linalg.norm(a, axis=1) / numpy.linalg.norm(b, axis=1)).min())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="SST-2 train.tsv (default $MINILLM_DATA/sst2/train.tsv)")
    parser.add_argument("--n", type=int, default=10000, help="sentences to encode")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--level", choices=machine.LEVELS, default="native",
                        help="native, or avx2: both sides held to AVX2 (bench/machine.py)")
    parser.add_argument("--worker", choices=("minillm", "sentence-transformers"))
    parser.add_argument("--vectors", help="(worker) where to save the embeddings")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args)

    print(machine.describe(args.level, args.threads))
    print(f"{args.n} SST-2 sentences, batch {args.batch_size}, {args.threads} threads, {args.rounds} alternating "
          f"rounds (medians)")
    runs = {"minillm": [], "sentence-transformers": []}
    with tempfile.TemporaryDirectory() as tmp:
        files = {side: os.path.join(tmp, f"{side}.npy") for side in runs}
        for _ in range(args.rounds):
            for side in runs:
                runs[side].append(measure(side, args, files[side]))
        cosine = lowest_cosine(files["minillm"], files["sentence-transformers"])
    print(f"{'side':<23}{'seconds':>9}{'sentences/s':>13}{'peak RSS MB':>13}")
    t = {side: statistics.median(r["seconds"] for r in runs[side]) for side in runs}
    for side in runs:
        mb = statistics.median(r["rss_mb"] for r in runs[side])
        print(f"{side:<23}{t[side]:>9.2f}{args.n / t[side]:>13.0f}{mb:>13.0f}")
    print(f"time ratio minillm / sentence-transformers: {t['minillm'] / t['sentence-transformers']:.2f}; "
          f"lowest cosine between the sides' embeddings: {cosine:.7f}")
    print("all rounds (s):", {side: [round(r["seconds"], 2) for r in runs[side]] for side in runs})


if __name__ == "__main__":
    main()
