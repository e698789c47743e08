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
The element-wise work runs in one fused pass per parameter (minillm/kernels/adamw.py).
"""
import math

from .. import backend
from ..kernels.adamw import adamw_step
from .optimizer import Optimizer


class AdamW(Optimizer):
    """torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

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
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(p)
                if state is None:
                    xp = backend.array_module(p.data)
                    state = self.state[p] = {"step": 0, "exp_avg": xp.zeros_like(p.data),
                                             "exp_avg_sq": xp.zeros_like(p.data)}
                state["step"] += 1
                t = state["step"]
                adamw_step(p.data, p.grad.data, state["exp_avg"], state["exp_avg_sq"],
                           decay=1 - lr * wd, beta1=beta1, beta2=beta2,
                           step_size=lr / (1 - beta1 ** t), bias_correction2_sqrt=math.sqrt(1 - beta2 ** t),
                           eps=eps)
