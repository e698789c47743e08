"""Matrix products through cuBLAS called directly (ctypes), for CUDA-graph capture.

cuBLAS can be captured into a CUDA graph (cuBLAS docs, "CUDA Graphs Support"), but CuPy 14 will
not try: every CuPy cuBLAS call first sets the handle's stream, and cupy_backends' cublas.setStream
raises NotImplementedError ("calling cuBLAS API during stream capture is currently unsupported")
when that stream is capturing. So while a graph is captured, kernels.matmul sends products here:
the same cublasGemmEx call CuPy's cupy.dot makes for two matrices (cupy/_core/_routines_linalg.pyx,
dot -> tensordot_core -> tensordot_core_v11: float32 in and out, CUBLAS_COMPUTE_32F, operands laid
out by _mat_to_cublas_contiguous), on a handle of minillm's own: bound to the current stream, with
a workspace of its own (cublasSetWorkspace), so cuBLAS allocates nothing inside a capture.

The library is the libcublas CuPy itself loaded. Its handle and workspace are made once per
device by prepare(), which must run before a capture (creating a handle is no stream work). One
workspace serves every product on the handle: they must not run on two streams at once.
"""
import ctypes

import numpy

from ... import backend
from . import check

WORKSPACE_BYTES = 32 * 2**20  # cuBLAS's recommended workspace on Hopper
# From cuBLAS's headers (cublas_api.h, library_types.h): a stable ABI.
CUDA_R_32F = 0
CUBLAS_COMPUTE_32F = 68
CUBLAS_GEMM_DEFAULT, CUBLAS_GEMM_DEFAULT_TENSOR_OP = -1, 99  # CuPy passes the latter from compute capability 8.0

_library = None
_handles = {}  # device id -> _Handle
_ONE, _ZERO = ctypes.c_float(1.0), ctypes.c_float(0.0)  # alpha, beta: host pointers, read at capture


def _cublas():
    """The libcublas CuPy loaded (its cublas module links it), with the signatures used here."""
    global _library
    if _library is None:
        import cupy_backends.cuda.libs.cublas  # noqa: F401 (loads the library CuPy is linked against)
        try:
            with open("/proc/self/maps") as maps:
                paths = sorted({line.split()[-1] for line in maps if "/libcublas.so" in line})
        except OSError:
            paths = []
        name = paths[0] if paths else f"libcublas.so.{backend.cupy.cuda.runtime.runtimeGetVersion() // 1000}"
        lib = ctypes.CDLL(name)
        pointer, integer = ctypes.c_void_p, ctypes.c_int
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(pointer)]
        lib.cublasSetStream_v2.argtypes = [pointer, pointer]
        lib.cublasSetWorkspace_v2.argtypes = [pointer, pointer, ctypes.c_size_t]
        lib.cublasGemmEx.argtypes = [pointer, integer, integer, integer, integer, integer, pointer,
                                     pointer, integer, integer, pointer, integer, integer, pointer,
                                     pointer, integer, integer, integer, integer]
        _library = lib
    return _library


def _check_status(status, call):
    if status != 0:
        raise RuntimeError(f"cuBLAS {call} failed with status {status} (cublasStatus_t)")


class _Handle:
    """A cuBLAS handle and its workspace on the current device, and the stream it is bound to."""

    def __init__(self):
        cupy, lib = backend.cupy, _cublas()
        self.handle = ctypes.c_void_p()
        _check_status(lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        self.workspace = cupy.empty(WORKSPACE_BYTES, numpy.uint8)
        capability = int(cupy.cuda.Device().compute_capability)  # "90" for sm_90
        self.algo = CUBLAS_GEMM_DEFAULT_TENSOR_OP if capability >= 80 else CUBLAS_GEMM_DEFAULT
        self.stream = None

    def bind(self, stream):
        """Bind to ``stream`` (setting a stream resets cuBLAS's workspace, so set ours after it)."""
        if stream.ptr != self.stream:
            lib = _cublas()
            _check_status(lib.cublasSetStream_v2(self.handle, stream.ptr), "cublasSetStream")
            _check_status(lib.cublasSetWorkspace_v2(self.handle, self.workspace.data.ptr, WORKSPACE_BYTES),
                          "cublasSetWorkspace")
            self.stream = stream.ptr
        return self.handle


def prepare():
    """Make the current device's handle and workspace, if not yet made: before a capture."""
    device = backend.cupy.cuda.runtime.getDevice()
    if device not in _handles:
        _handles[device] = _Handle()


def _layout(x, trans):
    """(x or a C-contiguous copy, its cuBLAS transpose flag: 0 CUBLAS_OP_N, 1 CUBLAS_OP_T, leading
    dimension) of a matrix read as column-major: CuPy's _mat_to_cublas_contiguous, step for step."""
    if x.flags.f_contiguous:
        return x, trans, max(x.strides[1] // x.itemsize, x.shape[0])
    if not x.flags.c_contiguous:
        x = x.copy()
    return x, 1 - trans, x.strides[0] // x.itemsize


def _gemm(a, b, c):
    """c = a @ b for float32 matrices a (M, K), b (K, N) and a C-contiguous (M, N) c, as cupy.dot.
    cuBLAS is column-major, where the row-major c is c^T (N, M): so it computes c^T = b^T a^T."""
    (m, k), n = a.shape, b.shape[1]
    if m == 1 and n == 1:  # as CuPy: a dot product, no GEMM
        (a.ravel() * b.ravel()).sum(out=c.reshape(()))
        return
    a_t, trans_a, lda = _layout(a.T, 0)
    b_, trans_b, ldb = _layout(b, 1)
    device = backend.cupy.cuda.runtime.getDevice()
    if device not in _handles:
        raise RuntimeError("kernels.cuda.cublas: no cuBLAS handle on this device: call prepare() before "
                           "capturing a CUDA graph")
    handle = _handles[device]
    status = _cublas().cublasGemmEx(
        handle.bind(backend.cupy.cuda.get_current_stream()), trans_b, trans_a, n, m, k, ctypes.addressof(_ONE),
        b_.data.ptr, CUDA_R_32F, ldb, a_t.data.ptr, CUDA_R_32F, lda, ctypes.addressof(_ZERO),
        c.data.ptr, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, handle.algo)
    _check_status(status, "cublasGemmEx")


def matmul(a, b):
    """a @ b for float32 CuPy arrays a (..., M, K) and b (..., K, N) with broadcast batch axes, any
    strides: a new C-contiguous (..., M, N) array. Two matrices make one cublasGemmEx, exactly as
    cupy.matmul does; a batch makes one per matrix (capture makes their launches cheap)."""
    for name, x in (("a", a), ("b", b)):
        check("matmul (in a CUDA-graph capture)", name, x)
        if x.ndim < 2:
            raise ValueError(f"matmul: {name} must have at least 2 dimensions, got shape {x.shape}")
    (m, k), (k_b, n) = a.shape[-2:], b.shape[-2:]
    if k != k_b:
        raise ValueError(f"matmul: inner dimensions differ: a {a.shape}, b {b.shape}")
    batch = numpy.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    cupy = backend.cupy
    if m * n * k == 0:
        return cupy.zeros(batch + (m, n), numpy.float32)
    c = cupy.empty(batch + (m, n), numpy.float32)
    for index in numpy.ndindex(*batch):
        _gemm(_matrix(a, index), _matrix(b, index), c[index])
    return c


def _matrix(x, index):
    """x's matrix at the batch position ``index`` of the broadcast batch shape."""
    lead = x.shape[:-2]
    index = index[len(index) - len(lead):]
    return x[tuple(i if size > 1 else 0 for i, size in zip(index, lead))]
