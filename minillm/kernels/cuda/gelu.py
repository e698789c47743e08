"""GELU on the GPU: csrc/cuda/gelu.cu, elementwise, grid-stride, 4 values a thread at a time.

Beyond the host twins' signature, ``bias`` fuses a Linear layer's bias add: gelu(x + bias) with
bias (N,) added along x's last axis, without x + bias ever going to memory. The backward then
gives the gradient of the pre-activation x + bias; the bias's own is that summed over the rows.
The dispatcher (kernels/gelu.py) has checked x, grad and approximate for the calls it makes."""
import numpy

from ... import backend
from ..gelu import _flat
from . import NULL, Kernel, blocks, check, float4_ok

THREADS = 256
_forward = Kernel("gelu", "gelu_forward")
_backward = Kernel("gelu", "gelu_backward")


def _bias(x, bias, kernel):
    """bias checked against x's last axis and made contiguous, or None."""
    if bias is None:
        return None
    check(kernel, "bias", bias)
    if x.ndim == 0 or bias.shape != x.shape[-1:]:
        raise ValueError(f"{kernel}: bias must have shape {x.shape[-1:]} (x's last axis), got {bias.shape}")
    return backend.cupy.ascontiguousarray(bias)


def _geometry(n, bias, columns, *arrays):
    """(grid, block, vec4): 4 values a thread at a time when every array allows float4 and, with a
    bias, rows are whole float4s (so the 4 values share a row and read 4 consecutive biases)."""
    vec4 = float4_ok(n, bias, *arrays) if bias is None or columns % 4 == 0 else numpy.int32(0)
    return blocks(n // 4 if vec4 else n, THREADS), (THREADS,), vec4


def gelu_forward(x, approximate="none", bias=None):
    """gelu(x + bias) elementwise; x float32 CuPy of any shape, bias (x.shape[-1],) or None."""
    bias = _bias(x, bias, "gelu")
    flat = _flat(x)
    y = backend.cupy.empty_like(flat)
    n, columns = flat.size, x.shape[-1] if bias is not None else 1
    if n:
        grid, block, vec4 = _geometry(n, bias, columns, flat, y)
        _forward(grid, block, flat, NULL if bias is None else bias, y, numpy.int64(n), numpy.int32(columns),
                 numpy.int32(approximate == "tanh"), vec4)
    return y.reshape(x.shape)


def gelu_backward(x, grad, approximate="none", bias=None):
    """grad * gelu'(x + bias) elementwise; x and grad float32 CuPy of one shape, bias as forward."""
    bias = _bias(x, bias, "gelu backward")
    flat, grad_flat = _flat(x), _flat(check("gelu backward", "grad", grad))
    dx = backend.cupy.empty_like(flat)
    n, columns = flat.size, x.shape[-1] if bias is not None else 1
    if n:
        grid, block, vec4 = _geometry(n, bias, columns, flat, grad_flat, dx)
        _backward(grid, block, flat, NULL if bias is None else bias, grad_flat, dx, numpy.int64(n),
                  numpy.int32(columns), numpy.int32(approximate == "tanh"), vec4)
    return dx.reshape(x.shape)
