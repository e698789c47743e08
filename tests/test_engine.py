"""The graph engine: topological order, accumulation, memory release, no_grad, errors."""
import gc
import weakref

import numpy as np
import pytest

import minillm as mm
from minillm.tensor import sum_to


def test_shared_input_gets_both_paths():
    x = mm.tensor([1.0, -2.0, 3.0], requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 1)


def test_gradients_accumulate_across_backward_calls():
    x = mm.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 6.0])


def test_ten_thousand_chained_ops_without_recursion():
    x = mm.tensor(0.5, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001 + 0.0
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001 ** 10_000, rel=1e-3)


def test_no_grad_builds_no_graph():
    x = mm.randn(3, requires_grad=True)
    with mm.no_grad():
        y = (x * 2).exp().sum()
    assert not y.requires_grad and y._ctx is None
    assert mm.is_grad_enabled()

    @mm.no_grad()
    def f(t):
        return t * 2
    assert f(x)._ctx is None


def test_intermediates_are_freed_by_backward():
    x = mm.randn(4, 4, requires_grad=True)
    loss = x.exp().tanh().sum()
    tanh_out = weakref.ref(loss._ctx.inputs[0])  # held only by the graph
    exp_out = weakref.ref(tanh_out()._ctx.inputs[0])
    loss.backward()
    gc.collect()
    assert tanh_out() is None and exp_out() is None
    assert loss._ctx.saved is None
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_retain_graph_allows_a_second_backward():
    x = mm.randn(3, requires_grad=True)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * x.numpy(), rtol=1e-6)


def test_intermediate_grads_only_when_retained():
    x = mm.randn(3, requires_grad=True)
    h = x * 2
    h.retain_grad()
    g = h * 3
    g.sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), [3.0, 3.0, 3.0])
    assert g.grad is None


def test_detach_cuts_the_graph():
    x = mm.randn(3, requires_grad=True)
    y = (x * 2).detach()
    assert not y.requires_grad and y._ctx is None


@pytest.mark.parametrize("grad_shape,shape", [((2, 3, 4), (3, 1)), ((5, 2), (2,)), ((3,), ()), ((2, 1, 4), (1, 1, 4))])
def test_sum_to_undoes_broadcasting(grad_shape, shape):
    g = np.random.default_rng(0).standard_normal(grad_shape)
    reduced = sum_to(g, shape)
    assert reduced.shape == shape
    assert reduced.sum() == pytest.approx(g.sum())


def test_grad_keeps_the_leaf_dtype():
    x = mm.tensor(np.ones(3, np.float32), requires_grad=True)
    (x * mm.tensor(np.ones(3))).sum().backward()  # float64 partner: the product is float64
    assert x.grad.dtype == np.float32


def test_leaf_grad_of_a_broadcast_is_a_writable_array():
    x = mm.tensor([2.0], requires_grad=True)
    (x * mm.ones(5)).sum().backward()
    x.grad.data += 1  # not a read-only broadcast view
    assert x.grad.item() == 6.0


# ---- errors ---------------------------------------------------------------------------------

def test_shape_mismatch_names_the_op_and_both_shapes():
    with pytest.raises(ValueError, match=r"add.*\(2, 3\).*\(4,\)"):
        mm.randn(2, 3) + mm.randn(4)
    with pytest.raises(ValueError, match=r"matmul.*3 and 4.*\(2, 3\), \(4, 5\)"):
        mm.randn(2, 3) @ mm.randn(4, 5)


def test_backward_on_a_non_scalar_needs_a_grad():
    y = mm.randn(2, 3, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\)"):
        y.backward(np.ones(3, np.float32))


def test_integer_tensors_where_floats_are_needed():
    ids = mm.tensor([1, 2, 3])
    assert ids.dtype == np.int64
    with pytest.raises(TypeError, match="exp.*int64"):
        ids.exp()
    with pytest.raises(TypeError, match="softmax.*int64"):
        ids.softmax(-1)
    with pytest.raises(TypeError, match="int64"):
        mm.tensor([1, 2], requires_grad=True)


def test_reduction_dim_out_of_range():
    with pytest.raises(IndexError, match="dim 2"):
        mm.randn(2, 3).sum(2)


# ---- factories and API --------------------------------------------------------------------

def test_tensor_dtypes_follow_torch():
    assert mm.tensor([1.5, 2.0]).dtype == np.float32
    assert mm.tensor([1, 2]).dtype == np.int64
    assert mm.tensor(np.zeros(2)).dtype == np.float64
    assert mm.tensor([1, 2], dtype=mm.float64).dtype == np.float64
    assert mm.arange(3).dtype == np.int64 and mm.zeros(2, 3).shape == (2, 3)


def test_max_over_a_dim_gives_values_and_indices():
    x = mm.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], requires_grad=True)
    values, indices = x.max(1)
    np.testing.assert_array_equal(values.numpy(), [5.0, 7.0])
    np.testing.assert_array_equal(indices.numpy(), [1, 0])
    values.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 0], [1, 0, 0]])
    normed = mm.ops.layer_norm(x, (3,))  # a kernel below max takes only a float32 gradient
    normed.max(1).values.sum().backward()  # the ties' shares, float64 arrays, did not keep its dtype
    assert x.grad.dtype == np.float32


def test_embedding_lookup_scatter_adds_repeated_ids():
    weight = mm.randn(4, 2, requires_grad=True)
    ids = np.array([[1, 1, 3], [1, 0, 0]])
    weight[mm.tensor(ids)].sum().backward()
    np.testing.assert_array_equal(weight.grad.numpy()[:, 0], [2, 3, 0, 1])


def test_manual_seed_repeats_random_draws():
    mm.manual_seed(7)
    a = mm.randn(3).numpy()
    mm.manual_seed(7)
    np.testing.assert_array_equal(a, mm.randn(3).numpy())


def test_repr_shows_values_and_graph():
    x = mm.tensor([1.0, 2.0], requires_grad=True)
    assert "requires_grad=True" in repr(x)
    assert "grad_fn=<MulBackward>" in repr(x * 2)
