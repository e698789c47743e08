"""The kernel dispatcher: the mode, which twin runs, and the one input check in front of all three.

Every kernel of minillm/kernels/<module>.py has three twins that take the same arguments:

    NumPy twin      <name>_numpy in the kernel's module: the readable definition, written against xp
    compiled twin   minillm._C.<module>, built from csrc/<module>.pyx, through an adapter in the
                    kernel's module that lays out the arrays and allocates the outputs
    CUDA twin       minillm.kernels.cuda.<module>.<name>, launching csrc/cuda/<module>.cu

``@kernel(module, numpy=twin)`` makes the public kernel from its input check: a function with the
kernel's signature and docstring that raises a TypeError or ValueError naming the bad argument and
returns the arguments the twins take (defaults filled in). ``@<kernel>.compiled`` then adds the
compiled twin's adapter. A call runs the check, then, by the first array:

    float32 CuPy array, compiled mode            -> the CUDA twin
    host array, compiled mode, minillm._C built  -> the compiled twin
    otherwise                                    -> the NumPy twin (float64 on a GPU, or numpy mode)

A kernel made with ``cuda=False`` has no CUDA twin: on a GPU its NumPy twin runs, in CuPy (dropout, whose
elementwise ops are the kernel there; variable-length attention, whose twin calls the CUDA attention
once per sequence).
So a bad shape or dtype gives the same error whichever twin would have run, and the checks
(``one_place`` among them: every array where the first is) hold before any nogil or device code.
``MINILLM_KERNELS=numpy`` (or ``with use("numpy"):``) runs the NumPy twins everywhere, on host and
GPU arrays alike: that is how the tests hold one twin against the other.

The compiled twins run on ``threads()`` threads (set them with OMP_NUM_THREADS or ``set_threads``):
row kernels split rows across OpenMP's pool, attention and batched matmul run single-threaded BLAS
calls inside it, and one big 2-D product runs on BLAS's own threads, as many. blas.py says why, and
what the BLAS under them is.
"""
import contextlib
import functools
import importlib
import os

import numpy

from .. import backend, cuda
from . import blas

MODES = ("compiled", "numpy")
_mode = os.environ.get("MINILLM_KERNELS", "compiled")
if _mode not in MODES:
    raise ValueError(f"MINILLM_KERNELS={_mode!r}: expected one of {MODES}")
_loaded = {}


def load(name):
    """The compiled module ``minillm._C.<name>``, or None when it was not built."""
    if name not in _loaded:
        try:
            with blas.openmp_defaults():  # libgomp reads its settings as the first module loads it
                _loaded[name] = importlib.import_module(f"minillm._C.{name}")
        except ImportError:
            _loaded[name] = None
    return _loaded[name]


def mode():
    """The current mode: 'compiled' or 'numpy'."""
    return _mode


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


def gpu(module, first):
    """The CUDA twins' module ``minillm.kernels.cuda.<module>`` when they run on ``first``: a
    float32 CuPy array in compiled mode; else None. The CUDA kernels are float32 only; float64
    (gradcheck's dtype) runs the NumPy twin on the GPU."""
    if _mode != "compiled" or not backend.on_device(first) or first.dtype != numpy.float32:
        return None
    return importlib.import_module(f"minillm.kernels.cuda.{module}")


def info():
    """Which twin each kernel runs on host arrays, the threads the compiled ones use, the -march
    level they were built for (setup.py's MINILLM_MARCH), the BLAS under them, and, where there is a
    GPU, what runs on float32 device arrays ("gpu")."""
    names = ("softmax", "layer_norm", "gelu", "matmul", "attention", "dropout")
    table = {n: ("compiled" if _mode == "compiled" and load(n) is not None else "numpy") for n in names}
    table["threads"] = threads()
    if load("build_info") is not None:
        table["march"] = load("build_info").MARCH
    if load("matmul") is not None:
        table["blas"] = blas.describe()
        table["blas_threads"] = (threads() if blas.threaded_products() else 1) if blas.threads() else None
    if cuda.is_available():
        twin = "cuda" if _mode == "compiled" else "numpy"
        table["gpu"] = {**{n: twin for n in names + ("adamw",)}, "matmul": "cupy.matmul (cuBLAS)",
                        "dropout": "numpy (in CuPy)"}
    return table


class Kernel:
    """A public kernel: ``check`` in front of the twin chosen for the arguments (see the module)."""

    def __init__(self, module, check, numpy_twin, cuda=True):
        functools.update_wrapper(self, check)  # the check's name, signature and docstring
        self.module, self.check, self.numpy, self.has_cuda = module, check, numpy_twin, cuda
        self._compiled = self._cuda = None

    def compiled(self, adapter):
        """Register ``adapter(compiled_module, *args)``, the compiled twin (a decorator)."""
        self._compiled = adapter
        return adapter

    def with_numpy(self, numpy_twin):
        """This kernel with another NumPy twin: for a kernel whose definition lives with its caller
        (AdamW's update, minillm/optim/adamw.py)."""
        twin = Kernel(self.module, self.check, numpy_twin, self.has_cuda)
        twin._compiled = self._compiled
        return twin

    def __call__(self, *args, **kwargs):
        args = self.check(*args, **kwargs)
        first = args[0]
        if _mode == "compiled":
            if not backend.on_device(first):
                module = load(self.module)
                if module is not None and self._compiled is not None:
                    return self._compiled(module, *args)
            elif first.dtype == numpy.float32 and self.has_cuda:
                if self._cuda is None:
                    self._cuda = getattr(importlib.import_module(f"minillm.kernels.cuda.{self.module}"), self.__name__)
                return self._cuda(*args)
        if self.numpy is None:
            raise TypeError(f"{self.__name__}: no fused twin runs on a {type(first).__name__} of {first.dtype} in "
                            f"{_mode} mode, and this kernel's NumPy twin lives with its caller")
        return self.numpy(*args)


def kernel(module, numpy, cuda=True):
    """Decorate the input check of a kernel of minillm/kernels/<module>.py: the public kernel of the
    check's name, whose NumPy twin is ``numpy`` (see the module docstring). cuda=False: no CUDA twin,
    the NumPy twin runs on GPU arrays too, in CuPy (dropout: its elementwise ops are the kernel)."""
    return lambda check: Kernel(module, check, numpy, cuda)


# ---- checks shared by the kernels' input checks ---------------------------------------------------

def check_float(kernel, name, array):
    """A TypeError naming ``name`` unless ``array`` is float32 or float64 (what every twin computes in)."""
    if array.dtype != numpy.float32 and array.dtype != numpy.float64:
        raise TypeError(f"{kernel}: {name} must be float32 or float64, got {array.dtype}")


def one_place(kernel, first, **arrays):
    """A TypeError naming the first of ``arrays`` (None skipped) that is not where ``first`` is: the
    twins read all their arrays from one place, the host or the GPU."""
    on_device = backend.on_device(first)
    for name, array in arrays.items():
        if array is not None and backend.on_device(array) != on_device:
            where = "a host array" if on_device else "a GPU array"
            raise TypeError(f"{kernel}: {name} is {where} ({type(array).__name__}) but the input is "
                            f"{'on the GPU' if on_device else 'on the host'}")
