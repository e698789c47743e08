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

import numpy

from .. import backend, cuda, kernels
from ..kernels.adamw import adamw_step, adamw_step_scalars, scalar_row
from ..kernels.cuda.adamw import SCALARS
from .optimizer import Optimizer


class AdamW(Optimizer):
    """torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, capturable=False).

    capturable=True lets a CUDA graph capture step() (minillm.training.cuda_graph). A replay repeats
    every launch with the arguments it was captured with, so on float32 GPU parameters the update
    reads its scalars (learning rate, bias corrections) from a device table, one row per parameter,
    that the host fills: step() itself, one copy per step, except while a graph is captured; then it
    records which parameters it updated, and prepare_replay() counts their step and fills their rows
    before each replay. The numbers are capturable=False's. On the host the option changes nothing.
    Unlike torch's group option it belongs to the optimizer (the table spans the groups), and state
    dicts do not carry it.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, capturable=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.capturable = bool(capturable)
        self._table = None     # (parameters, 7) float32 on the GPU: row i is parameter i's scalar_row
        self._captured = None  # the updates a captured step() launched: what prepare_replay advances

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
            adamw_step(p.data, p.grad.data, state["exp_avg"], state["exp_avg_sq"], **_scalars(group, state["step"]))

    def prepare_replay(self):
        """Before each replay of a graph that captured step(): count a step for every parameter it
        updates and write their scalars into the device table (one copy, on the current stream)."""
        if self._captured is None:
            raise RuntimeError("AdamW.prepare_replay(): no step() was captured since the optimizer was built or "
                               "loaded (capture one with AdamW(capturable=True) on the GPU)")
        self._advance(self._captured)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._captured = None  # new state arrays: a graph captured before updates the old ones

    def _updates(self):
        """(row, group, parameter) of every parameter with a gradient; row is its index across the
        groups: its row of the table and its key in state_dict()."""
        pairs = ((group, p) for group in self.param_groups for p in group["params"])
        return [(row, group, p) for row, (group, p) in enumerate(pairs) if p.grad is not None]

    def _state(self, p):
        state = self.state.get(p)
        if state is None:
            xp = backend.array_module(p.data)
            state = self.state[p] = {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
        return state

    def _step_from_table(self, updates):
        if cuda.is_capturing():
            if self._table is None or any(p not in self.state for _, _, p in updates):
                raise RuntimeError("AdamW: a step can be captured only after an eager one, which creates the state "
                                   "and the device table (created inside the capture, each replay would zero them)")
            self._captured = updates
        else:
            self._advance(updates)
        for row, _, p in updates:
            state = self.state[p]
            adamw_step_scalars(p.data, p.grad.data, state["exp_avg"], state["exp_avg_sq"], self._table[row])

    def _advance(self, updates):
        """Count a step for each update and write its scalar_row into the device table: one host to
        device copy on the current stream, queued after the launches that read the previous rows."""
        rows = numpy.zeros((sum(len(g["params"]) for g in self.param_groups), SCALARS), numpy.float32)
        for row, group, p in updates:
            state = self._state(p)
            state["step"] += 1
            rows[row] = scalar_row(**_scalars(group, state["step"]))
        device = updates[0][2].data.device
        with device:
            if self._table is None:
                self._table = backend.cupy.asarray(rows)
            else:
                self._table.set(rows, stream=backend.cupy.cuda.get_current_stream())


def _scalars(group, t):
    """adamw_step's scalars for a parameter of ``group`` at its step ``t`` (the corrections folded in)."""
    lr, (beta1, beta2) = group["lr"], group["betas"]
    return dict(decay=1 - lr * group["weight_decay"], beta1=beta1, beta2=beta2, step_size=lr / (1 - beta1 ** t),
                bias_correction2_sqrt=math.sqrt(1 - beta2 ** t), eps=group["eps"])
