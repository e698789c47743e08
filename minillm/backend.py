"""The one switch between NumPy and CuPy, and the devices they stand for.

Every op asks ``array_module(x)`` for the module ``xp`` that owns its data and calls ``xp.exp``,
``xp.matmul``, ... on it, so the same code runs on host and device arrays. Nothing else in minillm
names ``numpy`` on tensor data.

A ``Device`` names where an array lives, as torch.device does: ``cpu`` (a NumPy array) or
``cuda:N`` (a CuPy array on GPU N). Arrays cross between them only in ``to_device`` (called by
``Tensor.to``, ``Module.to`` and ``mm.tensor(..., device=)``) and ``to_host`` (``.numpy()``,
``.item()``, saving a checkpoint), so a training step on the GPU never copies behind the user's back.
"""
import contextlib

import numpy

try:  # CuPy is optional: the extras `cuda12` / `cuda13` install it.
    import cupy
except ImportError:
    cupy = None


class Device:
    """``Device("cpu")``, ``Device("cuda")`` (GPU 0), ``Device("cuda:1")``; equal to its string."""
    __slots__ = ("type", "index")

    def __init__(self, spec="cpu"):
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        kind, _, index = str(spec).partition(":")
        if kind not in ("cpu", "cuda") or (kind == "cpu" and index) or (index and not index.isdigit()):
            raise ValueError(f"unknown device {spec!r}: expected 'cpu', 'cuda' or 'cuda:N'")
        self.type = kind
        self.index = int(index or 0) if kind == "cuda" else None

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device({str(self)!r})"

    def __eq__(self, other):
        try:
            other = Device(other)
        except ValueError:
            return NotImplemented
        return (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash(str(self))


CPU = Device("cpu")


def array_module(array):
    """numpy for host arrays, cupy for device arrays."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy
    return numpy


def on_device(array):
    """Whether ``array`` lives on a GPU (a CuPy array)."""
    return cupy is not None and isinstance(array, cupy.ndarray)


def device_of(array):
    return Device(f"cuda:{array.device.id}") if on_device(array) else CPU


def gpu_unavailable_reason():
    """None when a GPU is usable, else a sentence saying what is missing: CuPy, or a CUDA device
    under it (minillm.cuda.unavailable_reason)."""
    if cupy is None:
        return ("CuPy is not installed; install minillm with the extra that matches your CUDA "
                "(pip install -e '.[cuda12]' or '.[cuda13]')")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError: no driver, no device, ...
        return f"CuPy is installed but finds no CUDA device ({err})"
    return None if count > 0 else "CuPy is installed but finds no CUDA device"


def gpu_count():
    """How many CUDA devices CuPy can use (0 without CuPy or a GPU)."""
    return cupy.cuda.runtime.getDeviceCount() if gpu_unavailable_reason() is None else 0


def module_for(device):
    """The array module of ``device``; a RuntimeError saying what is missing when it has none."""
    spec, device = device, Device(device)
    if device.type == "cpu":
        return numpy
    reason = gpu_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"device {str(spec)!r} is not available: {reason}")
    if device.index >= gpu_count():
        raise RuntimeError(f"device {str(spec)!r} is not available: there are {gpu_count()} CUDA devices")
    return cupy


def use_device(device):
    """A context in which new CuPy arrays go to ``device`` (nothing to do for the host)."""
    module_for(device)
    device = Device(device)
    return contextlib.nullcontext() if device.type == "cpu" else cupy.cuda.Device(device.index)


def to_device(array, device, dtype=None):
    """``array`` (NumPy, CuPy, list or scalar) on ``device``; the same array when it is already there."""
    xp, device = module_for(device), Device(device)
    if xp is numpy:
        return numpy.asarray(to_host(array), dtype=dtype)
    if on_device(array) and array.device.id == device.index:
        return array if dtype is None or array.dtype == dtype else array.astype(dtype)
    with cupy.cuda.Device(device.index):  # from the host, or a copy from another GPU
        return cupy.array(array, dtype=dtype, copy=True) if on_device(array) else cupy.asarray(array, dtype=dtype)


def to_host(array):
    """A NumPy array of ``array`` (a device array is copied to the host)."""
    return array.get() if on_device(array) else array


def erf(x):
    """The error function, elementwise, from scipy (host) or cupyx (device): NumPy has none."""
    if on_device(x):
        from cupyx.scipy.special import erf as device_erf
        return device_erf(x)
    from scipy.special import erf as host_erf
    return host_erf(x)


def is_floating(dtype):
    return numpy.dtype(dtype).kind == "f"
