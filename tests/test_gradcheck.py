"""gradcheck itself: it passes right backwards and catches wrong ones with a useful report."""
import numpy as np
import pytest
from hypothesis import given

from minillm.tensor import Function
from minillm.testing import GradcheckError, gradcheck, strategies as st


class Cube(Function):
    """z = x**3.  dL/dx = 3 g x**2."""

    def forward(self, x):
        self.save(x)
        return x ** 3

    def backward(self, g):
        return 3 * g * self.saved[0] ** 2


class WrongCube(Cube):
    def backward(self, g):
        return 2 * g * self.saved[0] ** 2  # the classic slip: wrong power-rule coefficient


@given(st.arrays(st.shapes()))
def test_a_right_backward_passes(x):
    assert gradcheck(Cube.apply, [x])


def test_a_wrong_backward_is_reported_with_input_index_and_values():
    x = np.array([[0.5, -1.0], [2.0, 1.5]])
    with pytest.raises(GradcheckError) as err:
        gradcheck(WrongCube.apply, [x])
    message = str(err.value)
    assert "input 0" in message and "element (1, 0)" in message  # the largest x has the largest error
    assert "analytic" in message and "numeric" in message


def test_non_float_inputs_ride_along():
    ids = np.array([2, 0, 2])
    assert gradcheck(lambda w, i: w[i], [np.random.default_rng(0).standard_normal((3, 2)), ids])


def test_transposed_inputs_keep_their_layout():
    x = np.random.default_rng(1).standard_normal((3, 4)).T
    seen = []

    def fn(t):
        seen.append(t.data.flags.c_contiguous)
        return Cube.apply(t)
    gradcheck(fn, [x])
    assert not any(seen)


def test_no_differentiable_output_is_an_error():
    with pytest.raises(GradcheckError, match="no output"):
        gradcheck(lambda i: i * 2, [np.array([1, 2])])
