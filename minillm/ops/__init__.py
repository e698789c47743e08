"""The ops, as functions on Tensors. Each one sits beside its Function (forward + backward side
by side) in the file of this package that holds it:

    elementwise.py  add sub mul div neg pow exp log sqrt tanh abs relu gelu where masked_fill cast to_device
    reduce.py       sum mean max
    shape.py        reshape permute getitem gather_rows scatter_rows cat stack
    linalg.py       matmul linear
    nn.py           softmax log_softmax cross_entropy check_class_ids layer_norm add_layer_norm dropout
                    embedding attention unpadded_attention

``sum``, ``max``, ``abs`` and ``pow`` are torch's names: ``minillm.ops.sum`` is the op, not Python's sum.
"""
# The lower layers' names that this namespace has always offered:
from .. import backend, random  # noqa: F401
from ..cuda import is_capturing  # noqa: F401
from ..tensor import Tensor, as_array, as_tensor  # noqa: F401
from .elementwise import (  # noqa: F401
    Abs, Add, Cast, Div, Exp, Gelu, Log, Mul, Neg, Pow, Relu, Sqrt, Sub, Tanh, ToDevice, Where,
    abs, add, cast, div, exp, gelu, log, masked_fill, mul, neg, pow, relu, sqrt, sub, tanh, to_device, where)
from .linalg import Linear, MatMul, linear, matmul  # noqa: F401
from .nn import (  # noqa: F401
    IGNORE_INDEX, AddLayerNorm, Attention, CrossEntropy, Dropout, Embedding, LayerNorm, LogSoftmax, Softmax,
    UnpaddedAttention, add_layer_norm, attention, check_class_ids, cross_entropy, dropout, embedding, layer_norm,
    log_softmax, softmax, unpadded_attention)
from .reduce import Max, MaxResult, Mean, Sum, max, mean, sum  # noqa: F401
from .shape import (  # noqa: F401
    Cat, GatherRows, GetItem, Permute, Reshape, ScatterRows, Stack, cat, gather_rows, getitem, permute, reshape,
    scatter_rows, stack)
