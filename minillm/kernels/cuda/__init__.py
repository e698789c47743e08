"""The CUDA twins of the kernels, for float32 arrays on the GPU (CuPy).

Each kernel is CUDA C++ in csrc/cuda/<name>.cu, beside a module here of the same name that checks
its inputs, allocates the outputs with CuPy, picks the launch geometry and launches. The dispatch
functions of minillm/kernels/<name>.py call these modules for float32 CuPy arrays
(``kernels.gpu``). CuPy compiles a source with NVRTC at its first launch in a process and keeps the
binary in its disk cache (~/.cupy/kernel_cache), so only the first run on a machine waits for it.

Launches go on CuPy's current stream and return at once: nothing here waits for the GPU or reads
device memory from the host, so a training step's kernels queue back to back (and a CUDA graph
can capture them).
"""
import functools
import pathlib

import numpy

from ... import backend

_PACKAGE = pathlib.Path(__file__).resolve().parents[2]  # .../minillm
SOURCE_DIRS = (
    _PACKAGE / "_cuda_src",            # an installed wheel: setup.py ships csrc/cuda as minillm/_cuda_src
    _PACKAGE.parent / "csrc" / "cuda",  # a source checkout or an editable install
)
OPTIONS = ("--std=c++17",)
NULL = numpy.uint64(0)  # a null pointer argument (CuPy passes None as garbage, not as NULL)
_DEFAULT_SHARED = 48 * 1024  # dynamic shared memory a block may take without asking first
_MAX_BLOCKS = 2**31 - 1      # CUDA's limit on gridDim.x: the kernels walk any size grid-stride


def source_path(name):
    """The file csrc/cuda/<name>.cu, wherever minillm is installed."""
    for folder in SOURCE_DIRS:
        path = folder / f"{name}.cu"
        if path.is_file():
            return path
    raise FileNotFoundError(f"CUDA source {name}.cu is in none of {', '.join(map(str, SOURCE_DIRS))}")


@functools.cache
def source(name):
    """The code of csrc/cuda/<name>.cu as NVRTC compiles it, common.cuh pasted in place of its
    #include: NVRTC then needs no include path, and CuPy's cache, which keys on the code, sees a
    change to the header as a change to every kernel."""
    path = source_path(name)
    header = (path.parent / "common.cuh").read_text()
    return path.read_text().replace('#include "common.cuh"', header)


class Kernel:
    """The ``extern "C"`` kernel ``name`` of csrc/cuda/<source>.cu, compiled at its first launch.

    ``shared`` is the dynamic shared memory, in bytes, each block of it takes; past 48 KiB a kernel
    must ask for it before it launches. ``Kernel.every`` lists every kernel a wrapper may launch
    (tests/test_cuda_sources.py finds each name in the compiled PTX)."""

    every = []

    def __init__(self, source, name, shared=0):
        self.source, self.name, self.shared = source, name, shared
        self._kernel = None
        self._devices = set()  # the devices on which the shared memory limit has been raised
        Kernel.every.append(self)

    def __call__(self, grid, block, *args):
        """Launch on CuPy's current device and stream. args, in the kernel's order: CuPy arrays
        (passed as device pointers), NULL, or NumPy scalars of the parameter's exact C type:
        numpy.int32 for int, numpy.int64 for long long, numpy.float32 for float (a Python int
        would go as 64 bits and a Python float as a double)."""
        cupy = backend.cupy
        if self._kernel is None:
            self._kernel = cupy.RawKernel(source(self.source), self.name, options=OPTIONS)
        if self.shared > _DEFAULT_SHARED:
            device = cupy.cuda.runtime.getDevice()
            if device not in self._devices:
                self._kernel.max_dynamic_shared_size_bytes = self.shared
                self._devices.add(device)
        self._kernel(grid, block, args, shared_mem=self.shared)


def blocks(items, per_block):
    """The grid, (blocks,), that gives each of ``items`` work items to one of ``per_block`` slots."""
    return (max(1, min(-(-items // per_block), _MAX_BLOCKS)),)


def float4_ok(n, *arrays):
    """numpy.int32(1) when rows of n floats in these arrays (None skipped) may be read as float4:
    n a multiple of 4 and every array 16-byte aligned. A kernel's ``vec4`` argument."""
    aligned = all(a.data.ptr % 16 == 0 for a in arrays if a is not None)
    return numpy.int32(n % 4 == 0 and aligned)


def check(kernel, name, array, dtype=numpy.float32):
    """``array`` itself, or a TypeError naming it unless it is a CuPy array of ``dtype``: the CUDA
    kernels read device memory of one type, and a host array here is a mix of devices."""
    if not backend.on_device(array):
        raise TypeError(f"{kernel}: {name} is a host array ({type(array).__name__}) but the input is on the GPU")
    if array.dtype != dtype:
        raise TypeError(f"{kernel}: {name} must be {numpy.dtype(dtype)} on the GPU, got {array.dtype}")
    return array
