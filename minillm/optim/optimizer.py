"""The Optimizer base class: parameter groups, per-parameter state, zero_grad and state dicts.

As in torch.optim, ``params`` is either an iterable of Parameters or of dicts, each dict a *group*
with its own hyper-parameters (``{"params": [...], "weight_decay": 0.0}``); a group's missing
hyper-parameters take the optimizer's defaults. The BERT recipe uses two groups: weight decay on
matrices, none on biases and LayerNorm weights.

``state_dict()`` has torch's layout: parameters are named by their position across the groups
(0, 1, 2, ...), so a state saved from one model loads into a freshly built copy of it.
"""
import copy

from .. import backend
from ..tensor import Tensor


class Optimizer:
    """Subclasses set ``defaults`` via super().__init__ and implement ``step()``."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}  # Parameter -> dict of its state (arrays and the step count)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors or of dicts, got a single Tensor; "
                            "pass model.parameters() or [tensor]")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a group; its parameters must be floating-point leaf Tensors in no other group."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"a parameter group must be a dict with a 'params' key, got {type(group).__name__}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("optimizer can't optimize a non-leaf Tensor (one made by an op)")
            if not backend.is_floating(p.dtype):
                raise TypeError(f"optimizer can only optimize floating-point Tensors, got dtype {p.dtype}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError("some parameters appear in more than one parameter group (or twice in one)")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"parameter group has unknown options {sorted(unknown)}; "
                             f"{type(self).__name__} takes {sorted(self.defaults)}")
        full = {**self.defaults, **group, "params": params}
        self._check_group(full)
        self.param_groups.append(full)

    def _check_group(self, group):
        """Subclasses validate hyper-parameters here (a negative lr, betas outside [0, 1), ...)."""

    def zero_grad(self, set_to_none=True):
        """Forget every parameter's gradient (set it to None, or to zeros with set_to_none=False)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data[...] = 0

    def step(self):
        raise NotImplementedError

    # ---- state dicts ---------------------------------------------------------------------------
    def state_dict(self):
        """{"state": {index: {name: value}}, "param_groups": [{option: value, "params": [index]}]}.

        Arrays are the live state (as torch); deep-copy the result to keep a snapshot.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": [index[id(p)] for p in group["params"]]})
        state = {index[id(p)]: s for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore options and state saved by ``state_dict()`` from an optimizer over the same shapes."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if groups is None or "state" not in state_dict:
            raise ValueError("load_state_dict: expected a dict with 'state' and 'param_groups' keys")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"load_state_dict: the saved state has {len(groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        by_index = {}
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(f"load_state_dict: group {i} has {len(saved['params'])} parameters in the saved "
                                 f"state, {len(own['params'])} in this optimizer")
            by_index.update(zip(saved["params"], own["params"]))
        new_state = {}
        for key, saved in state_dict["state"].items():
            p = by_index.get(int(key))
            if p is None:
                raise ValueError(f"load_state_dict: state for parameter {key}, which no group lists")
            new_state[p] = {name: self._cast_state(value, p, f"parameter {key} {name!r}")
                            for name, value in saved.items()}
        self.state = new_state
        for saved, own in zip(groups, self.param_groups):
            own.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})

    @staticmethod
    def _cast_state(value, p, what):
        """A saved array copied to the parameter's dtype and array module; shape must match."""
        if not hasattr(value, "shape") or value.shape == ():
            return value.item() if hasattr(value, "item") else value
        if tuple(value.shape) != p.shape:
            raise ValueError(f"load_state_dict: {what} has shape {tuple(value.shape)}, "
                             f"the parameter has shape {p.shape}")
        return backend.array_module(p.data).array(value, dtype=p.dtype, copy=True)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])
