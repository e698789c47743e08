"""minillm on a GPU against torch on the same GPU: kernels, then BERT training steps, in one table.

    python bench/gpu_bench.py                    # on a CUDA machine, about 2-3 minutes
    python bench/gpu_bench.py --out gpu-out      # also gpu-out/gpu_bench.txt and gpu-out/gpu_bench.json
    python bench/gpu_bench.py --dry              # no GPU needed: every row on tiny shapes on the host
                                                 # (minillm on NumPy, torch on the CPU), one timed call

bench/gpu_check.sh runs it after building and testing on a bare GPU machine. Float32 throughout.

Kernels (minillm.kernels on CuPy arrays against torch): softmax, layer norm, GELU (erf), fused
attention with a key padding mask (q, k, v laid out as BERT makes them, (B, L, H, D) viewed as
(B, H, L, D)), and AdamW over one flat buffer of MiniLM's and BERT-base's parameter count against
torch.optim.AdamW(fused=True). "MiB" is the peak memory one call adds (inputs excluded).
Training steps: forward, cross-entropy, backward, clip_grad_norm_(1.0), AdamW step, zero_grad, of
BertForSequenceClassification from random init (MiniLM's and BERT-base's configs, no dropout),
minillm against transformers' with attn_implementation="sdpa"; "MiB" is the peak memory allocated
during a step (weights, gradients and optimizer state included). On the launch-bound shapes the
minillm worker also times the step captured as a CUDA graph and replayed (minillm.training.
CapturedStep, AdamW(capturable=True)) on a fresh model: the "graph" columns, against the same torch
eager time; its MiB adds the graph's private memory pool. A dry run has no GPU to capture on: its
graph cells time the eager step again.

Method, as bench/bert_step.py: every measurement runs in a fresh process (one per side for the
kernels, one per side and shape for training; a dry run trains every shape in one process per
side), the sides alternate, and a cell is the median over rounds of each process's median. Inside
a process: warm-up calls (NVRTC compilation, memory pools, cuBLAS handles) and a short busy spell
(the GPU's clocks rise from idle; its pace sizes the loop), then timed calls, each between two CUDA
events recorded on the stream without waiting in between, so a host-bound call is timed at its
host cost and a device-bound one at its device cost. Training runs first: the budget cuts what
runs last. Peak memory: torch.cuda.max_memory_allocated; for CuPy, the peak of the default pool's
used bytes, tracked by an allocator that wraps the pool's malloc (installed only for one extra,
untimed call). Neither counts cuBLAS's own workspace.

"issue torch" is the torch time the GPU issue measured on the lent H200; "target" the issue's
ratio (minillm / torch) to meet, ",mem" where minillm's memory must also stay within torch's;
"met" says whether this run met it. A minillm row that fails (a kernel not written yet) shows its error
and the table goes on; --budget bounds the whole run (rows past it are marked skipped).
"""
import argparse
import importlib.util
import json
import math
import os
import pkgutil
import statistics
import subprocess
import sys
import time

import numpy

from bert_step import BASE_CONFIG, BATCH_KEYS, inputs, minillm_train_step, torch_train_step

MIB = 2 ** 20
SIDES = ("minillm", "torch")

# Kernel rows: (kernel, pass, shape on the GPU, shape in a dry run, the issue's torch ms or None).
# AdamW's sizes are BertForSequenceClassification's parameter counts (bench/adamw_step.py's shapes).
KERNELS = [
    ("softmax", "fwd", (32, 12, 128, 128), (2, 2, 8, 8), 0.022),
    ("softmax", "fwd+bwd", (32, 12, 128, 128), (2, 2, 8, 8), None),
    ("layer_norm", "fwd", (4096, 384), (16, 32), 0.020),
    ("layer_norm", "fwd+bwd", (4096, 384), (16, 32), None),
    ("gelu", "fwd", (4096, 1536), (16, 64), 0.028),
    ("gelu", "fwd+bwd", (4096, 1536), (16, 64), None),
    ("attention", "fwd", (32, 12, 128, 32), (2, 2, 8, 4), None),
    ("attention", "fwd+bwd", (32, 12, 128, 32), (2, 2, 8, 4), 0.39),
    ("attention", "fwd", (8, 12, 512, 64), (1, 2, 16, 8), None),
    ("attention", "fwd+bwd", (8, 12, 512, 64), (1, 2, 16, 8), 0.82),
    ("attention", "fwd+bwd", (2, 12, 2048, 64), (1, 2, 32, 8), 2.76),
    ("adamw", "step", (22_713_986,), (1000,), 0.69),
    ("adamw", "step", (109_483_778,), (5000,), 1.42),
]
LONG_ATTENTION = 10  # the row whose extra memory the issue bounds: minillm's no more than torch's
ISSUE_LONG_ATTENTION_MIB = 109

MINILM_CONFIG = dict(BASE_CONFIG, hidden_size=384, num_hidden_layers=6, intermediate_size=1536)
DRY_CONFIG = dict(BASE_CONFIG, vocab_size=1100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=64)  # inputs() draws ids from 1000 up
# Training rows: (label, config, batch, length, dry batch x length, issue's torch ms, ratio target,
# whether the target also bounds peak memory by torch's, whether minillm also times a CUDA graph).
TRAIN = [
    ("MiniLM", MINILM_CONFIG, 32, 128, (2, 8), 16.8, 1.5, False, True),
    ("BERT-base", BASE_CONFIG, 8, 128, (2, 8), 23.2, 1.5, False, True),
    ("BERT-base", BASE_CONFIG, 32, 128, (2, 16), 59.8, 1.0, True, False),
    ("BERT-base", BASE_CONFIG, 32, 512, (2, 32), 224.0, 1.0, True, False),
]
GRAPH = "minillm (graph)"  # the CUDA-graph step's results, reported by the minillm worker
GRAPH_TARGET = 1.0  # the issue: launch-bound shapes <= 1.5 without capture, <= 1.0 with it


def kernel_cases(dry):
    """(kernel, pass, shape, issue ms) of every kernel row, at the dry shapes in a dry run."""
    return [(k, p, dry_shape if dry else shape, ms) for k, p, shape, dry_shape, ms in KERNELS]


def train_cases(dry):
    """(label, config, batch, length, issue ms, target, memory bound, graph) of every training row."""
    return [(label, DRY_CONFIG if dry else config, *(dry_shape if dry else (batch, length)), *rest)
            for label, config, batch, length, dry_shape, *rest in TRAIN]


# ---- the two sides: where arrays live, how to wait, time and measure memory there ----------------------
class HostEvent:
    """A CUDA event's stand-in on the host (dry runs): record() reads the clock."""

    def record(self):
        self.time = time.perf_counter()

    def elapsed_time(self, end):
        return (end.time - self.time) * 1000


class MinillmSide:
    """minillm's arrays: CuPy on the GPU, NumPy on the host (dry)."""
    name = "minillm"

    def __init__(self, dry):
        self.device = "cpu" if dry else "cuda"
        self.cupy = None
        if not dry:
            import cupy
            self.cupy = cupy
        self.xp = self.cupy or numpy

    def randn(self, shape, seed, scale=1.0):
        if self.cupy is None:
            a = numpy.random.default_rng(seed).standard_normal(shape, dtype=numpy.float32)
        else:
            a = self.cupy.random.RandomState(seed).standard_normal(shape, dtype=numpy.float32)
        a *= scale
        return a

    def heads(self, shape, seed):
        """A (B, H, L, D) array laid out as BERT makes it: a transposed view of (B, L, H, D)."""
        b, h, l, d = shape
        return self.randn((b, l, h, d), seed).transpose(0, 2, 1, 3)

    def sync(self):
        if self.cupy is not None:
            self.cupy.cuda.Device().synchronize()

    def event(self):
        return HostEvent() if self.cupy is None else CupyEvent(self.cupy)

    def peak_mib(self, fn):
        """Run fn once: (MiB in use before, peak MiB in use during), or None on the host."""
        if self.cupy is None:
            fn()
            return None
        pool = self.cupy.get_default_memory_pool()
        self.sync()
        before = peak = pool.used_bytes()

        def malloc(size):
            nonlocal peak
            memory = pool.malloc(size)
            peak = max(peak, pool.used_bytes())
            return memory
        self.cupy.cuda.set_allocator(malloc)
        try:
            result = fn()  # noqa: F841 (held until the device is done, as a caller would)
            self.sync()
        finally:
            self.cupy.cuda.set_allocator(pool.malloc)
        return before / MIB, peak / MIB

    def describe(self):
        import minillm
        meta = {"minillm": minillm.__version__, "numpy": numpy.__version__, "kernels": minillm.kernels.info(),
                "cuda_twins": cuda_twins()}
        if self.cupy is not None:
            runtime = self.cupy.cuda.runtime
            meta.update(device=runtime.getDeviceProperties(0)["name"].decode(), cupy=self.cupy.__version__,
                        cuda_runtime=runtime.runtimeGetVersion())
        return meta


def cuda_twins():
    """The kernels with a CUDA twin (the modules of minillm/kernels/cuda/), found without importing
    them, so a dry run lists them too. Float32 CuPy arrays run these; the rest run the NumPy twin."""
    spec = importlib.util.find_spec("minillm.kernels.cuda")
    if spec is None:
        return []
    return sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations) if not m.ispkg)


class CupyEvent:
    def __init__(self, cupy):
        self.cupy, self.event = cupy, cupy.cuda.Event()

    def record(self):
        self.event.record()

    def elapsed_time(self, end):
        return self.cupy.cuda.get_elapsed_time(self.event, end.event)


class TorchSide:
    """torch on the same GPU, or on the CPU (dry)."""
    name = "torch"

    def __init__(self, dry):
        import torch
        self.torch, self.device = torch, "cpu" if dry else "cuda"
        self.gpu = not dry

    def randn(self, shape, seed, scale=1.0):
        generator = self.torch.Generator(self.device).manual_seed(seed)
        return self.torch.randn(shape, generator=generator, device=self.device) * scale

    def heads(self, shape, seed):
        b, h, l, d = shape
        return self.randn((b, l, h, d), seed).transpose(1, 2)

    def sync(self):
        if self.gpu:
            self.torch.cuda.synchronize()

    def event(self):
        return self.torch.cuda.Event(enable_timing=True) if self.gpu else HostEvent()

    def peak_mib(self, fn):
        if not self.gpu:
            fn()
            return None
        cuda = self.torch.cuda
        cuda.synchronize()
        cuda.reset_peak_memory_stats()
        before = cuda.memory_allocated()
        result = fn()  # noqa: F841
        cuda.synchronize()
        return before / MIB, cuda.max_memory_allocated() / MIB

    def describe(self):
        meta = {"torch": self.torch.__version__}
        if self.gpu:
            meta.update(device=self.torch.cuda.get_device_name(), cuda=self.torch.version.cuda)
        return meta


def median_ms(fn, side, warmup, seconds, least, most):
    """The median time of fn() in ms. Warm-up: ``warmup`` calls (compilation, memory pools, cuBLAS
    handles), then calls for ``seconds`` (a GPU's clocks rise from idle), whose pace sizes the timed
    loop: between ``least`` and ``most`` calls, about ``seconds`` worth, each between two events."""
    for _ in range(warmup):
        fn()
    side.sync()
    start, calls = time.perf_counter(), 0
    while calls == 0 or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    side.sync()
    count = max(least, min(most, int(seconds * calls / (time.perf_counter() - start))))
    events = [(side.event(), side.event()) for _ in range(count)]
    for begin, end in events:
        begin.record()
        fn()
        end.record()
    side.sync()
    return statistics.median(begin.elapsed_time(end) for begin, end in events)


# ---- kernels: one closure per row and side ---------------------------------------------------------------
def key_mask(xp, batch, keys):
    """Padding: the last quarter of every sequence's keys masked (True = attend)."""
    mask = xp.ones((batch, keys), dtype=bool)
    mask[:, keys - keys // 4:] = False
    return mask


ADAMW = dict(lr=1e-4, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8)


def minillm_kernel(kernel, pass_, shape, side):
    """A closure running one row's minillm.kernels calls on side's arrays."""
    from minillm import kernels as K
    if kernel == "adamw":  # the first step's scalars (step 1), over one flat buffer
        param, grad = side.randn(shape, 0, 0.02), side.randn(shape, 1, 1e-3)
        exp_avg, exp_avg_sq = side.xp.zeros_like(param), side.xp.zeros_like(param)
        beta1, beta2 = ADAMW["betas"]
        scalars = dict(decay=1 - ADAMW["lr"] * ADAMW["weight_decay"], beta1=beta1, beta2=beta2,
                       step_size=ADAMW["lr"] / (1 - beta1), bias_correction2_sqrt=math.sqrt(1 - beta2),
                       eps=ADAMW["eps"])
        return lambda: K.adamw_step(param, grad, exp_avg, exp_avg_sq, **scalars)
    if kernel == "attention":
        q, k, v, g = (side.heads(shape, seed) for seed in range(4))
        mask = key_mask(side.xp, shape[0], shape[2])
        forward = lambda: K.attention_forward(q, k, v, mask)  # noqa: E731

        def both():
            out, lse = forward()
            return K.attention_backward(q, k, v, out, lse, g, mask)
    else:
        x, g = side.randn(shape, 0), side.randn(shape, 1)
        if kernel == "softmax":
            forward = lambda: K.softmax_forward(x)  # noqa: E731
            both = lambda: K.softmax_backward(forward(), g)  # noqa: E731
        elif kernel == "layer_norm":
            w, b = side.randn(shape[-1:], 2), side.randn(shape[-1:], 3)
            forward = lambda: K.layer_norm_forward(x, w, b, 1e-12)  # noqa: E731

            def both():
                _, mean, rstd = forward()
                return K.layer_norm_backward(g, x, w, mean, rstd)
        else:
            forward = lambda: K.gelu_forward(x)  # noqa: E731
            both = lambda: (forward(), K.gelu_backward(x, g))  # noqa: E731
    return forward if pass_ == "fwd" else both


def torch_kernel(kernel, pass_, shape, side):
    """The same row in torch; fwd+bwd runs autograd's backward from a given output gradient."""
    torch, F = side.torch, side.torch.nn.functional
    if kernel == "adamw":
        param = torch.nn.Parameter(side.randn(shape, 0, 0.02))
        param.grad = side.randn(shape, 1, 1e-3)
        return torch.optim.AdamW([param], **ADAMW, fused=True).step
    if kernel == "attention":
        q, k, v = (side.heads(shape, seed).requires_grad_() for seed in range(3))
        g = side.heads(shape, 3)
        mask = key_mask(torch, shape[0], shape[2]).to(side.device)[:, None, None, :]
        leaves, fn = (q, k, v), lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        x, g = side.randn(shape, 0).requires_grad_(), side.randn(shape, 1)
        leaves = (x,)
        if kernel == "softmax":
            fn = lambda: torch.softmax(x, -1)  # noqa: E731
        elif kernel == "layer_norm":
            w, b = side.randn(shape[-1:], 2).requires_grad_(), side.randn(shape[-1:], 3).requires_grad_()
            leaves, fn = (x, w, b), lambda: F.layer_norm(x, shape[-1:], w, b, 1e-12)
        else:
            fn = lambda: F.gelu(x)  # noqa: E731
    if pass_ == "fwd":
        def forward():
            with torch.no_grad():
                return fn()
        return forward

    def both():  # returns fresh gradients, as minillm's kernels do, and leaves none behind
        fn().backward(g)
        grads = [t.grad for t in leaves]
        for t in leaves:
            t.grad = None
        return grads
    return both


# ---- training steps --------------------------------------------------------------------------------------
def minillm_train(config, batch, length, side, dropout, graph=False):
    import minillm as mm
    from minillm.models.bert import BertConfig, BertForSequenceClassification
    mm.manual_seed(0)
    config = BertConfig(num_labels=2, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **config)
    model = BertForSequenceClassification(config).to(side.device)
    model.train()
    params = list(model.parameters())
    if graph and side.cupy is not None:
        return minillm_graph(model, params, inputs(batch, length, config.vocab_size))
    return minillm_train_step(model, [mm.tensor(a, device=side.device) for a in inputs(batch, length, config.vocab_size)])


def minillm_graph(model, params, arrays):
    """The step captured as a CUDA graph: each call copies the (host) batch in and replays. The first
    calls run eagerly and the third captures: median_ms's warm-up and busy spell cover them.
    ``private_mib`` is the graph's own memory pool, which the default pool's peak does not see."""
    from minillm.optim import AdamW
    from minillm.training import CapturedStep
    batch = dict(zip(BATCH_KEYS, arrays))
    captured = CapturedStep(model, AdamW(params, lr=1e-5, capturable=True), batch, max_grad_norm=1.0)

    def step():
        return captured(batch)
    step.private_mib = lambda: captured.pool.total_bytes() / MIB if captured.pool is not None else 0.0
    return step


def torch_train(config, batch, length, side, dropout):
    import transformers
    torch = side.torch
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.BertConfig(num_labels=2, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                                     attn_implementation="sdpa", **config)
    model = transformers.BertForSequenceClassification(config).to(side.device)
    model.train()
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"transformers chose attention {model.config._attn_implementation!r}, not 'sdpa'")
    return torch_train_step(torch, model, [torch.as_tensor(a, device=side.device)
                                           for a in inputs(batch, length, config.vocab_size)])


# ---- workers: one side per process; each result is one JSON line, printed as soon as it is known ----------
def emit(record):
    print(json.dumps(record, default=str), flush=True)


def error_text(err):
    return f"{type(err).__name__}: {err}".splitlines()[0][:160]


def kernel_worker(side, dry):
    """Every kernel row on one side; "mib" is the memory one call adds to what the inputs hold."""
    emit({"meta": side.describe()})
    make = minillm_kernel if side.name == "minillm" else torch_kernel
    timing = dict(warmup=1, seconds=0, least=1, most=1) if dry else dict(warmup=3, seconds=0.25, least=10, most=200)
    for index, (kernel, pass_, shape, _) in enumerate(kernel_cases(dry)):
        try:
            fn = make(kernel, pass_, shape, side)
            ms = median_ms(fn, side, **timing)
            memory = side.peak_mib(fn)
            emit({"case": index, "ms": ms, "mib": memory and memory[1] - memory[0]})
        except Exception as err:  # a kernel not written yet, or not for these arrays: the table goes on
            emit({"case": index, "error": error_text(err)})
        fn = None  # free this row's arrays before the next row's


def train_worker(side, cases, dry, dropout):
    """Training rows on one side (one per process on a GPU, all in one in a dry run); "mib" is the
    peak memory allocated during a step. The minillm side then times the CUDA-graph step of the rows
    that ask for it, on a fresh model (the eager one freed), reported as GRAPH."""
    emit({"meta": side.describe()})
    timing = dict(warmup=1, seconds=0, least=1, most=1) if dry else dict(warmup=2, seconds=2, least=5, most=30)
    for index in cases:
        _, config, batch, length, *_, graph = train_cases(dry)[index]
        modes = [False, True] if graph and side.name == "minillm" else [False]
        for captured in modes:
            record = {"case": index, **({"as": GRAPH} if captured else {})}
            try:
                step = (minillm_train(config, batch, length, side, dropout, captured) if side.name == "minillm"
                        else torch_train(config, batch, length, side, dropout))
                ms = median_ms(step, side, **timing)
                memory = side.peak_mib(step)
                mib = memory and memory[1] + (step.private_mib() if hasattr(step, "private_mib") else 0.0)
                emit({**record, "ms": ms, "mib": mib})
            except Exception as err:
                emit({**record, "error": error_text(err)})
            step = None


# ---- the driver ------------------------------------------------------------------------------------------
class Driver:
    """Runs the workers, sides alternating, within a time budget, and gathers what they report."""

    def __init__(self, args):
        self.args, self.started = args, time.monotonic()
        self.meta = {}  # side: what its worker says about itself (device, versions, kernels.info())
        self.processes, self.skipped = 0, 0

    def run(self, side, part, extra, label):
        """(the records of one worker process, an error or None)."""
        remaining = self.args.budget - (time.monotonic() - self.started)
        if remaining < 10:
            self.skipped += 1
            return [], "skipped: time budget spent"
        self.processes += 1
        command = [sys.executable, __file__, "--worker", side, "--part", part, *extra,
                   "--dropout", str(self.args.dropout)] + ["--dry"] * self.args.dry
        began = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=min(remaining, self.args.limit))
            stdout, error = done.stdout, None
            if done.returncode != 0:
                error = f"exit {done.returncode}: " + (done.stderr.strip().splitlines() or [""])[-1][:160]
                sys.stderr.write(done.stderr[-3000:])
        except subprocess.TimeoutExpired as err:  # keep what it reported before
            stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
            error = f"timed out after {time.monotonic() - began:.0f} s"
        records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        self.meta.update({side: r["meta"] for r in records if "meta" in r})
        print(f"[{time.monotonic() - self.started:4.0f} s] {label} {side}: {time.monotonic() - began:.1f} s"
              + (f", {error}" if error else ""), file=sys.stderr, flush=True)
        return [r for r in records if "case" in r], error

    def collect(self, part, runs, count, rounds):
        """Run ``runs`` (each a worker's extra arguments, the cases it measures, a label) ``rounds``
        times per side, the side that goes first alternating. Returns (times, memory, errors):
        {side: [median ms per case]}, {side: [median MiB per case]}, {side: {case: error}}, with
        GRAPH beside the sides (what the minillm worker reports "as" it)."""
        keys = SIDES + (GRAPH,)
        times = {key: [[] for _ in range(count)] for key in keys}
        memory = {key: [[] for _ in range(count)] for key in keys}
        errors = {key: {} for key in keys}
        for turn, (extra, cases, label) in enumerate(runs * rounds):
            for side in (SIDES if turn % 2 == 0 else SIDES[::-1]):
                records, error = self.run(side, part, extra, label)
                for r in records:
                    key = r.get("as", side)
                    if "error" in r:
                        errors[key][r["case"]] = r["error"]
                        continue
                    times[key][r["case"]].append(r["ms"])
                    if r["mib"] is not None:
                        memory[key][r["case"]].append(r["mib"])
                reported = {r["case"] for r in records if "as" not in r}
                for case in cases:  # the process died or ran out of time before this case
                    if case not in reported and not times[side][case]:
                        errors[side].setdefault(case, error or "no result")

        def medians(values):
            return {s: [statistics.median(v) if v else None for v in values[s]] for s in keys}
        return medians(times), medians(memory), errors


# ---- the table -------------------------------------------------------------------------------------------
COLUMNS = (f"{'minillm':>9}{'torch':>9}{'ratio':>8}{'issue torch':>12}{'target':>11}{'met':>5}"
           f"{'minillm MiB':>12}{'torch MiB':>10}  note")


def fmt(value, width, digits):
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def compared(index, measured, issue_ms, target, memory_bound, digits):
    """The cells a kernel row and a training row share (text), and their numbers (dict). The target
    is met when minillm / torch <= target and, where memory is bound too, minillm's MiB <= torch's."""
    times, memory, errors = measured
    m, t = times["minillm"][index], times["torch"][index]
    m_mib, t_mib = memory["minillm"][index], memory["torch"][index]
    ratio = m / t if m is not None and t else None
    checks = [None if ratio is None else ratio <= target]
    if memory_bound:
        checks.append(None if m_mib is None or t_mib is None else m_mib <= t_mib)
    met = "MISS" if False in checks else "?" if None in checks else "ok"
    note = "; ".join(f"{side}: {errors[side][index]}" for side in SIDES if index in errors[side])
    text = (f"{fmt(m, 9, digits)}{fmt(t, 9, digits)}{fmt(ratio, 8, 2)}{fmt(issue_ms, 12, digits)}"
            f"{f'<={target:.1f}' + ',mem' * memory_bound:>11}{met:>5}{fmt(m_mib, 12, 1)}{fmt(t_mib, 10, 1)}"
            f"  {note}").rstrip()
    return text, dict(minillm_ms=m, torch_ms=t, ratio=ratio, issue_torch_ms=issue_ms, target=target,
                      memory_bound=memory_bound, met=met, minillm_mib=m_mib, torch_mib=t_mib,
                      errors={s: errors[s].get(index) for s in SIDES})


def kernel_table(dry, measured):
    lines = ["kernels (ms, median after warm-up; ratio = minillm / torch; MiB = peak memory one call adds)",
             f"{'kernel':<11}{'pass':<9}{'shape':<18}" + COLUMNS]
    rows = []
    for index, (kernel, pass_, shape, issue_ms) in enumerate(kernel_cases(dry)):
        text, numbers = compared(index, measured, issue_ms, 1.0, index == LONG_ATTENTION, 3)
        shape_text = f"{shape[0] / 1e6:.1f}M" if kernel == "adamw" and not dry else ",".join(map(str, shape))
        lines.append(f"{kernel:<11}{pass_:<9}{shape_text:<18}{text}")
        rows.append(dict(kernel=kernel, pass_=pass_, shape=list(shape), **numbers))
    lines.append(f"targets: every ratio <= 1.0; the longest attention also adds no more memory than torch "
                 f"(the issue measured torch adding {ISSUE_LONG_ATTENTION_MIB} MiB, a naive version 2.3 GB)")
    return lines, rows


def graph_cells(index, measured):
    """The CUDA-graph step's cells of a training row (text) and numbers (dict): its ms, its ratio to
    torch's eager step, whether that meets GRAPH_TARGET, its MiB (private pool included), an error."""
    times, memory, errors = measured
    g, t, mib = times[GRAPH][index], times["torch"][index], memory[GRAPH][index]
    ratio = g / t if g is not None and t else None
    met = "?" if ratio is None else "ok" if ratio <= GRAPH_TARGET else "MISS"
    error = errors[GRAPH].get(index) or (None if g is not None else "no result (its worker stopped before it)")
    text = (f"   graph {fmt(g, 7, 1)} ms, ratio {fmt(ratio, 5, 2)} (<={GRAPH_TARGET:.1f} {met}), {fmt(mib, 7, 1)} MiB"
            + (f"; {GRAPH}: {error}" if error else ""))
    return text, dict(ms=g, ratio=ratio, target=GRAPH_TARGET, met=met, mib=mib, error=error)


def train_table(dry, measured):
    lines = ["training step: forward, cross-entropy, backward, clip 1.0, AdamW (ms/step; MiB = peak allocated)",
             f"{'model':<11}{'batch x len':<16}" + COLUMNS]
    rows = []
    for index, (label, _, batch, length, issue_ms, target, memory_bound, graph) in enumerate(train_cases(dry)):
        text, numbers = compared(index, measured, issue_ms, target, memory_bound, 1)
        lines.append(f"{label:<11}{f'{batch}x{length}':<16}{text}")
        rows.append(dict(model=label, batch=batch, length=length, **numbers))
        if graph:
            text, rows[-1]["graph"] = graph_cells(index, measured)
            lines.append(f"{'':<11}{'':<16}{text}")
    lines.append("targets: ratio <= 1.0 and peak memory <= torch's on BERT-base 32x128 and 32x512; <= 1.5 on the "
                 "launch-bound shapes without CUDA-graph capture (<= 1.0 with it: the graph lines, "
                 "minillm.training.CapturedStep against torch eager)")
    return lines, rows


def header(args, driver):
    ours, theirs = driver.meta.get("minillm", {}), driver.meta.get("torch", {})
    where = "DRY RUN on the host: tiny shapes, one timed call; the numbers mean nothing" if args.dry else (
        f"{ours.get('device', theirs.get('device', '?'))}: cupy {ours.get('cupy', '?')} (CUDA runtime "
        f"{ours.get('cuda_runtime', '?')}), torch {theirs.get('torch', '?')} (CUDA {theirs.get('cuda', '?')})")
    return [f"minillm vs torch, float32, {where}",
            f"{args.rounds} kernel round(s), {args.train_rounds} training round(s), sides alternating, medians: "
            f"{driver.processes} worker processes ({driver.skipped} skipped for the time budget); "
            f"dropout {args.dropout}",
            "minillm.kernels.info(): " + json.dumps(ours.get("kernels", "not reported"), default=str),
            "CUDA twins (minillm/kernels/cuda/): " + (", ".join(ours.get("cuda_twins", [])) or "none")
            + "; every other kernel, and float64, runs the NumPy twin on CuPy arrays"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="tiny shapes on the host, one timed call (no GPU)")
    parser.add_argument("--out", help="folder for gpu_bench.txt (the table) and gpu_bench.json (the numbers)")
    parser.add_argument("--parts", default="kernels,train", help="kernels, train or both (comma-separated)")
    parser.add_argument("--rounds", type=int, help="alternating kernel rounds per side (default 2, dry 1)")
    parser.add_argument("--train-rounds", type=int, default=1, help="alternating rounds per training shape")
    parser.add_argument("--budget", type=float, default=180, help="seconds for the whole run (rows past it skip)")
    parser.add_argument("--limit", type=float, default=90, help="seconds for one worker process")
    parser.add_argument("--dropout", type=float, default=0.0, help="hidden and attention dropout in training")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=("kernels", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        side = (MinillmSide if args.worker == "minillm" else TorchSide)(args.dry)
        if args.part == "kernels":
            return kernel_worker(side, args.dry)
        return train_worker(side, [int(c) for c in args.cases.split(",")], args.dry, args.dropout)
    if args.rounds is None:
        args.rounds = 1 if args.dry else 2

    # Training first: its rows are the issue's headline, and the budget cuts whatever runs last.
    driver, results, tables = Driver(args), {"dry": args.dry}, {}
    if "train" in args.parts:
        runs = [(("--cases", str(index)), [index], f"train {label} {batch}x{length}")
                for index, (label, _, batch, length, *_) in enumerate(train_cases(args.dry))]
        if args.dry:  # a process per side is enough to run every line of a worker, and saves imports
            runs = [(("--cases", ",".join(run[0][1] for run in runs)), range(len(TRAIN)), "train")]
        tables["train"], results["train"] = train_table(args.dry, driver.collect("train", runs, len(TRAIN),
                                                                                 args.train_rounds))
    if "kernels" in args.parts:
        runs = [((), range(len(KERNELS)), "kernels")]
        tables["kernels"], results["kernels"] = kernel_table(args.dry, driver.collect("kernels", runs, len(KERNELS),
                                                                                      args.rounds))
    lines = [line for part in ("kernels", "train") if part in tables for line in [""] + tables[part]]
    lines = header(args, driver) + lines
    results["meta"] = driver.meta
    print("\n".join(lines), flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu_bench.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(args.out, "gpu_bench.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
    failed = sum(any(row["errors"].values()) or bool(row.get("graph", {}).get("error"))
                 for part in ("kernels", "train") for row in results.get(part, []))
    if failed:
        sys.exit(f"{failed} row(s) with errors (see the note column)")


if __name__ == "__main__":
    main()
