"""Products on the GPU: cupy.matmul (cuBLAS), except while a CUDA graph is captured. CuPy refuses
to call cuBLAS then, and cublas.py makes the same call itself, on a handle made before the capture."""
from ... import backend
from ...cuda import is_capturing
from . import cublas


def matmul(a, b, transpose_a=False, transpose_b=False, bias=None):
    """op(a) @ op(b) (+ bias) for float32 CuPy arrays, as kernels.matmul (which has checked the shapes)."""
    a = a.swapaxes(-1, -2) if transpose_a else a
    b = b.swapaxes(-1, -2) if transpose_b else b
    out = cublas.matmul(a, b) if is_capturing() else backend.cupy.matmul(a, b)
    if bias is not None:
        out += bias
    return out
