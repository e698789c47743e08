"""Layer norm over the last axis of x: (R, N) rows, forward and backward.

Forward, per row:   mu = mean(x),  rstd = 1 / sqrt(var(x) + eps),  xhat = (x - mu) * rstd,
                    y = xhat * w + b
It returns mu and rstd so the backward need not recompute them (llm.c's layernorm, term by term).
Backward, per row, with g = dL/dy:
    dL/db = sum over rows of g           dL/dw = sum over rows of g * xhat
    dxhat = g * w
    dL/dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
(the two means are the gradient flowing through mu and through rstd.)
The compiled twins are csrc/layer_norm.pyx and, on the GPU, csrc/cuda/layer_norm.cu.
"""
import numpy

from .. import backend
from . import compiled, gpu, threads

_CHUNKS = 64  # the backward's fixed chunks of rows: plenty to share out, few partial sums to add


def layer_norm_forward_numpy(x, weight, bias, eps):
    xp = backend.array_module(x)
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    rstd = 1 / xp.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
    y = centered * rstd
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, mean[..., 0], rstd[..., 0]


def layer_norm_backward_numpy(grad, x, weight, mean, rstd):
    """Returns (dL/dx, dL/dw, dL/db); x and grad are (R, N), mean and rstd (R,)."""
    xhat = (x - mean[:, None]) * rstd[:, None]
    dxhat = grad * weight if weight is not None else grad
    dx = rstd[:, None] * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                          - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, (grad * xhat).sum(axis=0), grad.sum(axis=0)


def _check(x, name, dtype=None, shape=None):
    if x.dtype not in (numpy.float32, numpy.float64):
        raise TypeError(f"layer_norm: {name} must be float32 or float64, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"layer_norm: {name} dtype {x.dtype} differs from input dtype {dtype}")
    if shape is not None and x.shape != shape:
        raise ValueError(f"layer_norm: {name} must have shape {shape}, got {x.shape}")
    return backend.array_module(x).ascontiguousarray(x)


def layer_norm_forward(x, weight, bias, eps):
    """x: (R, N); weight, bias: (N,) or None. Returns y (R, N), mean (R,), rstd (R,)."""
    device = gpu("layer_norm", x)
    if device is not None:
        return device.layer_norm_forward(x, weight, bias, eps)
    kernel = compiled("layer_norm", x, *(t for t in (weight, bias) if t is not None))
    if kernel is None:
        return layer_norm_forward_numpy(x, weight, bias, eps)
    if x.ndim != 2:
        raise ValueError(f"layer_norm: x must be (rows, features), got shape {x.shape}")
    x = _check(x, "x")
    weight = _check(weight, "weight", x.dtype, x.shape[1:]) if weight is not None else None
    bias = _check(bias, "bias", x.dtype, x.shape[1:]) if bias is not None else None
    if not eps >= 0:
        raise ValueError(f"layer_norm: eps must be >= 0, got {eps}")
    if x.shape[1] == 0:  # nothing to normalize: the twin's NaN mean and rstd
        return layer_norm_forward_numpy(x, weight, bias, eps)
    y = numpy.empty_like(x)
    mean, rstd = numpy.empty(len(x), x.dtype), numpy.empty(len(x), x.dtype)
    kernel.forward(x, weight, bias, float(eps), y, mean, rstd)
    return y, mean, rstd


def layer_norm_backward(grad, x, weight, mean, rstd):
    """grad, x: (R, N); weight (N,) or None; mean, rstd: (R,). Returns dx, dweight, dbias."""
    device = gpu("layer_norm", x)
    if device is not None:
        return device.layer_norm_backward(grad, x, weight, mean, rstd)
    kernel = compiled("layer_norm", grad, x, mean, rstd)
    if kernel is None:
        return layer_norm_backward_numpy(grad, x, weight, mean, rstd)
    if x.ndim != 2:
        raise ValueError(f"layer_norm backward: x must be (rows, features), got shape {x.shape}")
    x = _check(x, "x")
    grad = _check(grad, "grad", x.dtype, x.shape)
    weight = _check(weight, "weight", x.dtype, x.shape[1:]) if weight is not None else None
    mean = _check(mean, "mean", x.dtype, x.shape[:1])
    rstd = _check(rstd, "rstd", x.dtype, x.shape[:1])
    if x.size == 0:
        return layer_norm_backward_numpy(grad, x, weight, mean, rstd)
    dx = numpy.empty_like(x)
    parts = numpy.zeros((2, min(len(x), _CHUNKS), x.shape[1]), x.dtype)  # dweight, dbias per chunk of rows
    xhat = numpy.empty((threads(), x.shape[1]), x.dtype)  # one scratch row per thread
    kernel.backward(grad, x, weight, mean, rstd, dx, parts[0], parts[1], xhat)
    return dx, parts[0].sum(axis=0), parts[1].sum(axis=0)
