"""The AdamW update of one parameter, fused: one pass over p, g, m, v, in place.

The update itself, written in Python, is ``adamw_update`` in minillm/optim/adamw.py: it is this
kernel's NumPy twin, and it lives beside the optimizer so that AdamW reads as its formula. With the
bias corrections folded into scalars by the caller,

    p <- p * decay                                  decay = 1 - lr * weight_decay
    m <- m + (1 - beta1) * (g - m)                  = beta1 m + (1 - beta1) g, as torch's lerp
    v <- beta2 * v + (1 - beta2) * g * g
    p <- p - step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)

The NumPy twin spends eight passes over memory and four temporaries on this; the compiled twin
(csrc/adamw.pyx) reads each element of p, g, m, v once and writes p, m, v once, across threads.
That is the whole speed-up: the update is memory-bound, so fewer passes is faster. On the GPU,
csrc/cuda/adamw.cu does the same in one kernel, rounding each step as the twin does; its variant
adamw_step_scalars reads the scalars from device memory, so a CUDA graph can replay it each step.

``adamw_step`` here runs the fused twins only (where neither runs, in numpy mode or on float64 GPU
arrays, it raises); the optimizer runs ``adamw_step.with_numpy(adamw_update)``, all three.
"""
import numpy

from . import dispatch


def _check_arrays(param, grad, exp_avg, exp_avg_sq):
    """Same shape, one float dtype, one place, and writable C-contiguous state, checked before any nogil code."""
    if param.dtype.kind != "f" or param.dtype.itemsize not in (4, 8):
        raise TypeError(f"adamw_step: parameters must be float32 or float64, got {param.dtype}")
    dispatch.one_place("adamw_step", param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    for name, a in (("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if a.shape != param.shape or a.dtype != param.dtype:
            raise ValueError(f"adamw_step: {name} is {a.dtype} {a.shape}, the parameter is {param.dtype} {param.shape}")
    for name, a in (("param", param), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if not (a.flags.c_contiguous and getattr(a.flags, "writeable", True)):  # CuPy has no writeable flag
            raise ValueError(f"adamw_step: {name} must be a writable C-contiguous array (it is updated in place)")


@dispatch.kernel("adamw", numpy=None)
def adamw_step(param, grad, exp_avg, exp_avg_sq, *, decay, beta1, beta2, step_size, bias_correction2_sqrt, eps):
    """Update ``param``, ``exp_avg`` and ``exp_avg_sq`` in place from ``grad`` (all the same shape)."""
    _check_arrays(param, grad, exp_avg, exp_avg_sq)
    return param, grad, exp_avg, exp_avg_sq, decay, beta1, beta2, step_size, bias_correction2_sqrt, eps


@adamw_step.compiled
def _adamw_step_compiled(compiled, param, grad, exp_avg, exp_avg_sq, *scalars):
    if param.size == 0:
        return
    grad = numpy.ascontiguousarray(grad)
    compiled.step(param.reshape(-1), grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1), *scalars)


def scalar_row(decay, beta1, beta2, step_size, bias_correction2_sqrt, eps):
    """adamw_step's scalars as adamw_step_scalars reads them: float32 (decay, 1 - beta1, beta2,
    1 - beta2, step_size, bias_correction2_sqrt, eps), rounded as the CUDA kernel's arguments are."""
    return numpy.array([decay, 1 - beta1, beta2, 1 - beta2, step_size, bias_correction2_sqrt, eps], numpy.float32)


def adamw_step_scalars(param, grad, exp_avg, exp_avg_sq, scalars):
    """adamw_step with its scalars in device memory: ``scalars`` is a scalar_row copied to the
    parameter's GPU. A CUDA graph replays each launch with the arguments it was captured with, so
    what changes every step (the learning rate, the bias corrections) must be read from memory that
    the host rewrites before each replay. Float32 CuPy arrays only: the CUDA twin is the one kernel
    that reads its scalars so; its numbers are adamw_update's (the NumPy twin's) with the same scalars."""
    _check_arrays(param, grad, exp_avg, exp_avg_sq)
    device = dispatch.gpu("adamw", param)
    if device is None:
        raise TypeError(f"adamw_step_scalars: needs float32 CuPy arrays and the compiled kernels (not "
                        f"MINILLM_KERNELS=numpy), got a {type(param).__name__} of {param.dtype}")
    device.adamw_step_scalars(param, grad, exp_avg, exp_avg_sq, scalars)
