"""``minillm.cuda``: is there a GPU minillm can use, as torch.cuda answers it.

minillm runs on a GPU through CuPy (the extras ``cuda12`` / ``cuda13``). Two things can be missing:
CuPy itself, or a working CUDA device under it. ``unavailable_reason()`` says which, and every
``device="cuda"`` request raises it as a RuntimeError rather than failing somewhere deep in an op.
"""
from . import backend


def unavailable_reason():
    """None when a GPU is usable, else a sentence saying what is missing."""
    if backend.cupy is None:
        return ("CuPy is not installed; install minillm with the extra that matches your CUDA "
                "(pip install -e '.[cuda12]' or '.[cuda13]')")
    try:
        count = backend.cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError: no driver, no device, ...
        return f"CuPy is installed but finds no CUDA device ({err})"
    return None if count > 0 else "CuPy is installed but finds no CUDA device"


def is_available():
    return unavailable_reason() is None


def device_count():
    return backend.cupy.cuda.runtime.getDeviceCount() if is_available() else 0


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
