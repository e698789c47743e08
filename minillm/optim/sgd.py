"""Stochastic gradient descent with momentum, as torch.optim.SGD: the simple baseline.

    d = g + weight_decay * p                        (L2 penalty folded into the gradient)
    b <- d                       at the first step,
    b <- momentum * b + (1 - dampening) * d         after it
    d = d + momentum * b  if nesterov  else  b      (only when momentum != 0)
    p <- p - lr * d
"""
from .. import backend
from .optimizer import Optimizer


class SGD(Optimizer):
    """torch.optim.SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False)."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check_group(self, group):
        for name in ("lr", "momentum", "weight_decay"):
            if not group[name] >= 0:
                raise ValueError(f"SGD: invalid {name} {group[name]} (must be >= 0)")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: nesterov momentum requires a momentum > 0 and zero dampening")

    def step(self):
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.data
                if wd != 0:
                    d = d + wd * p.data
                if momentum != 0:
                    state = self.state.setdefault(p, {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = backend.array_module(d).array(d, copy=True)
                    else:
                        buf *= momentum
                        buf += (1 - group["dampening"]) * d
                    d = d + momentum * buf if group["nesterov"] else buf
                p.data -= lr * d
