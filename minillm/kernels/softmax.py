"""Row softmax over the last axis, with an optional additive mask.

    y_i = exp(x_i + m_i - c) / sum_j exp(x_j + m_j - c),  c = max_j (x_j + m_j)

Subtracting the row maximum c changes nothing mathematically and keeps exp from overflowing.
A row whose entries are all -inf (fully masked) has no maximum; it gives zeros, not NaN.

Backward (y = softmax(x), g = dL/dy):  dL/dx_i = y_i * (g_i - sum_j g_j y_j)
NumPy twins below; the compiled twin is csrc/softmax.pyx.
"""
from .. import backend
from . import compiled


def softmax_forward_numpy(x, mask=None):
    xp = backend.array_module(x)
    if mask is not None:
        x = x + mask
    row_max = x.max(axis=-1, keepdims=True)
    row_max = xp.where(xp.isfinite(row_max), row_max, 0)  # an all -inf row: exp(-inf) = 0 below
    e = xp.exp(x - row_max)
    total = e.sum(axis=-1, keepdims=True)
    return e / xp.where(total == 0, 1, total)


def softmax_backward_numpy(y, grad):
    return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


def _rows(x, name):
    """x as a C-contiguous (rows, n) array of float32/float64, checked before any nogil code."""
    if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):
        raise TypeError(f"softmax: {name} must be float32 or float64, got {x.dtype}")
    return backend.numpy.ascontiguousarray(x).reshape(-1, x.shape[-1] if x.ndim else 1)


def softmax_forward(x, mask=None):
    """softmax(x + mask) over the last axis. x: (..., N); mask: additive, broadcastable to x."""
    kernel = compiled("softmax", x)
    if kernel is None or x.ndim == 0 or x.size == 0:
        return softmax_forward_numpy(x, mask)
    if mask is not None:
        if mask.dtype != x.dtype:
            raise TypeError(f"softmax: mask dtype {mask.dtype} differs from input dtype {x.dtype}")
        try:
            mask = backend.numpy.broadcast_to(mask, x.shape)
        except ValueError:
            raise ValueError(f"softmax: mask of shape {mask.shape} does not broadcast to input shape {x.shape}") from None
        mask = _rows(mask, "mask")
    rows = _rows(x, "input")
    y = backend.numpy.empty_like(rows)
    kernel.forward(rows, mask, y)
    return y.reshape(x.shape)


def softmax_backward(y, grad):
    """dL/dx from y = softmax(x) and dL/dy, both (..., N)."""
    kernel = compiled("softmax", y, grad)
    if kernel is None or y.ndim == 0 or y.size == 0:
        return softmax_backward_numpy(y, grad)
    if grad.shape != y.shape or grad.dtype != y.dtype:
        raise ValueError(f"softmax backward: grad {grad.shape} {grad.dtype} must match output {y.shape} {y.dtype}")
    rows, grad_rows = _rows(y, "output"), _rows(grad, "grad")
    out = backend.numpy.empty_like(rows)
    kernel.backward(rows, grad_rows, out)
    return out.reshape(y.shape)
