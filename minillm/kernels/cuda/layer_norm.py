"""Layer norm on the GPU: csrc/cuda/layer_norm.cu. Rows get a warp each (forward, and dx in the
backward); dweight and dbias, sums down the columns, get 32 columns and one chunk of rows a block,
then one thread a column adds the chunks' partial sums in order."""
import numpy

from ... import backend
from ..layer_norm import _check, layer_norm_backward_numpy, layer_norm_forward_numpy
from . import NULL, Kernel, blocks, check, float4_ok

ROWS_PER_BLOCK = 8  # WARPS_PER_BLOCK in layer_norm.cu
COLUMNS, ROW_WARPS = 32, 8  # the column sums' block, as in layer_norm.cu
MAX_CHUNKS = 256  # chunks of rows for the column sums: enough blocks to fill the GPU, few partial sums
_forward = Kernel("layer_norm", "layer_norm_forward")
_backward = Kernel("layer_norm", "layer_norm_backward")
_columns = Kernel("layer_norm", "layer_norm_backward_columns")
_finish = Kernel("layer_norm", "layer_norm_backward_finish")


def _operands(x, weight, name="layer_norm"):
    if x.ndim != 2:
        raise ValueError(f"{name}: x must be (rows, features), got shape {x.shape}")
    x = _check(x, "x")
    if weight is not None:
        weight = _check(check(name, "weight", weight), "weight", x.dtype, x.shape[1:])
    return x, weight


def layer_norm_forward(x, weight, bias, eps):
    """x: float32 CuPy (R, N); weight, bias: (N,) or None. Returns y (R, N), mean (R,), rstd (R,)."""
    x, weight = _operands(x, weight)
    if bias is not None:
        bias = _check(check("layer_norm", "bias", bias), "bias", x.dtype, x.shape[1:])
    if not eps >= 0:
        raise ValueError(f"layer_norm: eps must be >= 0, got {eps}")
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


def layer_norm_backward(grad, x, weight, mean, rstd):
    """grad, x: float32 CuPy (R, N); weight (N,) or None; mean, rstd (R,). Returns dx, dweight, dbias."""
    x, weight = _operands(x, weight, "layer_norm backward")
    grad = _check(check("layer_norm backward", "grad", grad), "grad", x.dtype, x.shape)
    mean = _check(check("layer_norm backward", "mean", mean), "mean", x.dtype, x.shape[:1])
    rstd = _check(check("layer_norm backward", "rstd", rstd), "rstd", x.dtype, x.shape[:1])
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
