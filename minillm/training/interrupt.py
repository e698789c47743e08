"""Ctrl-C during training: finish the step under way, checkpoint it, then stop.

A KeyboardInterrupt raised wherever Python happens to be would stop a step between its backward and
the end of its update, with half the parameters moved: no checkpoint of that state could resume the
run exactly. So while the Trainer trains, SIGINT only sets a flag; the loop looks at it after each
whole step, writes the checkpoint and raises TrainingInterrupted, which says where to resume. A
second Ctrl-C stops at once, as usual (for a step that never ends).
"""
import contextlib
import logging
import signal
import threading

logger = logging.getLogger("minillm")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after step ``step``, checkpointed in ``checkpoint``."""

    def __init__(self, step, checkpoint):
        super().__init__(f"interrupted after step {step}; checkpointed in {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


@contextlib.contextmanager
def at_step_boundary(enabled=True):
    """Within the block SIGINT is deferred; yields a function saying whether it came. No deferral
    outside the main thread (signals reach only it) or when not ``enabled`` (several ranks, which
    would have to agree on the step)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    requested = []

    def defer(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)
        logger.warning("Ctrl-C: stopping after this step to checkpoint it (Ctrl-C again stops at once)")

    previous = signal.signal(signal.SIGINT, defer)
    try:
        yield lambda: bool(requested)
    finally:
        signal.signal(signal.SIGINT, previous)
