"""Hypothesis strategies for gradient checks: shapes, broadcastable pairs, axes, arrays.

    from hypothesis import given
    from minillm.testing import gradcheck, strategies as st

    @given(st.arrays(st.shapes()))
    def test_my_op(x):
        gradcheck(my_op, [x])
"""
import numpy
from hypothesis import strategies as hst
from hypothesis.extra import numpy as hnp


def shapes(min_dims=0, max_dims=3, min_side=1, max_side=4):
    """Array shapes; min_side=0 includes empty dims."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4):
    """Pairs of shapes that broadcast together (size-1 dims and missing leading dims included)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=min_dims, max_dims=max_dims,
                                             min_side=min_side, max_side=max_side).map(lambda s: s.input_shapes)


def axes(ndim):
    """None, a single axis (possibly negative), or a tuple of distinct axes of an ndim-dim array."""
    if ndim == 0:
        return hst.none()
    single = hst.integers(-ndim, ndim - 1)
    several = hst.lists(hst.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)
    return hst.one_of(hst.none(), single, several)


def _arrays(shape, sample, transposed, dtype):
    """Arrays of ``shape`` (a shape or a strategy of shapes) filled by ``sample(rng, shape)``."""
    shape_strategy = shape if isinstance(shape, hst.SearchStrategy) else hst.just(tuple(shape))
    flip = hst.booleans() if transposed is None else hst.just(transposed)

    def build(s, do_flip, seed):
        rng = numpy.random.default_rng(seed)
        if do_flip and len(s) >= 2:  # a transposed view: same shape, non-contiguous memory
            return sample(rng, s[::-1]).astype(dtype).T
        return numpy.asarray(sample(rng, s)).astype(dtype)

    return hst.builds(build, shape_strategy, flip, hst.integers(0, 2**32 - 1))


def arrays(shape, low=-3.0, high=3.0, dtype=numpy.float64, transposed=None):
    """Float arrays of ``shape`` with values uniform in [low, high].

    ``transposed``: True always, None sometimes, False never: return the array as a transposed
    view of a C-contiguous one, to exercise strided inputs.
    """
    return _arrays(shape, lambda rng, s: rng.uniform(low, high, s), transposed, dtype)


def positive_arrays(shape, low=0.5, high=3.0, **kwargs):
    """Well-conditioned inputs for log, sqrt, division: values bounded away from zero."""
    return arrays(shape, low=low, high=high, **kwargs)


def separated_arrays(shape, gap=0.1, dtype=numpy.float64, transposed=None):
    """Arrays whose values are distinct, at least ``gap`` apart and away from 0, so max (no ties)
    and relu (no kink) are differentiable well beyond a finite-difference step."""
    def sample(rng, s):
        n = int(numpy.prod(s))
        return ((rng.permutation(n) - n / 2 + 0.25) * gap).reshape(s)
    return _arrays(shape, sample, transposed, dtype)
