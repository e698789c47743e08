"""What the engine checks for an op's author, each shown with a deliberately wrong custom Function."""
import re
import traceback

import numpy as np
import pytest

import minillm as mm
from minillm import ops
from minillm.tensor import Function, sum_to


class Scale(Function):
    """z = c x for a constant c.   dL/dx = c g: a right op, which the wrong ones below break."""

    def forward(self, x, c):
        self.save(c)
        return c * x

    def backward(self, g):
        return self.saved[0] * g, None


def test_sum_to_refuses_a_gradient_the_input_does_not_broadcast_to():
    g = np.arange(6.0).reshape(3, 2)
    for shape in [(2, 3), (3,), (4, 3, 2)]:  # (3, 2) reshapes to (2, 3), but the numbers would be wrong
        with pytest.raises(ValueError, match=re.escape(f"mul: a gradient of shape (3, 2) cannot be summed to "
                                                       f"the input's shape {shape}")):
            sum_to(g, shape, "mul")
    assert sum_to(g, (1, 2)).tolist() == [[6.0, 9.0]]


def test_a_backward_whose_gradient_has_the_wrong_shape():
    class TransposedGrad(Scale):
        def backward(self, g):
            return self.saved[0] * g.T, None

    x = mm.randn(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"transposedgrad: backward's gradient for input 0: "
                                           r"a gradient of shape \(3, 2\) .* shape \(2, 3\)"):
        TransposedGrad.apply(x, 2.0).sum().backward()


def test_a_backward_that_returns_none_for_an_input_that_needs_a_gradient():
    class ForgetsY(Function):
        """z = x * y, whose backward leaves y out."""
        def forward(self, x, y):
            self.save(y)
            return x * y

        def backward(self, g):
            return g * self.saved[0], None

    x, y = mm.randn(3, requires_grad=True), mm.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"forgetsy: backward returned None for input 1 \(shape \(3,\)\), "
                                           "which requires grad"):
        ForgetsY.apply(x, y).sum().backward()
    ForgetsY.apply(x, y.detach()).sum().backward()  # None is right where no gradient is wanted
    assert x.grad.shape == (3,)


def test_a_backward_that_returns_the_wrong_number_of_gradients():
    class OneGradient(Scale):
        def backward(self, g):
            return self.saved[0] * g

    with pytest.raises(RuntimeError, match="onegradient: backward returned 1 gradients for 2 inputs"):
        OneGradient.apply(mm.randn(3, requires_grad=True), 2.0).sum().backward()


def test_two_leaves_never_share_a_grad_array():
    class SameArrayTwice(Function):
        def forward(self, x, y):
            return x + y

        def backward(self, g):
            return g, g

    a, b = mm.randn(2, 3, requires_grad=True), mm.randn(2, 3, requires_grad=True)
    c, d = mm.randn(2, 3, requires_grad=True), mm.randn(2, 3, requires_grad=True)
    (SameArrayTwice.apply(a, b) * 3 + (c.reshape(6) + d.reshape(6)).reshape(2, 3)).sum().backward()
    grads = [t.grad.data for t in (a, b, c, d)]
    for i, g in enumerate(grads):
        for h in grads[i + 1:]:
            assert not np.shares_memory(g, h)
    a.grad.data += 1  # in place, as an optimizer or a user may
    np.testing.assert_array_equal(b.grad.numpy(), np.full((2, 3), 3.0))


def test_a_failing_forward_keeps_its_frames():
    class Picky(Function):
        def forward(self, x):
            return check_rows(x)

    def check_rows(x):
        raise ValueError(f"needs 4 rows, got {x.shape[0]}")

    with pytest.raises(ValueError, match=r"picky: needs 4 rows, got 2 \(input shapes \(2, 3\)\)") as err:
        Picky.apply(mm.randn(2, 3))
    frames = [frame.name for frame in traceback.extract_tb(err.value.__cause__.__traceback__)]
    assert frames[-2:] == ["forward", "check_rows"]


def test_attention_refuses_a_bias_that_requires_grad():
    q = mm.randn(1, 1, 2, 4, requires_grad=True)
    bias = mm.zeros(2, 2, requires_grad=True)
    with pytest.raises(ValueError, match=r"attention: bias .* gets no gradient.*bias.detach\(\)"):
        ops.attention(q, q, q, bias=bias)
    assert ops.attention(q, q, q, bias=bias.detach()).shape == (1, 1, 2, 4)


@pytest.mark.parametrize("x_first", [True, False])
def test_a_hook_that_writes_grad_in_place_leaves_other_gradients_alone(x_first):
    """Add hands one array to both inputs; a hook on one leaf runs while backward still holds that
    array for the other branch, so the leaf's .grad must be its own copy."""
    x = mm.tensor(np.ones(3), requires_grad=True)
    w = mm.tensor(np.ones(3), requires_grad=True)
    c = mm.tensor(np.arange(3.0) + 1)
    x.register_post_accumulate_grad_hook(lambda t: t.grad.data.__setitem__(..., 0))
    y = w * 3.0
    (((x + y) if x_first else (y + x)) * c).sum().backward()
    assert x.grad.numpy().tolist() == [0, 0, 0]
    assert w.grad.numpy().tolist() == [3, 6, 9]
