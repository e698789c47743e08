"""GELU, z = x * Phi(x), exact (erf) and tanh forms, forward and backward.

    exact:  Phi(x) = (1 + erf(x / sqrt 2)) / 2          dz/dx = Phi(x) + x * phi(x)
    tanh:   t = tanh(sqrt(2/pi) * (x + 0.044715 x^3))   z = x (1 + t) / 2
            dz/dx = (1 + t)/2 + x (1 - t^2)/2 * sqrt(2/pi) * (1 + 3 * 0.044715 x^2)
    phi(x) = exp(-x^2 / 2) / sqrt(2 pi), the standard normal density.
BERT uses the exact form ("gelu"); "gelu_new" in Hugging Face configs is the tanh form.
"""
import math

from .. import backend

SQRT_HALF = math.sqrt(0.5)
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
APPROXIMATIONS = ("none", "tanh")


def _check(approximate):
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"gelu: approximate={approximate!r}, expected one of {APPROXIMATIONS}")


def gelu_forward_numpy(x, approximate="none"):
    _check(approximate)
    xp = backend.array_module(x)
    if approximate == "tanh":
        return 0.5 * x * (1 + xp.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + backend.erf(x * SQRT_HALF))


def gelu_backward_numpy(x, grad, approximate="none"):
    _check(approximate)
    xp = backend.array_module(x)
    if approximate == "tanh":
        t = xp.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
        dz = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
    else:
        dz = 0.5 * (1 + backend.erf(x * SQRT_HALF)) + x * xp.exp(-0.5 * x * x) * INV_SQRT_2PI
    return grad * dz


def gelu_forward(x, approximate="none"):
    return gelu_forward_numpy(x, approximate)


def gelu_backward(x, grad, approximate="none"):
    return gelu_backward_numpy(x, grad, approximate)
