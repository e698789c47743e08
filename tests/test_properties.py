"""Properties the ops must satisfy whatever the input: normalization, stability, consistency."""
import numpy as np
from hypothesis import given, strategies as hst

import minillm as mm
import minillm.nn.functional as F
from minillm.testing import strategies as st

rows = st.arrays(st.shapes(min_dims=1, min_side=1), low=-20, high=20, dtype=np.float32)


@given(rows)
def test_softmax_rows_sum_to_one(x):
    y = F.softmax(mm.tensor(x), -1).numpy()
    assert (y >= 0).all()
    np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-5)


@given(rows)
def test_log_softmax_is_log_of_softmax(x):
    t = mm.tensor(x)
    np.testing.assert_allclose(F.log_softmax(t, -1).numpy(), np.log(F.softmax(t, -1).numpy()), atol=1e-4)


def test_softmax_does_not_overflow_and_survives_fully_masked_rows():
    x = mm.tensor([[1e4, 0.0, -1e4], [-np.inf, -np.inf, -np.inf]], requires_grad=True)
    for fn in (lambda t: F.softmax(t, -1), lambda t: F.log_softmax(t, -1)):
        y = fn(x)
        assert not np.isnan(y.numpy()).any()
        y.backward(np.ones((2, 3), np.float32))
        assert np.isfinite(x.grad.numpy()).all()
        x.grad = None
    np.testing.assert_allclose(F.softmax(x, -1).numpy(), [[1, 0, 0], [0, 0, 0]])


@given(hst.integers(1, 6), hst.integers(2, 5), hst.integers(0, 2**31))
def test_cross_entropy_is_mean_negative_log_likelihood(n, c, seed):
    rng = np.random.default_rng(seed)
    logits, target = rng.standard_normal((n, c)).astype(np.float32), rng.integers(0, c, n)
    logp = F.log_softmax(mm.tensor(logits), -1).numpy()
    expected = -logp[np.arange(n), target].mean()
    assert abs(F.cross_entropy(mm.tensor(logits), target).item() - expected) < 1e-5


def test_cross_entropy_ignores_rows():
    logits = mm.randn(3, 4)
    full = F.cross_entropy(logits[1:], np.array([2, 3]))
    assert abs(F.cross_entropy(logits, np.array([-100, 2, 3])).item() - full.item()) < 1e-6


@given(st.arrays(st.shapes(min_dims=2, min_side=2), low=-50, high=50))
def test_layer_norm_normalizes_before_the_affine_part(x):
    y = F.layer_norm(mm.tensor(x), x.shape[-1:], eps=1e-12).numpy()
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-6)
    spread = x.std(-1) > 1e-3  # a constant row is all zeros (its variance is eps-dominated)
    np.testing.assert_allclose(y.var(-1)[spread], 1, rtol=1e-3)


def test_dropout_train_and_eval():
    x = mm.ones(200, 100)
    mm.manual_seed(0)
    y = F.dropout(x, 0.25, training=True).numpy()
    assert abs((y == 0).mean() - 0.25) < 0.01
    np.testing.assert_allclose(np.unique(y), [0, 1 / 0.75], rtol=1e-6)
    assert F.dropout(x, 0.25, training=False) is x
    mm.manual_seed(0)
    np.testing.assert_array_equal(F.dropout(x, 0.25).numpy(), y)
    assert (F.dropout(x, 1.0).numpy() == 0).all()


@given(st.broadcastable_shapes(min_side=0))
def test_broadcast_gradients_have_the_input_shapes(shapes):
    a = mm.tensor(np.ones(shapes[0]), requires_grad=True)
    b = mm.tensor(np.ones(shapes[1]), requires_grad=True)
    (a * b).sum().backward()
    out_size = np.broadcast_shapes(*shapes)
    assert a.grad.shape == shapes[0] and b.grad.shape == shapes[1]
    assert a.grad.numpy().sum() == np.prod(out_size)
