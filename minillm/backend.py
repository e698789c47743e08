"""The one switch between NumPy and CuPy.

Every op asks ``array_module(x)`` for the module ``xp`` that owns its data and calls ``xp.exp``,
``xp.matmul``, ... on it, so the same code runs on host and device arrays. Nothing else in minillm
names ``numpy`` on tensor data.
"""
import numpy

try:  # CuPy is optional: the extras `cuda12` / `cuda13` install it.
    import cupy
except ImportError:
    cupy = None


def array_module(array):
    """numpy for host arrays, cupy for device arrays."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy
    return numpy


def erf(x):
    """The error function, elementwise, from scipy (host) or cupyx (device): NumPy has none."""
    if cupy is not None and isinstance(x, cupy.ndarray):
        from cupyx.scipy.special import erf as device_erf
        return device_erf(x)
    from scipy.special import erf as host_erf
    return host_erf(x)


def is_floating(dtype):
    return numpy.dtype(dtype).kind == "f"
