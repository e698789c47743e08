"""GELU, z = x * Phi(x), exact (erf) and tanh forms, forward and backward.

    exact:  Phi(x) = (1 + erf(x / sqrt 2)) / 2          dz/dx = Phi(x) + x * phi(x)
    tanh:   t = tanh(sqrt(2/pi) * (x + 0.044715 x^3))   z = x (1 + t) / 2
            dz/dx = (1 + t)/2 + x (1 - t^2)/2 * sqrt(2/pi) * (1 + 3 * 0.044715 x^2)
    phi(x) = exp(-x^2 / 2) / sqrt(2 pi), the standard normal density.
BERT uses the exact form ("gelu"); "gelu_new" in Hugging Face configs is the tanh form.
NumPy twins first; the compiled twins are csrc/gelu.pyx and, on the GPU, csrc/cuda/gelu.cu (which
can also add a bias first, gelu(x + b), without the sum going to memory: minillm.kernels.cuda.gelu).
"""
import math

import numpy

from .. import backend
from . import dispatch

SQRT_HALF = math.sqrt(0.5)
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
APPROXIMATIONS = ("none", "tanh")


def gelu_forward_numpy(x, approximate="none"):
    xp = backend.array_module(x)
    if approximate == "tanh":
        return 0.5 * x * (1 + xp.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + backend.erf(x * SQRT_HALF))


def gelu_backward_numpy(x, grad, approximate="none"):
    """grad * dz/dx. The tanh form in the compiled twin's rewrite (csrc/gelu.pyx): (1 + t) / 2 = s =
    sigmoid(2u) and 1 - t^2 = 4 s (1 - s). With t itself, 1 - t^2 cancels to 0 from x = -5.4 (float32;
    -7.2 in float64), where the derivative is tiny but not 0, and a grad of -inf there gave NaN
    (-inf * 0) where the compiled twin gave +inf (torch 2.13 gives NaN from x = -5.06: its t). The
    exact form's derivative is only 0 where exp(-x^2 / 2) is, in both twins."""
    xp = backend.array_module(x)
    if approximate == "tanh":
        s = _sigmoid_2u(x)
        s1s = s * (1 - s)
        # where x^2 overflows (|x| > 1e19 in float32) s (1 - s) is 0 and the term's limit is 0, not 0 * inf
        # = NaN; at x = +-inf itself it is 0 * inf = NaN, as in the exact form, the compiled twin and torch
        slope = xp.where((s1s == 0) & xp.isfinite(x), 0,
                         2 * x * s1s * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x))
        dz = s + slope
    else:
        dz = 0.5 * (1 + backend.erf(x * SQRT_HALF)) + x * xp.exp(-0.5 * x * x) * INV_SQRT_2PI
    return grad * dz


def _sigmoid_2u(x):
    """s = (1 + tanh(u)) / 2 = 1 / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3): exp(-2u) overflows
    to inf for u << 0, and s = 1 / inf = 0 is the limit."""
    xp = backend.array_module(x)
    with backend.numpy.errstate(over="ignore"):
        return 1 / (1 + xp.exp(-2 * SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))


def _check_approximate(approximate):
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"gelu: approximate={approximate!r}, expected one of {APPROXIMATIONS}")


@dispatch.kernel("gelu", numpy=gelu_forward_numpy)
def gelu_forward(x, approximate="none"):
    """gelu(x), elementwise; x float32 or float64 of any shape, approximate "none" (erf) or "tanh"."""
    _check_approximate(approximate)
    dispatch.check_float("gelu", "input", x)
    return x, approximate


@dispatch.kernel("gelu", numpy=gelu_backward_numpy)
def gelu_backward(x, grad, approximate="none"):
    """grad * gelu'(x), elementwise; x and grad of the same shape and dtype."""
    _check_approximate(approximate)
    dispatch.check_float("gelu", "input", x)
    dispatch.one_place("gelu backward", x, grad=grad)
    if (grad.dtype, grad.shape) != (x.dtype, x.shape):
        raise ValueError(f"gelu backward: grad {grad.shape} {grad.dtype} must match input {x.shape} {x.dtype}")
    return x, grad, approximate


def _flat(x):
    """x as a flat C-contiguous array (a copy only if x is not C-contiguous)."""
    return backend.array_module(x).ascontiguousarray(x).reshape(-1)


@gelu_forward.compiled
def _gelu_forward_compiled(compiled, x, approximate):
    flat = _flat(x)
    y = numpy.empty_like(flat)
    compiled.forward(flat, y, approximate == "tanh")
    return y.reshape(x.shape)


@gelu_backward.compiled
def _gelu_backward_compiled(compiled, x, grad, approximate):
    flat = _flat(x)
    dx = numpy.empty_like(flat)
    compiled.backward(flat, _flat(grad), dx, approximate == "tanh")
    return dx.reshape(x.shape)
