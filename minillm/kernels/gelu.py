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
    xp = backend.array_module(x)
    if approximate == "tanh":
        t = xp.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
        sech2 = 1 - t * t
        # where x^2 overflows (|x| > 1e19 in float32) sech2 is 0 and the term's limit is 0, not 0 * inf = NaN
        slope = xp.where(sech2 == 0, 0, 0.5 * x * sech2 * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x))
        dz = 0.5 * (1 + t) + slope
    else:
        dz = 0.5 * (1 + backend.erf(x * SQRT_HALF)) + x * xp.exp(-0.5 * x * x) * INV_SQRT_2PI
    return grad * dz


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
