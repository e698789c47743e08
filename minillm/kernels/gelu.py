"""GELU, z = x * Phi(x), exact (erf) and tanh forms, forward and backward.

    exact:  Phi(x) = (1 + erf(x / sqrt 2)) / 2          dz/dx = Phi(x) + x * phi(x)
    tanh:   t = tanh(sqrt(2/pi) * (x + 0.044715 x^3))   z = x (1 + t) / 2
            dz/dx = (1 + t)/2 + x (1 - t^2)/2 * sqrt(2/pi) * (1 + 3 * 0.044715 x^2)
    phi(x) = exp(-x^2 / 2) / sqrt(2 pi), the standard normal density.
BERT uses the exact form ("gelu"); "gelu_new" in Hugging Face configs is the tanh form.
The compiled twins are csrc/gelu.pyx and, on the GPU, csrc/cuda/gelu.cu (which can also add a
bias first, gelu(x + b), without the sum going to memory: minillm.kernels.cuda.gelu).
"""
import math

import numpy

from .. import backend
from . import compiled, gpu

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


def _flat(x, name, dtype=None, shape=None):
    if x.dtype not in (numpy.float32, numpy.float64):
        raise TypeError(f"gelu: {name} must be float32 or float64, got {x.dtype}")
    if dtype is not None and (x.dtype, x.shape) != (dtype, shape):
        raise ValueError(f"gelu backward: grad {x.shape} {x.dtype} must match input {shape} {dtype}")
    return backend.array_module(x).ascontiguousarray(x).reshape(-1)


def gelu_forward(x, approximate="none"):
    """gelu(x), elementwise, any shape."""
    _check(approximate)
    device = gpu("gelu", x)
    if device is not None:
        return device.gelu_forward(x, approximate)
    kernel = compiled("gelu", x)
    if kernel is None:
        return gelu_forward_numpy(x, approximate)
    flat = _flat(x, "input")
    y = numpy.empty_like(flat)
    kernel.forward(flat, y, approximate == "tanh")
    return y.reshape(x.shape)


def gelu_backward(x, grad, approximate="none"):
    """grad * gelu'(x), elementwise; x and grad of the same shape and dtype."""
    _check(approximate)
    device = gpu("gelu", x, grad)
    if device is not None:
        return device.gelu_backward(x, grad, approximate)
    kernel = compiled("gelu", x, grad)
    if kernel is None:
        return gelu_backward_numpy(x, grad, approximate)
    flat, grad_flat = _flat(x, "input"), _flat(grad, "grad", x.dtype, x.shape)
    dx = numpy.empty_like(flat)
    kernel.backward(flat, grad_flat, dx, approximate == "tanh")
    return dx.reshape(x.shape)
