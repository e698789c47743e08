"""Module and Parameter, as in torch.nn: a tree of named sub-modules that owns named parameters.

Attribute assignment registers things: ``self.dense = Linear(...)`` adds a child called "dense",
``self.weight = Parameter(...)`` a parameter called "weight", so the dotted names of
``named_parameters()`` and ``state_dict()`` follow the attribute names, exactly as Hugging Face's
BERT names its weights (``encoder.layer.0.attention.self.query.weight``).
"""
import contextlib
from collections import OrderedDict

from .. import backend
from ..tensor import observers
from ..tensor import Tensor

# The modules whose forward is running, innermost last: debug and profile tools read it.
running = []


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires_grad by default)."""
    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of every layer. Subclasses set attributes in __init__ and define forward()."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        if not observers:
            return self.forward(*args, **kwargs)
        running.append(self)
        try:
            return self.forward(*args, **kwargs)
        finally:
            running.pop()

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # ---- the tree --------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and every descendant, depth first."""
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            yield name, module
            children = [(f"{name}.{k}" if name else k, m) for k, m in module._modules.items()]
            stack.extend(reversed(children))

    def modules(self):
        return (m for _, m in self.named_modules())

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self):
        """(dotted name, Parameter) pairs, each parameter once even if shared (tied weights)."""
        seen = set()
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    @contextlib.contextmanager
    def evaluating(self):
        """``with model.evaluating():`` eval mode inside (dropout off), and after, whatever mode the
        model was in: what evaluation, prediction and explanation run in."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def apply(self, fn):
        """Call fn on every module, children first (as torch's Module.apply, for initialization)."""
        for m in reversed(list(self.modules())):
            fn(m)
        return self

    # ---- device and dtype ----------------------------------------------------------------------
    def to(self, *args, dtype=None, device=None):
        """Move every parameter (and its gradient) to ``device`` and/or cast it to a float ``dtype``,
        in place, as torch's ``model.to("cuda")``; returns self. Parameters stay the same objects,
        so an optimizer built before the move still holds them (build it after, as in torch, so
        its state is created on the new device)."""
        for arg in args:
            if isinstance(arg, (str, backend.Device)):
                device = arg
            else:
                dtype = arg
        if device is not None:
            backend.module_for(device)  # an unavailable device fails here, before anything moves
        for p in self.parameters():
            for t in (p, p.grad):
                if t is not None:
                    t.data = backend.to_device(t.data, t.device if device is None else device,
                                               None if dtype is None else backend.numpy.dtype(dtype))
        return self

    def cuda(self, device="cuda"):
        return self.to(device)

    def cpu(self):
        return self.to("cpu")

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self):
        """Dotted name -> array (the live arrays, not copies)."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters by name.

        strict: every parameter must be given and every key must be a parameter; otherwise a
        KeyError lists the missing and unexpected keys. A shape mismatch is always a ValueError
        naming the key and both shapes. Returns (missing, unexpected) as lists of names.
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, value in state.items():
            if name not in own:
                continue
            p = own[name]
            array = value.data if isinstance(value, Tensor) else value
            if tuple(array.shape) != p.shape:
                raise ValueError(f"load_state_dict: {name} has shape {tuple(array.shape)} in the checkpoint, "
                                 f"{p.shape} in the model")
            # in place: optimizers and tied weights keep referring to the same array
            p.data[...] = backend.to_device(array, p.device, p.dtype)
        return missing, unexpected

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())

    # ---- printing ---------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules named "0", "1", ... (BERT's ``encoder.layer.3``)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

