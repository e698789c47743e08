"""Where the time goes: a per-op table of forward and backward time.

    with minillm.profile.profile() as prof:
        loss = model(ids, labels=labels).loss
        loss.backward()
    print(prof)      # op | calls | forward ms | backward ms | share of the total

Times are wall-clock around each op's forward and backward (Python overhead included), so the
table adds up to the time spent inside ops; the rest of a step is the framework's own glue.
"""
import collections
import contextlib
import time

from .tensor import observers


class Profile:
    def __init__(self):
        self.calls = collections.Counter()
        self.seconds = collections.defaultdict(float)  # (op, phase) -> seconds
        self._started = {}

    def start(self, fn, phase):
        self._started[id(fn), phase] = time.perf_counter()

    def finish(self, fn, phase, inputs, outputs):
        elapsed = time.perf_counter() - self._started.pop((id(fn), phase))
        self.seconds[fn.name, phase] += elapsed
        if phase == "forward":
            self.calls[fn.name] += 1

    def table(self):
        """Rows (op, calls, forward s, backward s), the most expensive first."""
        ops = set(self.calls) | {op for op, _ in self.seconds}
        rows = [(op, self.calls[op], self.seconds[op, "forward"], self.seconds[op, "backward"]) for op in ops]
        return sorted(rows, key=lambda r: r[2] + r[3], reverse=True)

    def __str__(self):
        rows = self.table()
        total = sum(r[2] + r[3] for r in rows) or 1.0
        lines = [f"{'op':<22}{'calls':>7}{'forward ms':>13}{'backward ms':>13}{'share':>8}"]
        for op, calls, fwd, bwd in rows:
            lines.append(f"{op:<22}{calls:>7}{fwd * 1e3:>13.2f}{bwd * 1e3:>13.2f}{(fwd + bwd) / total:>8.1%}")
        lines.append(f"{'total':<22}{sum(r[1] for r in rows):>7}{sum(r[2] for r in rows) * 1e3:>13.2f}"
                     f"{sum(r[3] for r in rows) * 1e3:>13.2f}{1:>8.1%}")
        return "\n".join(lines)


@contextlib.contextmanager
def profile():
    """Time every op's forward and backward inside the block; the Profile prints as a table."""
    prof = Profile()
    observers.append(prof)
    try:
        yield prof
    finally:
        observers.remove(prof)
