"""Data-parallel costs on this machine, and what they predict for more machines (minillm.distributed).

    python bench/allreduce.py                 # runs every measurement in its own process(es), then the tables
    python bench/allreduce.py --rounds 5 --batch 16 --length 64

Measured (each side a fresh process, the sides alternating, medians over --rounds):
  allreduce   mpiexec -n 2: the mean of MiniLM's 22.7M and BERT-base's 109.5M float32 gradients, as
              DistributedOptimizer does it (25 MB buckets, Iallreduce, Wait), in ms;
  step        one MiniLM training step (train_step: forward, backward, averaging, clipping, AdamW) on a
              global batch of --batch texts of --length tokens: 2 ranks x 1 thread x batch/2 against
              1 process x 2 threads x batch. The 2-rank step also reports the exposed communication
              (the time synchronize() waits after backward), so overlap = 1 - exposed / allreduce.
Modelled: a ring allreduce moves 2 (N - 1) / N of the gradient bytes per rank over a link of B Gb/s:
  t_comm(N) = 2 (N - 1) / N * bytes * 8 / B;  step(N) = compute + (1 - overlap) * t_comm(N)
  efficiency(N) = compute / step(N)
with compute the measured 1-thread per-rank step of MiniLM (BERT-base: that times the ratio of their
non-embedding parameters, the FLOPs per token) and overlap the measured one. Latency and the
per-bucket start costs are left out, so on slow links the figures are upper bounds. The machine and
what minillm runs on it come first (bench/machine.py).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy

import machine

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = {"MiniLM": 22_713_986, "BERT-base": 109_483_778}  # parameters, a 2-label classifier head included
NON_EMBEDDING = {"MiniLM": 10_616_832, "BERT-base": 84_934_656}  # the encoder layers' weight matrices: FLOPs per token


def minilm_config():
    from minillm import pretrained
    from minillm.models.bert import BertConfig

    return BertConfig.from_pretrained(str(pretrained.resolve("all-MiniLM-L6-v2")), num_labels=2,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def measure_allreduce(rounds):
    """Under mpiexec: ms of the bucketed mean of each model's gradient bytes (rank 0 prints JSON)."""
    from minillm import distributed
    from minillm.distributed.buckets import Bucket
    from minillm.tensor import Tensor

    world = distributed.world()
    result = {}
    for name, n in SIZES.items():
        chunk = distributed.DEFAULT_BUCKET_MB * 2**20 // 4
        buckets = [Bucket([Tensor(numpy.ones(min(chunk, n - start), numpy.float32))]) for start in range(0, n, chunk)]
        times = []
        for _ in range(rounds + 1):
            world.barrier()
            began = time.perf_counter()
            requests = [world.iallreduce(b.flat) for b in buckets]
            for r in requests:
                r.Wait()
            for b in buckets:
                b.flat /= world.size
            times.append(time.perf_counter() - began)
        result[name] = 1000 * statistics.median(times[1:])
    if world.rank == 0:
        print(json.dumps(result))


def measure_step(batch, length, rounds, threads):
    """One process (or, under mpiexec, each rank) timing train_step; rank 0 prints JSON (ms)."""
    from minillm import distributed, kernels, random
    from minillm.models.bert import BertForSequenceClassification
    from minillm.optim import AdamW
    from minillm.training import train_step

    kernels.set_threads(threads)
    world = distributed.world()
    random.manual_seed(0)
    model = BertForSequenceClassification(minilm_config())
    optimizer = AdamW(model.parameters(), lr=1e-5)
    exposed = []
    if world.size > 1:
        optimizer = distributed.replicate(model, optimizer, world, seed=0)
        synchronize = optimizer.synchronize

        def timed():
            began = time.perf_counter()
            synchronize()
            exposed.append(time.perf_counter() - began)
        optimizer.synchronize = timed
    rng = numpy.random.default_rng(world.rank)
    per_rank = batch // world.size
    data = {"input_ids": rng.integers(1000, 30000, (per_rank, length)), "labels": rng.integers(0, 2, per_rank),
            "attention_mask": numpy.ones((per_rank, length), numpy.int64)}
    times = []
    for _ in range(rounds + 1):
        world.barrier()
        began = time.perf_counter()
        train_step(model, data, optimizer, 1.0)
        optimizer.zero_grad()
        times.append(time.perf_counter() - began)
    if world.rank == 0:
        print(json.dumps({"step": 1000 * statistics.median(times[1:]),
                          "exposed": 1000 * statistics.median(exposed[1:]) if exposed else 0.0}))


def run(ranks, *args, threads):
    env = machine.worker_env("native", threads, OPENBLAS_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, *args]
    if ranks:
        command = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(ranks), *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16, help="the global batch (texts)")
    parser.add_argument("--length", type=int, default=64, help="tokens per text")
    parser.add_argument("--worker", choices=["allreduce", "step"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.worker == "allreduce":
        return measure_allreduce(args.rounds)
    if args.worker == "step":
        return measure_step(args.batch, args.length, args.rounds, args.threads)
    print(machine.describe("native", 2, sides=("minillm",)))  # minillm alone: 2 ranks or 2 threads
    common = ["--rounds", str(args.rounds), "--batch", str(args.batch), "--length", str(args.length)]
    allreduce = run(2, "--worker", "allreduce", *common, threads=1)
    ranks, alone = [], []
    for _ in range(2):  # alternating A B A B, each a fresh process
        ranks.append(run(2, "--worker", "step", "--threads", "1", *common, threads=1))
        alone.append(run(0, "--worker", "step", "--threads", "2", *common, threads=2))
    two = {k: statistics.median(r[k] for r in ranks) for k in ("step", "exposed")}
    one = statistics.median(r["step"] for r in alone)
    print(f"allreduce, 2 ranks on this machine: MiniLM {allreduce['MiniLM']:.1f} ms, "
          f"BERT-base {allreduce['BERT-base']:.1f} ms")
    print(f"MiniLM step, global batch {args.batch} x {args.length}: 2 ranks x 1 thread {two['step']:.0f} ms "
          f"(exposed communication {two['exposed']:.1f} ms), 1 process x 2 threads {one:.0f} ms")
    overlap = max(0.0, 1 - two["exposed"] / allreduce["MiniLM"])
    compute = two["step"] - two["exposed"]  # one rank's step on batch/2 with one thread, communication aside
    print(f"model: overlap {overlap:.2f}, per-machine compute MiniLM {compute:.0f} ms (batch {args.batch // 2}); "
          f"efficiency = compute / (compute + (1 - overlap) * 2 (N-1)/N * bytes * 8 / B)")
    print("| model | link | " + " | ".join(f"N={n}" for n in (2, 4, 8, 16, 32, 64)) + " |")
    print("|---|---|" + "---|" * 6)
    for name, n_params in SIZES.items():
        work = compute * NON_EMBEDDING[name] / NON_EMBEDDING["MiniLM"]
        for gbps in (10, 25, 100):
            cells = []
            for n in (2, 4, 8, 16, 32, 64):
                comm = 2 * (n - 1) / n * n_params * 4 * 8 / (gbps * 1e9) * 1000
                cells.append(f"{work / (work + (1 - overlap) * comm):.2f}")
            print(f"| {name} | {gbps} Gb/s | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
