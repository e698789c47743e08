"""``minillm.cuda``: is there a GPU minillm can use, as torch.cuda answers it.

minillm runs on a GPU through CuPy (the extras ``cuda12`` / ``cuda13``). Two things can be missing:
CuPy itself, or a working CUDA device under it. ``unavailable_reason()`` says which, and every
``device="cuda"`` request raises it as a RuntimeError rather than failing somewhere deep in an op.
The answers come from minillm/backend.py (which knows arrays and devices); this module gives them
torch.cuda's names.
"""
from . import backend
from .backend import gpu_count as device_count, gpu_unavailable_reason as unavailable_reason  # noqa: F401


def is_available():
    return unavailable_reason() is None


def synchronize():
    """Wait for every kernel queued on the current device (timings need it; training does not)."""
    if is_available():
        backend.cupy.cuda.Device().synchronize()


def is_capturing():
    """Whether CuPy's current stream is capturing a CUDA graph (minillm.training.cuda_graph), as
    torch.cuda.is_current_stream_capturing. Then nothing may wait for the GPU or copy between host
    and device, so the input checks that would are skipped (the batch was checked on the host).
    False without a GPU."""
    return is_available() and backend.cupy.cuda.get_current_stream().is_capturing()
