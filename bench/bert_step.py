"""BERT inference and training-step time and memory, minillm against torch + transformers.

    python bench/bert_step.py                      # all shapes, 2 threads, 3 alternating rounds
    python bench/bert_step.py --shapes minilm-32x128 --rounds 5 --threads 2

Each measurement runs in a fresh process (two thread pools in one process distort both), the
sides alternate A B A B, and each process reports the median of its repeats after a warm-up;
the table shows the median over rounds. Both sides use the same weights, inputs, thread count
and no dropout:
  inference:  BertForSequenceClassification forward in eval mode, no graph;
  train step: forward, cross-entropy, backward, clip_grad_norm_(1.0), AdamW step, zero_grad.
MiniLM is all-MiniLM-L6-v2; BERT-base is a random model with bert-base-uncased's config, written
once by minillm and read by both. Peak RSS is the worker's own (imports and weights included).
GFLOP/s counts the encoder's matrix products (training = 3 x forward) against the CPU's float32 peak
at the level run, as bench/machine.py computes it from the real vector width and prints it, with
the machine, at the top. "GEMM GF/s" is minillm's BLAS on the step's dense products alone (a third
worker: the same (T, E) x (E, E | I) products and, in training, their backward ones, through
minillm's matmul kernel), and "of GEMM" the step's rate over it: what is not a matrix product
costs the rest.

--level native (the default) runs what the machine runs by itself; --level avx2 holds both sides to
AVX2 on an AVX-512 machine (minillm built for x86-64-v3, OpenBLAS's Haswell kernels, torch's AVX2
kernels and MKL's): bench/machine.py says how, and stops the bench if a worker ran another level.
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

SHAPES = {  # name: (model, batch, length)
    "minilm-32x64": ("minilm", 32, 64),
    "minilm-32x128": ("minilm", 32, 128),
    "base-8x128": ("base", 8, 128),
    "base-2x512": ("base", 2, 512),
}
BASE_CONFIG = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")  # inputs()' arrays, by name


def model_dir(kind):
    if kind == "minilm":
        from minillm import pretrained
        return pretrained.resolve("all-MiniLM-L6-v2")
    folder = os.path.join(tempfile.gettempdir(), "minillm-bench-bert-base")
    if not os.path.isfile(os.path.join(folder, "model.safetensors")):
        import minillm
        from minillm.models.bert import BertConfig, BertForSequenceClassification
        minillm.manual_seed(0)
        BertForSequenceClassification(BertConfig(num_labels=2, **BASE_CONFIG)).save_pretrained(folder)
    return folder


def inputs(batch, length, vocab):
    import numpy
    rng = numpy.random.default_rng(0)
    ids = rng.integers(1000, vocab, (batch, length))
    return ids, numpy.ones((batch, length), numpy.int64), numpy.zeros((batch, length), numpy.int64), \
        rng.integers(0, 2, batch)


# ---- workers: one framework, one shape, one mode per process --------------------------------------
def minillm_step(folder, mode, batch, length, threads):
    import minillm
    from minillm.models.bert import BertConfig, BertForSequenceClassification
    minillm.kernels.set_threads(threads)
    config = BertConfig.from_pretrained(folder, num_labels=2, **NO_DROPOUT)
    model = BertForSequenceClassification.from_pretrained(folder, config=config)
    ids, mask, types, labels = inputs(batch, length, config.vocab_size)
    if mode == "infer":
        def step():
            with minillm.no_grad():
                model(ids, mask, types).logits.numpy()
        return step
    model.train()
    return minillm_train_step(model, (ids, mask, types, labels))


def minillm_train_step(model, batch):
    """One training step of ``model`` on batch = (ids, mask, types, labels), as a function: the
    library's train_step (forward, cross-entropy, backward, clip_grad_norm_(1.0), AdamW step), then
    zero_grad, as the Trainer runs it (bench/gpu_bench.py too)."""
    from minillm.optim import AdamW
    from minillm.training import train_step
    batch = dict(zip(BATCH_KEYS, batch))
    params = list(model.parameters())
    optimizer = AdamW(params, lr=1e-5)

    def step():
        train_step(model, batch, optimizer, max_grad_norm=1.0, params=params)
        optimizer.zero_grad()
    return step


def torch_step(folder, mode, batch, length, threads):
    import torch
    import transformers
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    model = transformers.BertForSequenceClassification.from_pretrained(
        folder, num_labels=2, attn_implementation="sdpa", **NO_DROPOUT)
    ids, mask, types, labels = (torch.as_tensor(a) for a in inputs(batch, length, model.config.vocab_size))
    if mode == "infer":
        model.eval()

        def step():
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()
        return step
    model.train()
    return torch_train_step(torch, model, (ids, mask, types, labels))


def torch_train_step(torch, model, batch):
    """minillm_train_step's twin for a transformers model and torch tensors (bench/gpu_bench.py too)."""
    ids, mask, types, labels = batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return step


def dense_products(kind, batch, length):
    """encoder_products() of the dense layers (T x E @ E x E, E x I, I x E): the step's large GEMMs,
    where the BLAS runs at its best. (The attention's per-head products are small, run inside the
    fused kernel, and are left out of the GEMM rate.)"""
    return [product for product in encoder_products(kind, batch, length) if product[1] == 1]


def gemm_step(kind, mode, batch, length, threads):
    """The step's dense products alone, through minillm's matmul kernel (the BLAS under the step):
    each forward product A @ W^T of dense_products(), and in training both of its backward products,
    dA = dC W and dW = dC^T A, on random float32 arrays of the step's shapes."""
    import numpy
    from minillm import kernels
    kernels.set_threads(threads)
    rng = numpy.random.default_rng(0)
    arrays = []
    for count, _, m, k, n in dense_products(kind, batch, length):
        a, w, dc = (rng.standard_normal(shape, dtype=numpy.float32) for shape in ((m, k), (n, k), (m, n)))
        arrays += [(a, w, dc)] * count

    def step():
        for a, w, dc in arrays:
            kernels.matmul(a, w, False, True)
            if mode == "train":
                kernels.matmul(dc, w)
                kernels.matmul(dc, a, True, False)
    return step


def worker(side, shape, mode, threads, repeat):
    kind, batch, length = SHAPES[shape]
    if side == "gemm":
        return report(gemm_step(kind, mode, batch, length, threads), repeat, side)
    report((minillm_step if side == "minillm" else torch_step)(model_dir(kind), mode, batch, length, threads),
           repeat, side)


def report(step, repeat, side):
    """A worker's result, as one JSON line on stdout: the median of ``repeat`` timed calls of step()
    after one warm-up call (first-touch allocations, lazy imports), the process's peak RSS, and
    what ``side`` ran (bench/machine.py's ran())."""
    step()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    rss = machine.peak_rss_mb()
    print(json.dumps({"seconds": statistics.median(times), "rss_mb": rss, "ran": machine.ran(side)}))


# ---- the driver ------------------------------------------------------------------------------------
def encoder_products(kind, batch, length):
    """The encoder's matrix products in one forward, as (count, batch, M, K, N) of a (batch, M, K) @
    (batch, K, N) product: per layer the query, key, value and output projections (T = batch x
    length rows, E -> E), the intermediate and output dense layers (E -> I, I -> E), and per head
    the attention's scores (L x D @ D x L) and context (L x L @ L x D)."""
    cfg = BASE_CONFIG if kind == "base" else dict(hidden_size=384, num_hidden_layers=6, intermediate_size=1536,
                                                  num_attention_heads=12)
    e, i, n, h = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    tokens, d = batch * length, e // h
    return [(4 * n, 1, tokens, e, e), (n, 1, tokens, e, i), (n, 1, tokens, i, e),
            (n, batch * h, length, d, length), (n, batch * h, length, length, d)]


def flops(products):
    """The floating-point operations of (count, batch, M, K, N) products: 2 M K N each."""
    return sum(2 * count * heads * m * k * n for count, heads, m, k, n in products)


def measure(side, shape, mode, args, script=__file__):
    """One worker process of ``script`` (this file, or a bench that shares its flags) at args.level,
    its JSON result; the bench stops if the worker ran another level."""
    env = machine.worker_env(args.level, args.threads)
    cmd = [sys.executable, script, "--worker", side, "--shapes", shape, "--mode", mode,
           "--threads", str(args.threads), "--repeat", str(args.repeat)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{side} {shape} {mode} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    machine.check(args.level, side, result["ran"])
    return result


def alternate(shape, mode, args, script=__file__):
    """args.rounds rounds of a minillm worker then a torch worker: ({side: median seconds}, {side: median MB})."""
    runs = {"minillm": [], "torch": []}
    for _ in range(args.rounds):
        for side in runs:
            runs[side].append(measure(side, shape, mode, args, script))
    return ({side: statistics.median(r["seconds"] for r in runs[side]) for side in runs},
            {side: statistics.median(r["rss_mb"] for r in runs[side]) for side in runs})


def arguments(doc, shapes, modes=("infer", "train")):
    """The command line of this bench, and of the benches that run their workers through measure()."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(shapes), help="comma-separated: " + ", ".join(shapes))
    parser.add_argument("--modes", default=",".join(modes))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--level", choices=machine.LEVELS, default="native",
                        help="native, or avx2: both sides held to AVX2 (bench/machine.py)")
    parser.add_argument("--worker", choices=("minillm", "torch", "gemm"))
    parser.add_argument("--mode", choices=modes)
    return parser


def main():
    args = arguments(__doc__, SHAPES).parse_args()
    if args.worker:
        return worker(args.worker, args.shapes, args.mode, args.threads, args.repeat)

    for shape in args.shapes.split(","):  # written before any worker runs: one that wrote it would count it
        model_dir(SHAPES[shape][0])       # in its peak RSS (a random BERT-base built and saved: 1.3 GB)
    print(machine.describe(args.level, args.threads))
    peak = machine.level_peak(args.level, args.threads)[0]
    print(f"{args.rounds} alternating rounds x {args.repeat} repeats (medians); %peak against the peak above; "
          f"GEMM GF/s: minillm's BLAS on the step's dense products alone; of GEMM: minillm's step rate / that")
    print(f"{'shape':<15}{'mode':<7}{'minillm s':>11}{'torch s':>10}{'ratio':>8}{'minillm MB':>12}{'torch MB':>10}"
          f"{'minillm %peak':>15}{'torch %peak':>13}{'GEMM GF/s':>11}{'of GEMM':>9}")
    for shape in args.shapes.split(","):
        for mode in args.modes.split(","):
            t, mb = alternate(shape, mode, args)
            kind, batch, length = SHAPES[shape]
            passes = 3 if mode == "train" else 1  # a backward does two products per forward one
            gemm_s = statistics.median(measure("gemm", shape, mode, args)["seconds"] for _ in range(args.rounds))
            gemm_rate = flops(dense_products(kind, batch, length)) * passes / gemm_s / 1e9
            rate = {s: flops(encoder_products(kind, batch, length)) * passes / t[s] / 1e9 for s in t}
            print(f"{shape:<15}{mode:<7}{t['minillm']:>11.3f}{t['torch']:>10.3f}{t['minillm'] / t['torch']:>8.2f}"
                  f"{mb['minillm']:>12.0f}{mb['torch']:>10.0f}{rate['minillm'] / peak:>15.1%}"
                  f"{rate['torch'] / peak:>13.1%}{gemm_rate:>11.0f}{rate['minillm'] / gemm_rate:>9.1%}", flush=True)


if __name__ == "__main__":
    main()
