"""Row softmax over the last axis, with an optional additive mask.

    y_i = exp(x_i + m_i - c) / sum_j exp(x_j + m_j - c),  c = max_j (x_j + m_j)

Subtracting the row maximum c changes nothing mathematically and keeps exp from overflowing.
A row whose entries are all -inf (fully masked) has no maximum; it gives zeros, not NaN.

Backward (y = softmax(x), g = dL/dy):  dL/dx_i = y_i * (g_i - sum_j g_j y_j)
NumPy twins below; the compiled twins are csrc/softmax.pyx and, on the GPU, csrc/cuda/softmax.cu.
"""
import numpy

from .. import backend
from . import compiled, gpu


def softmax_forward_numpy(x, mask=None):
    xp = backend.array_module(x)
    if mask is not None:
        x = x + mask
    if x.size == 0:  # max has nothing to reduce
        return xp.zeros_like(x)
    row_max = x.max(axis=-1, keepdims=True)
    row_max = xp.where(xp.isfinite(row_max), row_max, 0)  # an all -inf row: exp(-inf) = 0 below
    e = xp.exp(x - row_max)
    total = e.sum(axis=-1, keepdims=True)
    return e / xp.where(total == 0, 1, total)


def softmax_backward_numpy(y, grad):
    return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


def _check_float(x, name):
    if x.dtype not in (numpy.float32, numpy.float64):
        raise TypeError(f"softmax: {name} must be float32 or float64, got {x.dtype}")


def _rows(x):
    """x as a C-contiguous (rows, n) array (a copy only if x is not C-contiguous)."""
    return backend.array_module(x).ascontiguousarray(x).reshape(-1, x.shape[-1])


def _check_mask(mask, shape, dtype):
    if mask.dtype != dtype:
        raise TypeError(f"softmax: mask dtype {mask.dtype} differs from input dtype {dtype}")
    try:
        if numpy.broadcast_shapes(mask.shape, shape) != shape:
            raise ValueError
    except ValueError:
        raise ValueError(f"softmax: mask of shape {mask.shape} does not broadcast to input shape {shape}") from None


def _mask_rows(mask, shape):
    """The mask as (flat C-contiguous values, offset of each input row's n mask values).

    Only the mask's last axis is expanded to n; its leading axes keep their own sizes and each of
    the prod(shape[:-1]) input rows gets the offset of the mask row it broadcasts from.
    """
    xp = backend.array_module(mask)
    mask = mask.reshape((1,) * (len(shape) - mask.ndim) + mask.shape)
    n = shape[-1]
    values = xp.ascontiguousarray(xp.broadcast_to(mask, mask.shape[:-1] + (n,)))
    first = xp.arange(0, values.size, n, dtype=numpy.int64).reshape(values.shape[:-1])
    return values.reshape(-1), xp.ascontiguousarray(xp.broadcast_to(first, shape[:-1]).reshape(-1))


def softmax_forward(x, mask=None):
    """softmax(x + mask) over the last axis. x: (..., N); mask: additive, broadcastable to x,
    same dtype. The compiled twins never materialize a broadcast mask at x's size."""
    device = gpu("softmax", x)
    if device is not None:
        return device.softmax_forward(x, mask)
    kernel = compiled("softmax", x)
    if kernel is None:
        return softmax_forward_numpy(x, mask)
    _check_float(x, "input")
    if x.ndim == 0:
        raise ValueError("softmax: input must have at least one dimension")
    if mask is not None:
        _check_mask(mask, x.shape, x.dtype)
    if x.size == 0:
        return numpy.zeros_like(x)
    values, offsets = _mask_rows(mask, x.shape) if mask is not None else (None, None)
    rows = _rows(x)
    y = numpy.empty_like(rows)
    kernel.forward(rows, values, offsets, y)
    return y.reshape(x.shape)


def softmax_backward(y, grad):
    """dL/dx from y = softmax(x) and dL/dy, both (..., N)."""
    device = gpu("softmax", y, grad)
    if device is not None:
        return device.softmax_backward(y, grad)
    kernel = compiled("softmax", y, grad)
    if kernel is None:
        return softmax_backward_numpy(y, grad)
    _check_float(y, "output")
    if grad.shape != y.shape or grad.dtype != y.dtype:
        raise ValueError(f"softmax backward: grad {grad.shape} {grad.dtype} must match output {y.shape} {y.dtype}")
    if y.ndim == 0:
        raise ValueError("softmax backward: output must have at least one dimension")
    if y.size == 0:
        return numpy.zeros_like(y)
    rows = _rows(y)
    out = numpy.empty_like(rows)
    kernel.backward(rows, _rows(grad), out)
    return out.reshape(y.shape)
