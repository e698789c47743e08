"""Kernels: the hot loops of a transformer, each written twice behind one dispatch.

Every kernel file here holds a plain NumPy twin (the readable definition) and a dispatch function
that calls the compiled twin from csrc/ (Cython, built as ``minillm._C.<name>``) when it is built
and the arrays live on the host, the CUDA twin from csrc/cuda/ (minillm/kernels/cuda/) for float32
CuPy arrays, and the NumPy twin otherwise. ``MINILLM_KERNELS=numpy`` (or ``use("numpy")``) forces
the twins everywhere, on host and GPU arrays alike, which is how the tests hold one against the other.

The compiled twins share one thread pool, OpenMP's (``threads()``; set it with OMP_NUM_THREADS):
row kernels split rows across it, and matmul and attention run single-threaded BLAS calls inside
it. blas.py says why, and what the BLAS under them is.
"""
import contextlib
import importlib
import os

import numpy

from .. import backend

MODES = ("compiled", "numpy")
_mode = os.environ.get("MINILLM_KERNELS", "compiled")
if _mode not in MODES:
    raise ValueError(f"MINILLM_KERNELS={_mode!r}: expected one of {MODES}")
_loaded = {}


def load(name):
    """The compiled module ``minillm._C.<name>``, or None when it was not built."""
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(f"minillm._C.{name}")
        except ImportError:
            _loaded[name] = None
    return _loaded[name]


def compiled(name, *arrays):
    """The compiled module to run ``name`` on these arrays, or None to run the NumPy twin."""
    if _mode != "compiled" or any(backend.array_module(a) is not backend.numpy for a in arrays):
        return None
    return load(name)


def gpu(name, *arrays):
    """The CUDA twin ``minillm.kernels.cuda.<name>`` to run ``name`` on these arrays, or None: for
    host arrays, in numpy mode, and for dtypes other than float32. The CUDA kernels are float32
    only; float64 (gradcheck's dtype) runs the NumPy twin on the GPU. The first array decides: the
    CUDA twin checks that the others are float32 CuPy arrays too."""
    first = arrays[0]
    if _mode != "compiled" or not backend.on_device(first) or first.dtype != numpy.float32:
        return None
    return importlib.import_module(f"minillm.kernels.cuda.{name}")


@contextlib.contextmanager
def use(mode):
    """Run a block with every kernel in ``mode`` ('compiled' or 'numpy')."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"kernel mode {mode!r}: expected one of {MODES}")
    previous, _mode = _mode, mode
    try:
        yield
    finally:
        _mode = previous


def threads():
    """How many OpenMP threads the compiled kernels run on (1 when built without OpenMP)."""
    openmp = load("threads")
    return openmp.max_threads() if openmp is not None else 1


def set_threads(n):
    """Run the compiled kernels on ``n`` OpenMP threads (as torch.set_num_threads)."""
    openmp = load("threads")
    if openmp is not None:
        openmp.set_threads(n)


def info():
    """Which twin each kernel runs on host arrays, the threads the compiled ones use, the BLAS under
    them, and, where there is a GPU, what runs on float32 device arrays ("gpu")."""
    names = ("softmax", "layer_norm", "gelu", "matmul", "attention")
    table = {n: ("compiled" if _mode == "compiled" and load(n) is not None else "numpy") for n in names}
    table["threads"] = threads()
    if load("matmul") is not None:
        from . import blas
        table["blas"] = blas.describe()
        table["blas_threads"] = blas.threads()
    from .. import cuda
    if cuda.is_available():
        twin = "cuda" if _mode == "compiled" else "numpy"
        table["gpu"] = {**{n: twin for n in names + ("adamw",)}, "matmul": "cupy.matmul (cuBLAS)"}
    return table


from .softmax import softmax_forward, softmax_backward  # noqa: E402
from .layer_norm import layer_norm_forward, layer_norm_backward  # noqa: E402
from .gelu import gelu_forward, gelu_backward  # noqa: E402
from .matmul import matmul  # noqa: E402
from .attention import attention_forward, attention_backward  # noqa: E402
from .adamw import adamw_step  # noqa: E402
from .dropout import keep_mask  # noqa: E402
