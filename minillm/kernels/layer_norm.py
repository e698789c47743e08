"""Layer norm over the last axis of x: (R, N) rows, forward and backward.

Forward, per row:   mu = mean(x),  rstd = 1 / sqrt(var(x) + eps),  xhat = (x - mu) * rstd,
                    y = xhat * w + b
(mu as x0 + mean(x - x0), exact on a constant row: _mean says why; var in a second pass, over x - mu.)
It returns mu and rstd so the backward need not recompute them (llm.c's layernorm, term by term).
Backward, per row, with g = dL/dy:
    dL/db = sum over rows of g           dL/dw = sum over rows of g * xhat
    dxhat = g * w
    dL/dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
(the two means are the gradient flowing through mu and through rstd.)
Add & Norm, a post-LN transformer's LayerNorm(x + residual): add_layer_norm_forward writes the sum
and normalizes it row by row while the row is still in cache, one pass over memory instead of two
(the add's, then the norm's); the backward is layer_norm_backward at the sum, and the residual's
gradient is the sum's, dL/dx itself.
NumPy twins first; the compiled twins are csrc/layer_norm.pyx and, on the GPU, csrc/cuda/layer_norm.cu.
"""
import numpy

from .. import backend
from . import dispatch

_CHUNKS = 64  # the backward's fixed chunks of rows: plenty to share out, few partial sums to add


def layer_norm_forward_numpy(x, weight, bias, eps):
    xp = backend.array_module(x)
    mean = _mean(x)
    centered = x - mean
    rstd = 1 / xp.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
    y = centered * rstd
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, mean[..., 0], rstd[..., 0]


def add_layer_norm_forward_numpy(x, residual, weight, bias, eps):
    total = x + residual
    return layer_norm_forward_numpy(total, weight, bias, eps) + (total,)


def _mean(x):
    """The mean of each row (R, 1), as x0 + mean(x - x0) with x0 the row's first value (0 if that is
    not finite): exactly x0 on a constant row, as torch's Welford mean. A plain sum's rounding leaves
    the mean of n copies of c an ulp off (n c is rarely a float), the centered row an ulp, and its
    variance an ulp squared: not small beside BERT's eps of 1e-12 (the float32 rstd of such rows fell
    to a quarter of 1/sqrt(eps) at |c| ~ 1, to 1/3000 at |c| ~ 1000; in the compiled twin, whose
    vectorized sum rounds more, and in this one). Shifting costs a subtraction in the same pass."""
    xp = backend.array_module(x)
    first = x[:, :1] if x.shape[1] else xp.zeros((len(x), 1), x.dtype)
    shift = xp.where(xp.isfinite(first), first, 0)
    return shift + (x - shift).mean(axis=-1, keepdims=True)


def layer_norm_backward_numpy(grad, x, weight, mean, rstd):
    """Returns (dL/dx, dL/dw, dL/db); x and grad are (R, N), mean and rstd (R,)."""
    xhat = (x - mean[:, None]) * rstd[:, None]
    dxhat = grad * weight if weight is not None else grad
    dx = rstd[:, None] * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                          - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, (grad * xhat).sum(axis=0), grad.sum(axis=0)


def _check(kernel, name, a, x, shape):
    """A TypeError or ValueError naming ``name`` unless ``a`` is an array of x's dtype, place and ``shape``."""
    dispatch.check_float("layer_norm", name, a)
    dispatch.one_place(kernel, x, **{name: a})
    if a.dtype != x.dtype:
        raise TypeError(f"layer_norm: {name} dtype {a.dtype} differs from input dtype {x.dtype}")
    if a.shape != shape:
        raise ValueError(f"layer_norm: {name} must have shape {shape}, got {a.shape}")


def _check_x(kernel, x):
    if x.ndim != 2:
        raise ValueError(f"{kernel}: x must be (rows, features), got shape {x.shape}")
    dispatch.check_float("layer_norm", "x", x)


def _check_affine(x, weight, bias, eps):
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None:
            _check("layer_norm", name, a, x, x.shape[1:])
    if not eps >= 0:
        raise ValueError(f"layer_norm: eps must be >= 0, got {eps}")


@dispatch.kernel("layer_norm", numpy=layer_norm_forward_numpy)
def layer_norm_forward(x, weight, bias, eps):
    """x: (R, N) float32 or float64; weight, bias: (N,) of x's dtype, or None; eps >= 0.
    Returns y (R, N), mean (R,), rstd (R,)."""
    _check_x("layer_norm", x)
    _check_affine(x, weight, bias, eps)
    return x, weight, bias, eps


@dispatch.kernel("layer_norm", numpy=add_layer_norm_forward_numpy)
def add_layer_norm_forward(x, residual, weight, bias, eps):
    """layer_norm_forward of x + residual, the sum and the norm in one pass. x, residual: (R, N) of
    one dtype; weight, bias, eps as layer_norm_forward's. Returns y, mean, rstd and the sum (R, N),
    the x that layer_norm_backward takes."""
    _check_x("layer_norm", x)
    _check("layer_norm", "residual", residual, x, x.shape)
    _check_affine(x, weight, bias, eps)
    return x, residual, weight, bias, eps


@dispatch.kernel("layer_norm", numpy=layer_norm_backward_numpy)
def layer_norm_backward(grad, x, weight, mean, rstd):
    """grad, x: (R, N); weight (N,) or None; mean, rstd: (R,), all of x's dtype, mean and rstd
    layer_norm_forward's for x (others give the gradient of no function). Returns dx, dweight, dbias."""
    _check_x("layer_norm backward", x)
    _check("layer_norm backward", "grad", grad, x, x.shape)
    if weight is not None:
        _check("layer_norm backward", "weight", weight, x, x.shape[1:])
    _check("layer_norm backward", "mean", mean, x, x.shape[:1])
    _check("layer_norm backward", "rstd", rstd, x, x.shape[:1])
    return grad, x, weight, mean, rstd


def _contiguous(a):
    return None if a is None else numpy.ascontiguousarray(a)


@layer_norm_forward.compiled
def _layer_norm_forward_compiled(compiled, x, weight, bias, eps):
    if x.shape[1] == 0:  # nothing to normalize: the twin's NaN mean and rstd
        return layer_norm_forward_numpy(x, weight, bias, eps)
    x, weight, bias = _contiguous(x), _contiguous(weight), _contiguous(bias)
    y, mean, rstd = _outputs(x)
    compiled.forward(x, weight, bias, float(eps), y, mean, rstd)
    return y, mean, rstd


@add_layer_norm_forward.compiled
def _add_layer_norm_forward_compiled(compiled, x, residual, weight, bias, eps):
    if x.shape[1] == 0:
        return add_layer_norm_forward_numpy(x, residual, weight, bias, eps)
    x, residual, weight, bias = (_contiguous(a) for a in (x, residual, weight, bias))
    (y, mean, rstd), total = _outputs(x), numpy.empty_like(x)
    compiled.add_forward(x, residual, weight, bias, float(eps), total, y, mean, rstd)
    return y, mean, rstd, total


def _outputs(x):
    """Empty y (R, N), mean (R,) and rstd (R,) for rows x."""
    return numpy.empty_like(x), numpy.empty(len(x), x.dtype), numpy.empty(len(x), x.dtype)


@layer_norm_backward.compiled
def _layer_norm_backward_compiled(compiled, grad, x, weight, mean, rstd):
    if x.size == 0:
        return layer_norm_backward_numpy(grad, x, weight, mean, rstd)
    grad, x, weight, mean, rstd = (_contiguous(a) for a in (grad, x, weight, mean, rstd))
    dx = numpy.empty_like(x)
    parts = numpy.zeros((2, min(len(x), _CHUNKS), x.shape[1]), x.dtype)  # dweight, dbias per chunk of rows
    compiled.backward(grad, x, weight, mean, rstd, dx, parts[0], parts[1])
    return dx, parts[0].sum(axis=0), parts[1].sum(axis=0)
