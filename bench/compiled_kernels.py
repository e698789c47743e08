"""Time minillm's compiled kernels against their NumPy twins and torch, and print one table.

    python bench/compiled_kernels.py               # 3 alternating rounds per side, then attention memory
    python bench/compiled_kernels.py --quick       # 1 round, few repeats: checks that it all runs
    python bench/compiled_kernels.py --threads 1
    python bench/compiled_kernels.py --level avx2  # every side held to AVX2 on an AVX-512 machine (bench/machine.py)
    python bench/compiled_kernels.py --kernels gelu,softmax   # those rows only (after a change to them)

(Not bench/kernels.py: transformers 5.25 imports a package named kernels, which a script of that name
beside the benches would stand in for.)

Shapes: MiniLM-L6 (B=32, L=128, H=12, D=32, hidden 384, intermediate 1536), BERT-base (B=8,
L=128, H=12, D=64, hidden 768, intermediate 3072), and attention at L=512 (B=2, BERT-base heads).
The scores matmul q @ k^T reads q and k as BERT makes them, (B, L, H, D) transposed to (B, H, L, D).

Each side (compiled, numpy, torch) runs in its own process, since two thread pools in one process
distort both; the sides alternate A B C A B C ..., every process times each case --repeat times,
and a cell is the median over rounds of those medians. All sides get the same thread count:
OpenMP (compiled), NumPy's OpenBLAS (numpy, via OPENBLAS_NUM_THREADS), torch.set_num_threads.
"vs numpy" is numpy time / compiled time (a speed-up); "vs torch" is compiled time / torch time
(<= 1.0: no slower than torch). Attention memory is the peak resident memory added by one
forward + backward (inputs excluded), each side in a fresh process. The table starts with the
machine, the level and what each side ran (bench/machine.py), checked in every worker.
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

SIDES = ("compiled", "numpy", "torch")
MINILM = dict(B=32, L=128, H=12, D=32, hidden=384, inter=1536)
BASE = dict(B=8, L=128, H=12, D=64, hidden=768, inter=3072)
LONG = dict(B=2, L=512, H=12, D=64)


def cases(kernels=None):
    """(kernel, label, shape dict) for every row of the table, or for the rows of ``kernels`` (names)."""
    rows = []
    for name, m in (("MiniLM", MINILM), ("BERT-base", BASE)):
        tokens = m["B"] * m["L"]
        rows += [("softmax", name, dict(x=(m["B"], m["H"], m["L"], m["L"]))),
                 ("layer_norm", name, dict(x=(tokens, m["hidden"]))),
                 ("gelu", name, dict(x=(tokens, m["inter"]))),
                 ("linear", name, dict(x=(tokens, m["hidden"]), w=(m["inter"], m["hidden"]))),
                 ("scores", name, dict(q=(m["B"], m["H"], m["L"], m["D"]))),
                 ("attention", name, dict(q=(m["B"], m["H"], m["L"], m["D"])))]
    rows.append(("attention", "L=512", dict(q=(LONG["B"], LONG["H"], LONG["L"], LONG["D"]))))
    return [row for row in rows if kernels is None or row[0] in kernels]


def shape_text(kernel, shapes):
    if kernel == "linear":
        return f"{shapes['x']}@{shapes['w'][::-1]}"
    return str(shapes.get("x", shapes.get("q")))


def _heads(rng, shape):
    """A (B, H, L, D) array laid out as BERT makes it: a transposed view of (B, L, H, D)."""
    b, h, l, d = shape
    return rng.standard_normal((b, l, h, d), dtype=numpy.float32).transpose(0, 2, 1, 3)


def _key_mask(b, s):
    """Padding: the last quarter of every sequence's keys masked."""
    mask = numpy.ones((b, s), dtype=bool)
    mask[:, s - s // 4:] = False
    return mask


def minillm_case(kernel, shapes, rng):
    """(forward, forward + backward) closures over minillm.kernels (compiled or NumPy twin)."""
    from minillm import kernels as K
    if kernel in ("softmax", "layer_norm", "gelu"):
        x = rng.standard_normal(shapes["x"], dtype=numpy.float32)
        g = rng.standard_normal(shapes["x"], dtype=numpy.float32)
    if kernel == "softmax":
        return (lambda: K.softmax_forward(x)), (lambda: K.softmax_backward(K.softmax_forward(x), g))
    if kernel == "layer_norm":
        w, b = (rng.standard_normal(x.shape[1], dtype=numpy.float32) for _ in range(2))

        def both():
            _, mean, rstd = K.layer_norm_forward(x, w, b, 1e-12)
            return K.layer_norm_backward(g, x, w, mean, rstd)
        return (lambda: K.layer_norm_forward(x, w, b, 1e-12)), both
    if kernel == "gelu":
        return (lambda: K.gelu_forward(x)), (lambda: (K.gelu_forward(x), K.gelu_backward(x, g)))
    if kernel == "linear":
        x = rng.standard_normal(shapes["x"], dtype=numpy.float32)
        w = rng.standard_normal(shapes["w"], dtype=numpy.float32)
        g = rng.standard_normal((x.shape[0], w.shape[0]), dtype=numpy.float32)
        return (lambda: K.matmul(x, w, transpose_b=True)), \
            (lambda: (K.matmul(x, w, transpose_b=True), K.matmul(g, w), K.matmul(g, x, transpose_a=True)))
    q, k = _heads(rng, shapes["q"]), _heads(rng, shapes["q"])
    if kernel == "scores":  # s = q k^T;  dq = g k,  dk = g^T q
        b, h, l, _ = q.shape
        g = rng.standard_normal((b, h, l, l), dtype=numpy.float32)
        return (lambda: K.matmul(q, k, transpose_b=True)), \
            (lambda: (K.matmul(q, k, transpose_b=True), K.matmul(g, k), K.matmul(g, q, transpose_a=True)))
    v, g = _heads(rng, shapes["q"]), _heads(rng, shapes["q"])
    mask = _key_mask(q.shape[0], q.shape[2])

    def both():
        out, lse = K.attention_forward(q, k, v, mask)
        return K.attention_backward(q, k, v, out, lse, g, mask)
    return (lambda: K.attention_forward(q, k, v, mask)), both


def torch_case(kernel, shapes, rng):
    """(forward, forward + backward) closures over torch, backward through autograd."""
    import torch
    import torch.nn.functional as F

    leaves = []

    def leaf(a):
        leaves.append(torch.from_numpy(a).requires_grad_())
        return leaves[-1]

    def forward_backward():
        for t in leaves:  # a fresh gradient each call, as minillm's kernels return
            t.grad = None
        fn().backward(g)

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn()
        return run

    if kernel in ("softmax", "layer_norm", "gelu"):
        x = leaf(rng.standard_normal(shapes["x"], dtype=numpy.float32))
        g = torch.from_numpy(rng.standard_normal(shapes["x"], dtype=numpy.float32))
    if kernel == "softmax":
        fn = lambda: torch.softmax(x, -1)  # noqa: E731
    elif kernel == "layer_norm":
        w, b = (leaf(rng.standard_normal(x.shape[1], dtype=numpy.float32)) for _ in range(2))
        fn = lambda: F.layer_norm(x, x.shape[1:], w, b, 1e-12)  # noqa: E731
    elif kernel == "gelu":
        fn = lambda: F.gelu(x)  # noqa: E731
    elif kernel == "linear":
        x = leaf(rng.standard_normal(shapes["x"], dtype=numpy.float32))
        w = leaf(rng.standard_normal(shapes["w"], dtype=numpy.float32))
        g = torch.from_numpy(rng.standard_normal((x.shape[0], w.shape[0]), dtype=numpy.float32))
        fn = lambda: F.linear(x, w)  # noqa: E731
    else:
        q, k = leaf(_heads(rng, shapes["q"])), leaf(_heads(rng, shapes["q"]))
        if kernel == "scores":
            b, h, l, _ = q.shape
            g = torch.from_numpy(rng.standard_normal((b, h, l, l), dtype=numpy.float32))
            fn = lambda: q @ k.transpose(-1, -2)  # noqa: E731
        else:
            v, g = leaf(_heads(rng, shapes["q"])), torch.from_numpy(_heads(rng, shapes["q"]))
            mask = torch.from_numpy(_key_mask(q.shape[0], q.shape[2]))[:, None, None, :]
            fn = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # noqa: E731
    return no_grad(fn), forward_backward


def timed(fn, repeat):
    fn()  # warm up: first-touch pages, thread pools, BLAS buffers
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def worker(side, threads, repeat, kernels):
    """Time every case on one side; print {case index: [forward ms, forward+backward ms], "ran":
    what the side ran (bench/machine.py)} as JSON."""
    if side == "torch":
        import torch
        torch.set_num_threads(threads)
        make = torch_case
    else:
        make = minillm_case  # compiled or NumPy twin: _run sets MINILLM_KERNELS
    results = {}
    for index, (kernel, _, shapes) in enumerate(cases(kernels)):
        forward, both = make(kernel, shapes, numpy.random.default_rng(index))
        results[index] = [timed(forward, repeat), timed(both, repeat)]
    print(json.dumps({**results, "ran": machine.ran(side)}))


def memory_worker(side, length):
    """Print the peak resident memory (MiB) one attention forward + backward adds at (1, 12, L, 64)."""
    rng = numpy.random.default_rng(0)
    make = torch_case if side == "torch" else minillm_case
    make("attention", dict(q=(1, 12, 64, 64)), rng)[1]()  # warm up: libraries' one-time buffers
    _, both = make("attention", dict(q=(1, 12, length, 64)), rng)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: reset the peak (VmHWM) to the current resident size
    before = machine.proc_status_mib("VmRSS")
    both()
    print(json.dumps(machine.peak_rss_mb() - before))


def _run(side, args, threads, level):
    """Run this script as a worker for ``side`` at ``level`` in a fresh process; (its JSON result,
    None) or (None, error)."""
    env = machine.worker_env(level, threads, OPENBLAS_NUM_THREADS=str(threads))
    if side != "torch":
        env["MINILLM_KERNELS"] = side
    done = subprocess.run([sys.executable, __file__, "--worker", side, "--threads", str(threads)] + args,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return None, done.stderr.strip().splitlines()[-1:]
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3, help="alternating processes per side")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per case per process")
    parser.add_argument("--quick", action="store_true", help="1 round, 3 repeats")
    parser.add_argument("--level", choices=machine.LEVELS, default="native",
                        help="native, or avx2: every side held to AVX2 (bench/machine.py)")
    parser.add_argument("--kernels", type=lambda text: text.split(","), metavar="NAMES",
                        help="comma-separated kernels to time (default: all): " + ", ".join(dict.fromkeys(k for k, _, _ in cases())))
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--memory", type=int, metavar="L", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        return memory_worker(args.worker, args.memory)
    if args.worker:
        return worker(args.worker, args.threads, args.repeat, args.kernels)
    if args.quick:
        args.rounds, args.repeat = 1, 3
    unknown = set(args.kernels or ()) - {kernel for kernel, _, _ in cases()}
    if unknown:
        parser.error(f"--kernels: no such kernel {', '.join(sorted(unknown))}")
    selection = ["--kernels", ",".join(args.kernels)] if args.kernels else []

    print(machine.describe(args.level, args.threads))
    runs = {side: [] for side in SIDES}
    for _ in range(args.rounds):
        for side in SIDES:
            result, error = _run(side, ["--repeat", str(args.repeat)] + selection, args.threads, args.level)
            if error:
                print(f"{side}: failed: {error}", file=sys.stderr)
            else:
                machine.check(args.level, side, result["ran"])
                runs[side].append(result)

    def cell(side, index, column):
        values = [r[str(index)][column] for r in runs[side]]
        return statistics.median(values) if values else float("nan")

    print(f"minillm kernels, float32, {args.threads} threads, median of {args.rounds} rounds x {args.repeat} calls "
          "(ms; vs numpy = speed-up over the NumPy twin; vs torch = time / torch's time)")
    print(f"{'kernel':<11}{'shapes':<11}{'input':<26}{'pass':<8}{'compiled':>9}{'numpy':>9}{'torch':>9}"
          f"{'vs numpy':>10}{'vs torch':>10}")
    for index, (kernel, label, shapes) in enumerate(cases(args.kernels)):
        for column, name in enumerate(("fwd", "fwd+bwd")):
            c, n, t = (cell(side, index, column) for side in SIDES)
            print(f"{kernel:<11}{label:<11}{shape_text(kernel, shapes):<26}{name:<8}{c:9.2f}{n:9.2f}{t:9.2f}"
                  f"{n / c:9.1f}x{c / t:10.2f}")

    if args.kernels and "attention" not in args.kernels:
        return
    print("attention forward + backward, peak added memory (MiB), B=1 H=12 D=64, key padding mask:")
    for length in (512, 2048):
        cells = []
        for side in SIDES:
            result, error = _run(side, ["--memory", str(length)], args.threads, args.level)
            cells.append(f"{side} {result:8.1f}" if error is None else f"{side} failed")
        print(f"  L={length:<6}" + "   ".join(cells))


if __name__ == "__main__":
    main()
