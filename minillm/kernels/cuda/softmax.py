"""Row softmax on the GPU: csrc/cuda/softmax.cu, one warp per row, 8 rows a block. The dispatcher
(kernels/softmax.py) has checked shapes and dtypes; these check only that each array is float32 on
the GPU, what the kernel reads."""
import numpy

from ... import backend
from ..softmax import _mask_rows, _rows
from . import NULL, Kernel, blocks, check, float4_ok

ROWS_PER_BLOCK = 8  # WARPS_PER_BLOCK in softmax.cu
_forward = Kernel("softmax", "softmax_forward")
_backward = Kernel("softmax", "softmax_backward")


def softmax_forward(x, mask=None):
    """softmax(x + mask) over the last axis. x: float32 CuPy (..., N); mask: additive, float32,
    broadcastable to x, read at its own size (the kernel takes each row's offset into it)."""
    if mask is not None:
        check("softmax", "mask", mask)
    if x.size == 0:
        return backend.cupy.zeros_like(x)
    rows = _rows(x)
    values, offsets = _mask_rows(mask, x.shape) if mask is not None else (NULL, NULL)
    y = backend.cupy.empty_like(rows)
    n = rows.shape[1]
    _forward(blocks(len(rows), ROWS_PER_BLOCK), (32 * ROWS_PER_BLOCK,),
             rows, values, offsets, y, numpy.int64(len(rows)), numpy.int32(n),
             float4_ok(n, rows, y, values if mask is not None else None))
    return y.reshape(x.shape)


def softmax_backward(y, grad):
    """dL/dx = y * (grad - rowsum(grad * y)) from y = softmax(x) and grad = dL/dy, both (..., N)."""
    check("softmax backward", "grad", grad)
    if y.size == 0:
        return backend.cupy.zeros_like(y)
    rows, grad_rows = _rows(y), _rows(grad)
    dx = backend.cupy.empty_like(rows)
    n = rows.shape[1]
    _backward(blocks(len(rows), ROWS_PER_BLOCK), (32 * ROWS_PER_BLOCK,),
              rows, grad_rows, dx, numpy.int64(len(rows)), numpy.int32(n), float4_ok(n, rows, grad_rows, dx))
    return dx.reshape(y.shape)
