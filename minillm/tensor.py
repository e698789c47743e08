"""The tensor and the graph: reverse-mode autograd in one file.

A ``Tensor`` wraps an array (``.data``: numpy, or cupy on a GPU). Every op is a ``Function``: its
``forward`` maps arrays to an array, its ``backward`` maps the output's gradient to the inputs'
gradients. When any input requires a gradient, the call records itself on its output (``_ctx``),
and those records form the graph that ``Tensor.backward`` walks from the output to the leaves.

Three rules keep the engine small and correct:
- A ``Function`` instance belongs to one call, so what it saves for backward is per call
  (a layer used twice in a graph keeps two sets of saved activations).
- Broadcasting is undone in exactly one place, ``sum_to``, applied by the engine to every input
  gradient whose shape differs from its input's. Ops never un-broadcast by hand.
- The graph is walked in topological order found by an explicit stack, never by recursion, so a
  12-layer BERT (tens of thousands of nodes) or 10,000 chained ops cannot hit a recursion limit.

The engine checks what each backward returns (one gradient per input; for an input that requires
grad, an array whose shape the input broadcasts to), and gives every ``.grad`` an array of its own.
"""
import contextlib
import operator

import numpy

from . import backend

_grad_enabled = True
# Tools that watch every op (minillm/debug.py, minillm/profile.py) register here. Each has
# start(fn, phase) and finish(fn, phase, inputs, output); an empty list costs one check per op.
observers = []


class no_grad(contextlib.ContextDecorator):
    """Within this context (or decorated function) ops record no graph, as torch.no_grad."""

    def __enter__(self):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous


def is_grad_enabled():
    return _grad_enabled


def sum_to(grad, shape, name="sum_to"):
    """Sum a gradient of a broadcast result back to the input's ``shape``.

    Broadcasting copies an input along new leading axes and along axes of size 1; each copy
    contributed to the output, so the input's gradient is the sum over those axes. A gradient whose
    shape the input does not broadcast to is a ValueError, headed by ``name`` (the op's).
    """
    lead = grad.ndim - len(shape)
    if lead < 0 or any(n != 1 and n != m for n, m in zip(shape, grad.shape[lead:])):
        raise ValueError(f"{name}: a gradient of shape {tuple(grad.shape)} cannot be summed to the input's "
                         f"shape {tuple(shape)}, which does not broadcast to it")
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class Function:
    """One op: ``forward`` and ``backward`` side by side, one instance per call.

    Subclasses implement
      forward(self, *arrays, **params) -> array      (may call self.save(...) for backward)
      backward(self, grad) -> one gradient per input  (None where no gradient is needed)
    ``self.needs_grad[i]`` says whether input i wants a gradient, so backward can skip work; where
    it is True, backward must return an array of the input's shape or one it broadcasts to.
    Set ``float_only = True`` on ops that are only defined for floating-point inputs.
    """
    float_only = False

    def __init__(self):
        self.inputs = ()
        self.needs_grad = ()
        self.saved = ()

    @property
    def name(self):
        return type(self).__name__.lower()

    def save(self, *arrays):
        self.saved = arrays

    @classmethod
    def apply(cls, *inputs, **params):
        """Run forward on the inputs' arrays and, if a gradient is wanted, record the call."""
        fn = cls()
        arrays = [t.data if isinstance(t, Tensor) else t for t in inputs]
        if backend.cupy is not None:  # where there can be two devices, there must be one per op
            arrays = same_device(fn.name, inputs, arrays)
        if cls.float_only:  # checks Tensors only: raw arrays are constants (class ids, masks)
            for t in inputs:
                if isinstance(t, Tensor) and not backend.is_floating(t.data.dtype):
                    raise TypeError(f"{fn.name} expects floating-point tensors, got dtype {t.data.dtype}")
        if observers:
            _notify("start", fn, "forward")
        try:
            out = fn.forward(*arrays, **params)
        except ValueError as err:  # name the op and the shapes; the frames that failed stay in __cause__
            shapes = ", ".join(str(tuple(a.shape)) for a in arrays if hasattr(a, "shape"))
            raise ValueError(f"{fn.name}: {err} (input shapes {shapes})") from err
        needs = tuple(isinstance(t, Tensor) and t.requires_grad for t in inputs)
        result = Tensor(out)
        if _grad_enabled and any(needs):
            fn.inputs, fn.needs_grad = inputs, needs
            result.requires_grad, result._ctx = True, fn
        else:
            fn.saved = ()
        if observers:
            _notify("finish", fn, "forward", arrays, out)
        return result

    def forward(self, *arrays, **params):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def release(self):
        """Free what forward saved and the inputs; a second backward through this node is an error."""
        self.saved, self.inputs = None, ()


class _HookHandle:
    """What register_post_accumulate_grad_hook returns: ``remove()`` takes the hook off its list."""

    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


class Tensor:
    """An array with an optional gradient and the op that made it.

    ``data``: the array; ``grad``: a Tensor once backward has reached this leaf, else None;
    ``requires_grad``: whether gradients flow to it; ``_ctx``: the Function that produced it
    (None for a leaf). Arithmetic operators and torch-named methods build the graph.
    """
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_retains_grad", "_post_accumulate_grad_hooks",
                 "__weakref__")
    __array_priority__ = 1000  # numpy_array + tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False):
        self.data = data
        self.grad = None
        self._ctx = None
        self._retains_grad = False
        self._post_accumulate_grad_hooks = None  # a list once register_post_accumulate_grad_hook adds one
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ---- basic facts -------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    device = property(lambda self: backend.device_of(self.data))
    is_cuda = property(lambda self: backend.on_device(self.data))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    is_leaf = property(lambda self: self._ctx is None)
    T = property(lambda self: self.transpose(-2, -1) if self.ndim >= 2 else self)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return int(self.data.size)

    def dim(self):
        return self.ndim

    def __len__(self):
        return len(self.data)

    def numpy(self):
        """The host array (a device array is copied to the host)."""
        return backend.to_host(self.data)

    def item(self):
        """The one value as a Python number (from a GPU this waits for the queued work)."""
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def __repr__(self):
        body = numpy.array2string(self.numpy(), separator=", ", prefix="tensor(")
        extra = "" if self.dtype == numpy.float32 or self.dtype == numpy.int64 else f", dtype={self.dtype}"
        if self.device != backend.CPU:
            extra += f", device='{self.device}'"
        if self._ctx is not None:
            extra += f", grad_fn=<{type(self._ctx).__name__}Backward>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def requires_grad_(self, requires_grad=True):
        if requires_grad and not backend.is_floating(self.data.dtype):
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.data.dtype}")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward (leaves always keep theirs)."""
        self._retains_grad = True

    def register_post_accumulate_grad_hook(self, hook):
        """As torch's: ``hook(tensor)`` runs each time backward has accumulated this leaf's gradient
        into ``.grad``: once per backward, with the gradient complete for that backward (the leaf's
        every use in the graph summed), so it may read or replace ``tensor.grad``. Hooks run in the
        order registered. minillm.distributed starts a bucket's allreduce from here. Returns a
        handle whose ``remove()`` unregisters the hook."""
        if not self.is_leaf:
            raise RuntimeError("register_post_accumulate_grad_hook: only a leaf tensor accumulates a gradient; "
                               "this one was made by an op")
        if self._post_accumulate_grad_hooks is None:
            self._post_accumulate_grad_hooks = []
        self._post_accumulate_grad_hooks.append(hook)
        return _HookHandle(self._post_accumulate_grad_hooks, hook)

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def to(self, *args, dtype=None, device=None):
        """This tensor on another device and/or in another dtype, as torch's ``t.to("cuda")``,
        ``t.to(mm.float64)``, ``t.to("cuda", mm.float16)`` or ``t.to(other)`` (other's device and dtype).
        Returns self when nothing changes; gradients flow back through the copy."""
        for arg in args:
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif isinstance(arg, (str, backend.Device)):
                device = arg
            else:
                dtype = arg
        out = self
        if device is not None and backend.Device(device) != self.device:
            out = ops.to_device(out, device)
        if dtype is not None and numpy.dtype(dtype) != out.dtype:
            out = ops.cast(out, numpy.dtype(dtype))
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device="cuda"):
        return self.to(device)

    def float(self):
        return self.to(numpy.float32)

    def double(self):
        return self.to(numpy.float64)

    # ---- the backward pass ---------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``grad`` is the gradient of some scalar with respect to ``self``; it may be omitted
        only when ``self`` holds a single element (then it is 1).
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input of the ops that made it has requires_grad=True")
        xp = backend.array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a grad argument needs a tensor with one element; "
                                   f"this one has shape {self.shape}: pass grad of that shape")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward(): grad has shape {tuple(grad.shape)}, tensor has shape {self.shape}")

        grads = {id(self): grad}  # id(tensor) -> dL/d(tensor), dropped once used
        kept = {}  # id -> array: the memory behind grad and behind each .grad this backward sets
        _keep(grad, kept)
        order = _topological_order(self)
        while order:  # popping lets each tensor be freed as soon as backward is past it
            t = order.pop()
            g = grads.pop(id(t))  # every tensor in the order has one: each backward is checked
            fn = t._ctx
            if fn is None or t._retains_grad:
                hooks = t._post_accumulate_grad_hooks  # the one check the engine pays when no hook is set
                t._accumulate_grad(g, kept, private=bool(hooks))
                if hooks:
                    for hook in tuple(t._post_accumulate_grad_hooks):
                        hook(t)
            if fn is None:
                continue
            if fn.saved is None:
                raise RuntimeError(f"backward through {fn.name} a second time: its saved arrays were freed; "
                                   "pass retain_graph=True to the first backward()")
            if observers:
                _notify("start", fn, "backward")
            in_grads = fn.backward(g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            if observers:
                _notify("finish", fn, "backward", (g,), in_grads)
            if len(in_grads) != len(fn.inputs):
                raise RuntimeError(f"{fn.name}: backward returned {len(in_grads)} gradients for "
                                   f"{len(fn.inputs)} inputs")
            for i, (x, gx, needed) in enumerate(zip(fn.inputs, in_grads, fn.needs_grad)):
                if not needed:
                    continue
                if gx is None or gx.shape != x.data.shape:
                    gx = _input_grad(fn, i, x, gx)
                key = id(x)
                grads[key] = grads[key] + gx if key in grads else gx
            if not retain_graph:
                fn.release()

    def _accumulate_grad(self, g, kept, private=False):
        """Add g to ``.grad``. A new ``.grad`` takes g itself, unless g's memory is already behind
        another ``.grad`` of this backward (``kept``; Add hands one array to both its inputs), g is a
        view the user may not write (a broadcast), or ``private``: the tensor has hooks, which run
        while backward still holds g for other branches and may write ``.grad`` in place. Then it
        takes a copy."""
        xp = backend.array_module(g)
        if g.dtype != self.data.dtype:
            g = g.astype(self.data.dtype)
        if self.grad is None:
            g = xp.asarray(g)
            if private or _memory(g) in kept or not g.flags.c_contiguous or not getattr(g.flags, "writeable", True):
                g = g.copy()
            _keep(g, kept)
            self.grad = Tensor(g)
        else:
            self.grad = Tensor(self.grad.data + g)

    # ---- operators and torch-named methods (the ops live in minillm/ops) -------------------
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __neg__(self): return ops.neg(self)
    def __pow__(self, exponent): return ops.pow(self, exponent)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __getitem__(self, index): return ops.getitem(self, index)

    # Comparisons give boolean tensors outside the graph (they have no gradient).
    def _compare(self, other, op):
        return Tensor(op(self.data, other.data if isinstance(other, Tensor) else other))
    def __eq__(self, other): return self._compare(other, operator.eq)
    def __ne__(self, other): return self._compare(other, operator.ne)
    def __lt__(self, other): return self._compare(other, operator.lt)
    def __le__(self, other): return self._compare(other, operator.le)
    def __gt__(self, other): return self._compare(other, operator.gt)
    def __ge__(self, other): return self._compare(other, operator.ge)
    __hash__ = object.__hash__

    def sum(self, dim=None, keepdim=False): return ops.sum(self, dim, keepdim)
    def mean(self, dim=None, keepdim=False): return ops.mean(self, dim, keepdim)
    def max(self, dim=None, keepdim=False): return ops.max(self, dim, keepdim)
    def argmax(self, dim=None, keepdim=False):
        xp = backend.array_module(self.data)
        out = xp.argmax(self.data, axis=dim, keepdims=keepdim if dim is not None else False)
        return Tensor(out)
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def tanh(self): return ops.tanh(self)
    def relu(self): return ops.relu(self)
    def abs(self): return ops.abs(self)
    def reshape(self, *shape): return ops.reshape(self, _shape_args(shape))
    view = reshape
    def flatten(self, start_dim=0, end_dim=-1):
        start, end = start_dim % max(self.ndim, 1), end_dim % max(self.ndim, 1)
        return self.reshape(self.shape[:start] + (-1,) + self.shape[end + 1:])
    def unsqueeze(self, dim):
        dim = dim % (self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])
    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        dim = dim % self.ndim
        return self if self.shape[dim] != 1 else self.reshape(self.shape[:dim] + self.shape[dim + 1:])
    def transpose(self, dim0, dim1):
        axes = list(range(self.ndim))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return ops.permute(self, tuple(axes))
    def permute(self, *dims): return ops.permute(self, _shape_args(dims))
    def softmax(self, dim): return ops.softmax(self, dim)
    def log_softmax(self, dim): return ops.log_softmax(self, dim)
    def masked_fill(self, mask, value): return ops.masked_fill(self, mask, value)
    def contiguous(self): return self


def same_device(name, inputs, arrays):
    """The op ``name``'s input arrays, all on one device. Tensors on two devices are an error naming
    both; plain arrays (constants such as class ids and masks) are copied to the tensors' device.
    Runs before every op where CuPy is installed, so it compares plain ints: -1 for the host, else
    the GPU's number."""
    cupy, where = backend.cupy, None
    for t in inputs:
        if isinstance(t, Tensor):
            here = t.data.device.id if isinstance(t.data, cupy.ndarray) else -1
            if where is not None and here != where:
                devices = sorted({str(backend.device_of(t.data)) for t in inputs if isinstance(t, Tensor)})
                raise RuntimeError(f"{name}: expected all tensors on one device, got {' and '.join(devices)}")
            where = here
    if where is None:
        return arrays
    moved = list(arrays)
    for i, a in enumerate(arrays):
        if isinstance(a, (numpy.ndarray, cupy.ndarray)) and not isinstance(inputs[i], Tensor):
            if (a.device.id if isinstance(a, cupy.ndarray) else -1) != where:
                moved[i] = backend.to_device(a, "cpu" if where < 0 else f"cuda:{where}")
    return moved


def _input_grad(fn, i, x, gx):
    """What ``fn.backward`` returned for its input ``i`` (Tensor ``x``, which requires grad), summed
    to x's shape; a RuntimeError naming the op and the input where there is none or it cannot be."""
    if gx is None:
        raise RuntimeError(f"{fn.name}: backward returned None for input {i} (shape {x.shape}), "
                           "which requires grad")
    try:
        return sum_to(gx, x.data.shape, f"{fn.name}: backward's gradient for input {i}")
    except ValueError as err:
        raise RuntimeError(str(err)) from err


def _memory(array):
    """The id of the array that owns ``array``'s memory (itself, or the base it is a view of)."""
    return id(array if array.base is None else array.base)


def _keep(array, kept):
    kept[_memory(array)] = array if array.base is None else array.base


def _notify(event, fn, phase, *arrays):
    for observer in observers:
        getattr(observer, event)(fn, phase, *arrays)


def _shape_args(args):
    """Accept both t.reshape(2, 3) and t.reshape((2, 3)), as torch does."""
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)


def _topological_order(root):
    """Tensors reachable from ``root`` through grad-requiring edges, each after its inputs.

    An explicit stack replaces recursion: a node is emitted after all its inputs (post-order).
    Read from the end, the list is a topological order from the output back to the leaves.
    """
    post_order, visited = [], set()
    stack = [(root, False)]
    while stack:
        t, inputs_done = stack.pop()
        if inputs_done:
            post_order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        if t._ctx is not None:
            stack.extend((x, False) for x, needed in zip(t._ctx.inputs, t._ctx.needs_grad)
                         if needed and id(x) not in visited)
    return post_order


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new leaf tensor from a list, scalar or array (copied), with torch's dtype rules:
    Python floats become float32, Python ints int64, arrays keep their dtype unless ``dtype`` is given.
    ``device`` ('cpu', 'cuda', 'cuda:1') defaults to where ``data`` is: the host for lists and NumPy."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is None and not hasattr(data, "dtype"):
        probe = numpy.asarray(data)
        dtype = numpy.float32 if probe.dtype.kind == "f" else probe.dtype
    array = backend.to_device(data, backend.device_of(data) if device is None else device, dtype)
    if array is data:  # to_device returns data itself when it is already there: copy, as torch.tensor
        array = array.copy()
    return Tensor(array, requires_grad=requires_grad)


def as_array(value):
    """The array behind ``value``: a Tensor's data, a device array as it is (CuPy refuses
    numpy.asarray), anything else (lists, scalars, NumPy arrays) as a host array."""
    if isinstance(value, Tensor):
        return value.data
    return value if backend.on_device(value) else numpy.asarray(value)


def as_tensor(value, like=None):
    """``value`` as a Tensor; Python scalars take ``like``'s dtype (no float64 upcasts)."""
    if isinstance(value, Tensor):
        return value
    if like is not None and not hasattr(value, "dtype"):
        xp = backend.array_module(like.data)
        return Tensor(xp.asarray(value, dtype=like.dtype))
    return Tensor(numpy.asarray(value))


# The one import that points up: Tensor's methods and operators call the ops, and the ops' files
# import Tensor and Function from this module, so ops are imported last, once both classes exist.
from . import ops  # noqa: E402
