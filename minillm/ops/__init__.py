"""The ops, as functions on Tensors. Each one calls a Function (forward + backward side by side)
from the files of this package:

    elementwise.py  add sub mul div neg pow exp log sqrt tanh abs relu gelu where cast to_device
    reduce.py       sum mean max
    shape.py        reshape permute getitem cat stack
    linalg.py       matmul linear
    nn.py           softmax log_softmax cross_entropy layer_norm dropout embedding attention
"""
import collections
import builtins

from .. import backend, random
from ..cuda import is_capturing
from ..tensor import Tensor, as_array, as_tensor
from .elementwise import Abs, Add, Cast, Div, Exp, Gelu, Log, Mul, Neg, Pow, Relu, Sqrt, Sub, Tanh, ToDevice, Where
from .linalg import Linear, MatMul
from .nn import Attention, CrossEntropy, Dropout, Embedding, LayerNorm, LogSoftmax, Softmax
from .reduce import Max, Mean, Sum
from .shape import Cat, GetItem, Permute, Reshape, Stack


def _binary(fn, x, y):
    """Apply a binary Function; a Python scalar stays a scalar (NumPy keeps the tensor's dtype)."""
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        raise TypeError(f"{fn.__name__.lower()} needs at least one Tensor operand")
    if not isinstance(x, (Tensor, int, float)):
        x = as_tensor(x)
    if not isinstance(y, (Tensor, int, float)):
        y = as_tensor(y)
    return fn.apply(x, y)


def add(x, y): return _binary(Add, x, y)
def sub(x, y): return _binary(Sub, x, y)
def mul(x, y): return _binary(Mul, x, y)
def div(x, y): return _binary(Div, x, y)
def neg(x): return Neg.apply(x)
def exp(x): return Exp.apply(x)
def log(x): return Log.apply(x)
def sqrt(x): return Sqrt.apply(x)
def tanh(x): return Tanh.apply(x)
def abs(x): return Abs.apply(x)
def relu(x): return Relu.apply(x)
def cast(x, dtype): return Cast.apply(x, dtype)
def to_device(x, device): return ToDevice.apply(x, device)


def pow(x, exponent):
    if isinstance(exponent, Tensor):
        raise TypeError("pow: the exponent must be a Python number (tensor exponents are not supported)")
    return Pow.apply(x, exponent)


def gelu(x, approximate="none"):
    return Gelu.apply(x, approximate=approximate)


def where(condition, x, y):
    """Elementwise ``x`` where ``condition`` else ``y``; ``condition`` is boolean and gets no gradient."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    if cond.dtype != bool:
        raise TypeError(f"where: condition must be boolean, got dtype {cond.dtype}")
    like = x if isinstance(x, Tensor) else y
    return Where.apply(cond, as_tensor(x, like), as_tensor(y, like))


def masked_fill(x, mask, value):
    """x with ``value`` wherever the boolean ``mask`` (broadcast to x) is True."""
    return where(mask, value, x)


def sum(x, dim=None, keepdim=False): return Sum.apply(x, dim=dim, keepdim=keepdim)
def mean(x, dim=None, keepdim=False): return Mean.apply(x, dim=dim, keepdim=keepdim)


MaxResult = collections.namedtuple("MaxResult", ["values", "indices"])


def max(x, dim=None, keepdim=False):
    """The maximum over all elements, or, given ``dim``, (values, indices) along it, as torch."""
    values = Max.apply(x, dim=dim, keepdim=keepdim)
    if dim is None:
        return values
    xp = backend.array_module(x.data)
    return MaxResult(values, Tensor(xp.argmax(x.data, axis=dim, keepdims=keepdim)))


def reshape(x, shape): return Reshape.apply(x, shape=shape)
def permute(x, dims): return Permute.apply(x, axes=dims)


def getitem(x, index):
    """x[index]: basic slices, or integer/boolean arrays (a gather); Tensors in the index are unwrapped."""
    if isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    elif isinstance(index, Tensor):
        index = index.data
    return GetItem.apply(x, index)


def cat(tensors, dim=0):
    """Join tensors along an existing axis ``dim`` (torch.cat)."""
    tensors = list(tensors)
    _same_shape_but(tensors, dim, "cat")
    return Cat.apply(*tensors, dim=dim)


def stack(tensors, dim=0):
    """Join equally shaped tensors along a new axis ``dim`` (torch.stack)."""
    tensors = list(tensors)
    _same_shape_but(tensors, None, "stack")
    return Stack.apply(*tensors, dim=dim)


def _same_shape_but(tensors, dim, name):
    if not tensors:
        raise ValueError(f"{name}: expected a non-empty list of tensors")
    first = tensors[0].shape
    for i, t in enumerate(tensors[1:], 1):
        a = [n for d, n in enumerate(first) if dim is None or d != dim % len(first)]
        b = [n for d, n in enumerate(t.shape) if dim is None or d != dim % builtins.max(t.ndim, 1)]
        if len(first) != t.ndim or a != b:
            along = "" if dim is None else f" except along dim {dim}"
            raise ValueError(f"{name}: tensor 0 has shape {first} and tensor {i} has shape {t.shape}; "
                             f"shapes must match{along}")


def matmul(x, y): return MatMul.apply(as_tensor(x), as_tensor(y))


def linear(x, weight, bias=None):
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)


def softmax(x, dim): return Softmax.apply(x, dim=dim)
def log_softmax(x, dim): return LogSoftmax.apply(x, dim=dim)


def cross_entropy(logits, target, ignore_index=-100):
    """Mean negative log-likelihood of integer ``target`` (N,) under softmax(``logits``) (N, C)."""
    t = as_array(target)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must be (N, C), got shape {logits.shape}")
    if t.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy: target must be ({logits.shape[0]},) to match logits "
                         f"{logits.shape}, got shape {tuple(t.shape)}")
    check_class_ids(t, logits.shape[1], ignore_index)
    return CrossEntropy.apply(logits, t, ignore_index=ignore_index)


def check_class_ids(target, classes, ignore_index=-100):
    """cross_entropy's check of integer class ids ``target``: each in [0, classes) or ignore_index.
    Host targets cost nothing to check, targets on a GPU one wait, and none inside a CUDA-graph
    capture, where nothing may wait (there the batch was checked on the host, with this function)."""
    if target.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices, got dtype {target.dtype}")
    if backend.on_device(target) and is_capturing():
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bad.any():
        raise IndexError(f"cross_entropy: target {int(target[bad][0])} is out of bounds for {classes} classes")


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalize over the trailing ``normalized_shape`` axes (torch.nn.functional.layer_norm)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} does not match the trailing dims of input {x.shape}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != shape:
            raise ValueError(f"layer_norm: {name} has shape {p.shape}, expected {shape}")
    if len(shape) != 1:  # several trailing axes: normalize them as one flat axis
        flat = x.shape[:x.ndim - len(shape)] + (-1,)
        w = weight.reshape(-1) if weight is not None else None
        b = bias.reshape(-1) if bias is not None else None
        return layer_norm(x.reshape(flat), flat[-1:], w, b, eps).reshape(x.shape)
    inputs = [x] + [p for p in (weight, bias)]
    return LayerNorm.apply(*inputs, eps=eps)


def dropout(x, p=0.5, training=True):
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    return Dropout.apply(x, p)


def embedding(ids, weight, padding_idx=None):
    """weight[ids]: ids is an integer array or Tensor (...), weight (V, E) -> (..., E).
    The row ``padding_idx`` (if given) receives no gradient, as in torch."""
    i = as_array(ids)
    if i.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {i.dtype}")
    # One look at the ids: on a GPU one wait (host ids cost none), and none inside a CUDA-graph
    # capture, where nothing may wait (there the batch was checked on the host).
    if i.size and not (backend.on_device(i) and is_capturing()):
        low, high = (int(n) for n in backend.to_host(backend.array_module(i).stack([i.min(), i.max()])))
        if low < 0 or high >= weight.shape[0]:
            raise IndexError(f"embedding: id {high if high >= weight.shape[0] else low} is out of range "
                             f"for a table of {weight.shape[0]} rows")
    return Embedding.apply(i, weight, padding_idx=padding_idx)


def attention(q, k, v, key_mask=None, bias=None, scale=None, dropout_p=0.0, seed=None):
    """Fused dropout(softmax(q k^T * scale + bias + key mask)) v; see ops/nn.py Attention.
    dropout_p drops probabilities (pass 0 outside training); the mask comes from ``seed``, and
    seed=None draws one from minillm's seeded generator, so mm.manual_seed repeats a run."""
    if seed is None:
        seed = random.draw_seed() if dropout_p else 0
    return Attention.apply(q, k, v, key_mask, bias, scale=scale, dropout_p=dropout_p, seed=seed)
