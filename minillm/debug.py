"""Where a NaN starts, and where activation memory goes.

    with minillm.debug.detect_anomaly():
        loss = model(ids).logits.log().sum()   # raises at the first op that makes a NaN or inf
        loss.backward()                        # ... or whose backward does

    with minillm.debug.memory_report(model) as report:
        model(ids)
    print(report)                              # bytes saved for backward per module and per op

Both watch every op through ``minillm.tensor.observers`` while the context is open, and cost
nothing when it is closed.
"""
import collections
import contextlib
import os
import traceback

from . import backend
from .tensor import observers
from .nn import module as nn_module

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


class AnomalyError(FloatingPointError):
    """An op produced NaN or inf from finite inputs (forward), or a non-finite gradient (backward)."""


def _user_frame():
    """The innermost stack frame outside minillm: the line of user code that called the op."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE):
            return f'{frame.filename}, line {frame.lineno}, in {frame.name}: {frame.line}'
    return "(inside minillm)"


def _finite(array):
    if not hasattr(array, "dtype") or array.dtype.kind != "f":
        return True
    return bool(backend.array_module(array).isfinite(array).all())


def _shapes(arrays):
    return ", ".join(str(tuple(a.shape)) for a in arrays if hasattr(a, "shape")) or "none"


class _AnomalyDetector:
    def start(self, fn, phase):
        if phase == "forward":
            fn.created_at = _user_frame()

    def finish(self, fn, phase, inputs, outputs):
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        if all(_finite(o) for o in outputs if o is not None):
            return
        site = getattr(fn, "created_at", "(created before detect_anomaly was on)")
        if phase == "forward" and all(_finite(a) for a in inputs):
            raise AnomalyError(f"{fn.name} produced NaN or inf in its forward from finite inputs "
                               f"of shapes {_shapes(inputs)}; the op was called at {site}")
        if phase == "backward" and _finite(inputs[0]):
            raise AnomalyError(f"{fn.name} backward produced a NaN or inf gradient from a finite one "
                               f"(output grad shape {_shapes(inputs)}); the op was called at {site}")


@contextlib.contextmanager
def detect_anomaly():
    """Raise AnomalyError at the first op whose forward or backward turns finite values into NaN/inf,
    naming the op, its input shapes and the user's line that called it (as torch.autograd.detect_anomaly)."""
    detector = _AnomalyDetector()
    observers.append(detector)
    try:
        yield
    finally:
        observers.remove(detector)


class MemoryReport:
    """Bytes of arrays saved for backward, by module and by op, and the peak of what is alive.

    Forward adds each op's saved arrays (an array saved by several ops counts once, at its
    first save); backward frees them op by op, so ``live`` falls back as backward proceeds and
    ``peak`` is the most that was held at once. The parameters of ``model`` are not counted: ops
    save them by reference (Linear keeps W for dx = g W), but the model holds them anyway.
    """

    def __init__(self, model=None):
        self.names = {id(m): name or type(m).__name__ for name, m in model.named_modules()} if model else {}
        self.by_module = collections.Counter()
        self.by_op = collections.Counter()
        self.total = self.live = self.peak = 0
        self._seen = {id(p.data) for p in model.parameters()} if model else set()
        self._held = {}  # id(fn) -> bytes it holds until its backward

    def start(self, fn, phase):
        pass

    def finish(self, fn, phase, inputs, outputs):
        if phase == "backward":
            self.live -= self._held.pop(id(fn), 0)
            return
        if fn.saved is None or not fn.saved:  # no graph recorded: nothing is kept
            return
        saved = [a for a in (fn.saved or ()) if hasattr(a, "nbytes") and id(a) not in self._seen]
        size = sum(int(a.nbytes) for a in saved)
        self._seen.update(id(a) for a in saved)
        owner = nn_module.running[-1] if nn_module.running else None
        self.by_module[self.names.get(id(owner), type(owner).__name__ if owner else "(no module)")] += size
        self.by_op[fn.name] += size
        self.total += size
        self.live += size
        self._held[id(fn)] = size
        self.peak = max(self.peak, self.live)

    def __str__(self):
        lines = [f"saved for backward: {self.total / 2**20:.1f} MiB in all, peak {self.peak / 2**20:.1f} MiB "
                 f"alive at once, {self.live / 2**20:.1f} MiB still held",
                 "by module:"]
        lines += [f"  {name:<50} {size / 2**20:9.2f} MiB" for name, size in self.by_module.most_common()]
        lines.append("by op:")
        lines += [f"  {name:<50} {size / 2**20:9.2f} MiB" for name, size in self.by_op.most_common()]
        return "\n".join(lines)


@contextlib.contextmanager
def memory_report(model=None):
    """Collect a MemoryReport over the block; pass the model to name its sub-modules."""
    report = MemoryReport(model)
    observers.append(report)
    try:
        yield report
    finally:
        observers.remove(report)
