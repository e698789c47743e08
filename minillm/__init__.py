"""minillm: a small deep-learning framework for learning how transformers work.

    import minillm as mm
    x = mm.tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()
    x.grad            # tensor([[2., 4.]])
"""
import numpy as _numpy

from . import cuda, kernels, nn, ops  # noqa: F401
from .backend import Device as device  # noqa: F401
from .creation import arange, full, ones, rand, randn, zeros, zeros_like, ones_like  # noqa: F401
from .ops import cat, stack, where  # noqa: F401
from .random import manual_seed  # noqa: F401
from .tensor import Tensor, is_grad_enabled, no_grad, tensor  # noqa: F401

float32, float64, float16 = _numpy.float32, _numpy.float64, _numpy.float16
int32, int64, bool_ = _numpy.int32, _numpy.int64, _numpy.bool_

__version__ = "0.1.0"
