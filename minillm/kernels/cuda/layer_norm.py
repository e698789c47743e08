"""Layer norm on the GPU: csrc/cuda/layer_norm.cu. Rows get a warp each (forward, and dx in the
backward); dweight and dbias, sums down the columns, get 32 columns and one chunk of rows a block,
then one thread a column adds the chunks' partial sums in order. The dispatcher (kernels/layer_norm.py)
has checked shapes and dtypes."""
import numpy

from ... import backend
from ..layer_norm import layer_norm_backward_numpy, layer_norm_forward_numpy
from . import NULL, Kernel, blocks, check, float4_ok

ROWS_PER_BLOCK = 8  # WARPS_PER_BLOCK in layer_norm.cu
COLUMNS, ROW_WARPS = 32, 8  # the column sums' block, as in layer_norm.cu
MAX_CHUNKS = 256  # chunks of rows for the column sums: enough blocks to fill the GPU, few partial sums
_forward = Kernel("layer_norm", "layer_norm_forward")
_backward = Kernel("layer_norm", "layer_norm_backward")
_columns = Kernel("layer_norm", "layer_norm_backward_columns")
_finish = Kernel("layer_norm", "layer_norm_backward_finish")


def _on_gpu(kernel, **arrays):
    """The arrays (None kept) as contiguous float32 CuPy arrays, or a TypeError naming one that is not
    float32 on the GPU; the dispatcher (kernels/layer_norm.py) has checked their shapes."""
    cupy = backend.cupy
    return [None if a is None else cupy.ascontiguousarray(check(kernel, name, a)) for name, a in arrays.items()]


def layer_norm_forward(x, weight, bias, eps):
    """x: float32 CuPy (R, N); weight, bias: (N,) or None. Returns y (R, N), mean (R,), rstd (R,)."""
    x, weight, bias = _on_gpu("layer_norm", x=x, weight=weight, bias=bias)
    rows, n = x.shape
    if n == 0:  # nothing to normalize: the twin's NaN mean and rstd
        return layer_norm_forward_numpy(x, weight, bias, eps)
    cupy = backend.cupy
    y = cupy.empty_like(x)
    mean, rstd = cupy.empty(rows, numpy.float32), cupy.empty(rows, numpy.float32)
    if rows:
        _forward(blocks(rows, ROWS_PER_BLOCK), (32 * ROWS_PER_BLOCK,),
                 x, NULL if weight is None else weight, NULL if bias is None else bias, numpy.float32(eps),
                 y, mean, rstd, numpy.int64(rows), numpy.int32(n), float4_ok(n, x, y, weight, bias))
    return y, mean, rstd


def add_layer_norm_forward(x, residual, weight, bias, eps):
    """layer_norm_forward of x + residual. One CuPy add, then the kernel: the pass over memory
    that the CPU's fused loop saves costs little at a GPU's bandwidth."""
    x, residual = _on_gpu("layer_norm", x=x, residual=residual)
    total = x + residual
    return layer_norm_forward(total, weight, bias, eps) + (total,)


def layer_norm_backward(grad, x, weight, mean, rstd):
    """grad, x: float32 CuPy (R, N); weight (N,) or None; mean, rstd (R,). Returns dx, dweight, dbias."""
    grad, x, weight, mean, rstd = _on_gpu("layer_norm backward", grad=grad, x=x, weight=weight, mean=mean, rstd=rstd)
    if x.size == 0:
        return layer_norm_backward_numpy(grad, x, weight, mean, rstd)
    cupy = backend.cupy
    rows, n = x.shape
    dx = cupy.empty_like(x)
    _backward(blocks(rows, ROWS_PER_BLOCK), (32 * ROWS_PER_BLOCK,),
              grad, x, NULL if weight is None else weight, mean, rstd, dx, numpy.int64(rows), numpy.int32(n),
              float4_ok(n, grad, x, dx, weight))
    chunks = min(MAX_CHUNKS, -(-rows // 64))
    rows_per_chunk = -(-rows // chunks)
    chunks = -(-rows // rows_per_chunk)  # no empty chunk at the end
    parts = cupy.empty((2, chunks, n), numpy.float32)  # dweight, dbias per chunk of rows
    _columns((-(-n // COLUMNS), chunks), (COLUMNS, ROW_WARPS),
             grad, x, mean, rstd, parts[0], parts[1], numpy.int64(rows), numpy.int32(n), numpy.int64(rows_per_chunk))
    sums = cupy.empty((2, n), numpy.float32)
    _finish(blocks(n, 256), (256,), parts[0], parts[1], sums[0], sums[1], numpy.int32(chunks), numpy.int32(n))
    return dx, sums[0], sums[1]
