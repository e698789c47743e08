"""AdamW (Loshchilov & Hutter): Adam with weight decay decoupled from the gradient.

For each parameter p with gradient g, at step t (1, 2, ...), exactly as torch.optim.AdamW:

    p   <- p * (1 - lr * weight_decay)              decay the weight itself, not the gradient
    m   <- beta1 * m + (1 - beta1) * g              first moment (torch computes it as m.lerp_(g, 1 - beta1))
    v   <- beta2 * v + (1 - beta2) * g^2            second moment
    m^  =  m / (1 - beta1^t)                        bias corrections: m and v start at 0
    v^  =  v / (1 - beta2^t)
    p   <- p - lr * m^ / (sqrt(v^) + eps)           eps outside the square root

torch folds the corrections into two scalars, step_size = lr / (1 - beta1^t) and
sqrt(1 - beta2^t), and so do we: p <- p - step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
``adamw_update`` below is that, in Python. It is the NumPy twin of the fused kernel
(kernels/adamw.py: csrc/adamw.pyx, csrc/cuda/adamw.cu), which step() runs where it can: one pass
over p, g, m, v instead of eight. CUDA-graph capture (capturable=True) is in capturable.py.
"""
import math

from .. import backend, cuda, kernels
from ..kernels.adamw import adamw_step
from .capturable import CapturableSteps
from .optimizer import Optimizer


def adamw_update(param, grad, exp_avg, exp_avg_sq, decay, beta1, beta2, step_size, bias_correction2_sqrt, eps):
    """One AdamW update of one parameter, in place (NumPy or CuPy arrays of one shape and dtype)."""
    xp = backend.array_module(param)
    param *= decay                                  # p <- p * (1 - lr * weight_decay)
    exp_avg += (1 - beta1) * (grad - exp_avg)       # m <- beta1 * m + (1 - beta1) * g
    exp_avg_sq *= beta2                             # v <- beta2 * v + (1 - beta2) * g^2
    exp_avg_sq += (1 - beta2) * grad * grad
    denom = xp.sqrt(exp_avg_sq)                     # sqrt(v^) + eps, times sqrt(1 - beta2^t)
    denom /= bias_correction2_sqrt
    denom += eps
    param -= step_size * exp_avg / denom            # p <- p - lr * m^ / (sqrt(v^) + eps)


update = adamw_step.with_numpy(adamw_update)  # the fused kernel where it runs, adamw_update elsewhere


class AdamW(CapturableSteps, Optimizer):
    """torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, capturable=False).

    capturable=True lets a CUDA graph capture step() (minillm.training.cuda_graph): on float32 GPU
    parameters the update then reads its scalars from device memory (capturable.py). On the host the
    option changes nothing. Unlike torch's group option it belongs to the optimizer (the table spans
    the groups), and state dicts do not carry it.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, capturable=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.capturable = bool(capturable)

    def _check_group(self, group):
        if not group["lr"] >= 0:
            raise ValueError(f"AdamW: invalid learning rate {group['lr']} (must be >= 0)")
        if not group["eps"] >= 0:
            raise ValueError(f"AdamW: invalid eps {group['eps']} (must be >= 0)")
        if len(group["betas"]) != 2 or not all(0 <= b < 1 for b in group["betas"]):
            raise ValueError(f"AdamW: invalid betas {group['betas']} (two numbers in [0, 1))")
        if not group["weight_decay"] >= 0:
            raise ValueError(f"AdamW: invalid weight_decay {group['weight_decay']} (must be >= 0)")

    def step(self):
        """One update of every parameter that has a gradient (parameters without one are skipped)."""
        updates = self._updates()
        if not updates:
            return
        first = updates[0][2].data
        if self.capturable and kernels.gpu("adamw", first) is not None:
            return self._step_from_table(updates)
        if backend.on_device(first) and cuda.is_capturing():
            raise RuntimeError("AdamW.step() inside a CUDA-graph capture needs AdamW(capturable=True) and float32 "
                               "parameters on the GPU: the graph would replay this step's learning rate and bias "
                               "corrections forever")
        for _, group, p in updates:
            state = self._state(p)
            state["step"] += 1
            update(p.data, p.grad.data, state["exp_avg"], state["exp_avg_sq"], **self._scalars(group, state["step"]))

    def _updates(self):
        """(row, group, parameter) of every parameter with a gradient; row is its index across the
        groups: its row of the capture table and its key in state_dict()."""
        pairs = ((group, p) for group in self.param_groups for p in group["params"])
        return [(row, group, p) for row, (group, p) in enumerate(pairs) if p.grad is not None]

    def _state(self, p):
        state = self.state.get(p)
        if state is None:
            xp = backend.array_module(p.data)
            state = self.state[p] = {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
        return state

    @staticmethod
    def _scalars(group, t):
        """The update's scalars for a parameter of ``group`` at its step ``t`` (the corrections folded in)."""
        lr, (beta1, beta2) = group["lr"], group["betas"]
        return dict(decay=1 - lr * group["weight_decay"], beta1=beta1, beta2=beta2, step_size=lr / (1 - beta1 ** t),
                    bias_correction2_sqrt=math.sqrt(1 - beta2 ** t), eps=group["eps"])
