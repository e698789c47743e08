"""Layer norm over the last axis of x: (R, N) rows, forward and backward.

Forward, per row:   mu = mean(x),  rstd = 1 / sqrt(var(x) + eps),  xhat = (x - mu) * rstd,
                    y = xhat * w + b
It returns mu and rstd so the backward need not recompute them (llm.c's layernorm, term by term).
Backward, per row, with g = dL/dy:
    dL/db = sum over rows of g           dL/dw = sum over rows of g * xhat
    dxhat = g * w
    dL/dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
(the two means are the gradient flowing through mu and through rstd.)
"""
from .. import backend


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


def layer_norm_forward(x, weight, bias, eps):
    return layer_norm_forward_numpy(x, weight, bias, eps)


def layer_norm_backward(grad, x, weight, mean, rstd):
    return layer_norm_backward_numpy(grad, x, weight, mean, rstd)
