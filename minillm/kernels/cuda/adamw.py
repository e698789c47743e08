"""AdamW on the GPU: csrc/cuda/adamw.cu, one grid-stride pass over p, g, m, v, 4 values a thread at a
time. The scalars go to the kernel as float32, as CuPy casts them in the twin's operations, so
kernel and twin round alike (see adamw.cu)."""
import numpy

from ... import backend
from . import Kernel, blocks, check, float4_ok

THREADS = 256
_step = Kernel("adamw", "adamw_step")
_step_scalars = Kernel("adamw", "adamw_step_scalars")
SCALARS = 7  # decay, 1 - beta1, beta2, 1 - beta2, step_size, bias_correction2_sqrt, eps: adamw.cu's order


def adamw_step(param, grad, exp_avg, exp_avg_sq, decay, beta1, beta2, step_size, bias_correction2_sqrt, eps):
    """Update float32 CuPy ``param``, ``exp_avg`` and ``exp_avg_sq`` in place from ``grad``; the
    dispatcher (kernels/adamw.py) has checked shapes, dtypes and that the state is C-contiguous."""
    for name, a in (("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        check("adamw_step", name, a)
    grad = backend.cupy.ascontiguousarray(grad)
    n = param.size
    if n == 0:
        return
    vec4 = float4_ok(n, param, grad, exp_avg, exp_avg_sq)
    f32 = numpy.float32
    _step(blocks(n // 4 if vec4 else n, THREADS), (THREADS,), param, grad, exp_avg, exp_avg_sq, numpy.int64(n),
          f32(decay), f32(1 - beta1), f32(beta2), f32(1 - beta2), f32(step_size), f32(bias_correction2_sqrt),
          f32(eps), vec4)


def adamw_step_scalars(param, grad, exp_avg, exp_avg_sq, scalars):
    """adamw_step with its scalars read by the kernel from ``scalars``, a float32 CuPy array of
    SCALARS values (kernels.adamw.scalar_row) on the parameter's GPU, so that a CUDA graph can
    replay the launch with new ones; kernels/adamw.py has checked the rest."""
    for name, a in (("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq), ("scalars", scalars)):
        check("adamw_step_scalars", name, a)
    if scalars.shape != (SCALARS,) or not scalars.flags.c_contiguous:
        raise ValueError(f"adamw_step_scalars: scalars must be a contiguous ({SCALARS},) array, "
                         f"got shape {scalars.shape}")
    grad = backend.cupy.ascontiguousarray(grad)
    n = param.size
    if n == 0:
        return
    vec4 = float4_ok(n, param, grad, exp_avg, exp_avg_sq)
    _step_scalars(blocks(n // 4 if vec4 else n, THREADS), (THREADS,), param, grad, exp_avg, exp_avg_sq,
                  numpy.int64(n), scalars, vec4)
