"""F.scaled_dot_product_attention against torch's, in float64, for every kind of mask torch takes:
none, boolean (True = may attend) or float (added), broadcasting to (B, H, L, S) with L != S, and
is_causal; q, k and v made as BERT makes its heads, x.reshape(B, L, H, D).transpose(1, 2); forward
and the gradients of x (so of q, k, v) and of a float mask that requires grad; query rows whose keys
are all masked (torch 2.13: output 0, gradient 0). Also which path each mask takes, the fused op or
reference_attention (the equation in plain ops), and the errors for masks torch refuses."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minillm as mm
import minillm.nn.functional as F
from minillm import kernels

# kind: (path, how the mask is made). Fused: no mask, a key padding mask, one (L, S) matrix.
KINDS = {
    "none": "fused",
    "bool keys (B, 1, 1, S)": "fused",
    "bool (L, S)": "fused",
    "bool (B, H, L, S)": "reference",
    "bool (B, 1, L, 1)": "reference",
    "float (B, 1, 1, 1)": "reference",
    "float keys (B, 1, 1, S)": "reference",
    "float (L, S)": "fused",
    "float (1, S)": "fused",
    "float (H, L, S) requires grad": "reference",
    "float (L, S) requires grad": "reference",
    "is_causal": "fused",
}


def make_mask(kind, rng, b, h, length, keys):
    """The mask for ``kind`` as a NumPy array (None for none and is_causal), with fully masked query
    rows where the kind can have them."""
    if kind in ("none", "is_causal"):
        return None
    if kind.startswith("bool"):
        shape = {"bool keys (B, 1, 1, S)": (b, 1, 1, keys), "bool (L, S)": (length, keys),
                 "bool (B, H, L, S)": (b, h, length, keys), "bool (B, 1, L, 1)": (b, 1, length, 1)}[kind]
        mask = rng.random(shape) < 0.7
        mask.reshape(-1, shape[-1])[0] = False  # a query row (or a whole sequence) with no key
        return mask
    shape = {"float (B, 1, 1, 1)": (b, 1, 1, 1), "float keys (B, 1, 1, S)": (b, 1, 1, keys),
             "float (L, S)": (length, keys), "float (1, S)": (1, keys),
             "float (H, L, S) requires grad": (h, length, keys), "float (L, S) requires grad": (length, keys)}[kind]
    mask = rng.standard_normal(shape)
    flat = mask.reshape(-1, shape[-1])
    flat[rng.random(flat.shape) < 0.2] = -np.inf  # keys masked out by the float mask
    if len(flat) > 1:
        flat[-1] = -np.inf  # and a row with no key at all
    return mask


def heads(x, b, n, h, d):
    """(B, n, H * D) -> (B, H, n, D) as BERT's heads, a transposed view (minillm or torch)."""
    return x.reshape(b, n, h, d).transpose(1, 2)


def both(kind, b, h, length, keys, d, seed, scale=None):
    """minillm's and torch's outputs and gradients (of xq, xk, xv, and the mask if it requires one)."""
    import torch
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((b, n, h * d)) for n in (length, keys, keys)]
    g = rng.standard_normal((b, h, length, d))
    mask = make_mask(kind, rng, b, h, length, keys)
    wants_grad = "requires grad" in kind
    causal = kind == "is_causal"

    ours_x = [mm.tensor(x, requires_grad=True) for x in xs]
    ours_mask = mm.tensor(mask, requires_grad=True) if wants_grad else mask
    q, k, v = (heads(x, b, n, h, d) for x, n in zip(ours_x, (length, keys, keys)))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=ours_mask, is_causal=causal, scale=scale)
    out.backward(g)
    ours = [out.numpy()] + [x.grad.numpy() for x in ours_x] + ([ours_mask.grad.numpy()] if wants_grad else [])

    torch_x = [torch.tensor(x, requires_grad=True) for x in xs]
    torch_mask = None if mask is None else torch.tensor(mask, requires_grad=wants_grad)
    tq, tk, tv = (heads(x, b, n, h, d) for x, n in zip(torch_x, (length, keys, keys)))
    expected = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch_mask, is_causal=causal,
                                                                scale=scale)
    expected.backward(torch.tensor(g))
    theirs = [expected.detach().numpy()] + [x.grad.numpy() for x in torch_x]
    theirs += [torch_mask.grad.numpy()] if wants_grad else []
    return ours, theirs, mask


def check(ours, theirs):
    for name, a, e in zip(("out", "dxq", "dxk", "dxv", "dmask"), ours, theirs):
        assert a.shape == e.shape, name
        assert np.isfinite(a).all(), name
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def kernel_twins(request):
    with kernels.use(request.param):
        yield


@settings(max_examples=40)
@given(kind=st.sampled_from(sorted(KINDS)), b=st.integers(1, 2), h=st.integers(1, 3), length=st.integers(1, 6),
       keys=st.integers(1, 7), d=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([None, 0.3]))
def test_every_mask_kind_matches_torch_forward_and_backward(torch, kind, b, h, length, keys, d, seed, scale):
    ours, theirs, _ = both(kind, b, h, length, keys, d, seed, scale)
    check(ours, theirs)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_with_l_not_s_and_a_fully_masked_row(torch, kind):
    """L = 4 queries over S = 6 keys (and the other way round): each kind against torch, and where the
    kind masked every key of a query row, that row's output is 0 and no gradient comes from it."""
    for length, keys in ((4, 6), (6, 4)):
        ours, theirs, mask = both(kind, 2, 3, length, keys, 5, seed=length)
        check(ours, theirs)
        if mask is not None:
            keep = mask if mask.dtype == bool else np.isfinite(mask)
            empty = ~np.broadcast_to(keep, (2, 3, length, keys)).any(-1)  # (B, H, L): rows with no key
            assert empty.any() or kind == "float (1, S)", kind  # one row for all: not masked whole
            assert (ours[0][empty] == 0).all() and (theirs[0][empty] == 0).all()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_takes_its_path(monkeypatch, kind):
    """The fused op for no mask, a key padding mask and one (L, S) matrix (is_causal included);
    reference_attention for every other mask and for a float mask that requires grad."""
    taken = []
    fused, reference = F.attention, F.reference_attention
    monkeypatch.setattr(F, "attention", lambda *a, **k: (taken.append("fused"), fused(*a, **k))[1])
    monkeypatch.setattr(F, "reference_attention", lambda *a, **k: (taken.append("reference"), reference(*a, **k))[1])
    rng = np.random.default_rng(0)
    q, k, v = (mm.tensor(rng.standard_normal((2, 3, n, 4))) for n in (4, 6, 6))
    mask = make_mask(kind, rng, 2, 3, 4, 6)
    if "requires grad" in kind:
        mask = mm.tensor(mask, requires_grad=True)
    F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=kind == "is_causal")
    assert taken == [KINDS[kind]]


def test_a_float_mask_without_grad_tensor_or_array_takes_the_fused_op_and_float32_masks_are_cast(torch):
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 2, n, 3)) for n in (3, 5, 5))
    bias = rng.standard_normal((3, 5)).astype(np.float32)
    expected = torch.nn.functional.scaled_dot_product_attention(*map(torch.tensor, (q, k, v)),
                                                                attn_mask=torch.tensor(bias)).numpy()
    for mask in (bias, mm.tensor(bias), bias.astype(np.float64)):
        out = F.scaled_dot_product_attention(mm.tensor(q), mm.tensor(k), mm.tensor(v), attn_mask=mask)
        assert out.dtype == np.float64
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_all_keys_masked_everywhere_is_zero_not_nan(torch):
    """Every row of every kind of full mask: torch 2.13 gives 0 and zero gradients; so do both paths."""
    rng = np.random.default_rng(2)
    masks = [np.zeros((2, 1, 1, 5), bool), np.zeros((3, 5), bool), np.zeros((2, 2, 3, 5), bool),
             np.full((3, 5), -np.inf), np.full((2, 1, 1, 1), -np.inf)]
    for mask in masks:
        xq, xk, xv = (mm.tensor(rng.standard_normal((2, 2, n, 4)), requires_grad=True) for n in (3, 5, 5))
        out = F.scaled_dot_product_attention(xq, xk, xv, attn_mask=mask)
        out.backward(np.ones(out.shape))
        for t in (out, xq.grad, xk.grad, xv.grad):
            assert (t.numpy() == 0).all()
        tq, tk, tv = (torch.tensor(t.numpy()) for t in (xq, xk, xv))
        assert (torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.tensor(mask)) == 0).all()


def test_causal_is_the_lower_triangle_top_left_as_torch():
    rng = np.random.default_rng(3)
    q, k, v = (mm.tensor(rng.standard_normal((1, 1, n, 2))) for n in (3, 5, 5))
    causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    by_hand = F.scaled_dot_product_attention(q, k, v, attn_mask=np.tril(np.ones((3, 5), bool)))
    np.testing.assert_array_equal(causal.numpy(), by_hand.numpy())


def test_dropout_on_both_paths():
    """dropout_p drops probabilities on either path, from minillm's seeded generator (p = 1: all)."""
    rng = np.random.default_rng(4)
    q, k, v = (mm.tensor(rng.standard_normal((2, 2, n, 3))) for n in (4, 6, 6))
    for mask in (None, rng.random((2, 2, 4, 6)) < 0.8):  # the fused op, the reference path
        plain = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).numpy()
        assert (F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=1.0).numpy() == 0).all()
        dropped = []
        for _ in range(2):
            mm.manual_seed(7)
            dropped.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.4).numpy())
        np.testing.assert_array_equal(dropped[0], dropped[1])
        assert not np.allclose(dropped[0], plain)


def test_masks_torch_refuses_are_refused():
    q, k = mm.tensor(np.ones((2, 3, 4, 5))), mm.tensor(np.ones((2, 3, 6, 5)))
    with pytest.raises(ValueError, match="Explicit attn_mask should not be set when is_causal=True"):
        F.scaled_dot_product_attention(q, k, k, attn_mask=np.ones((4, 6), bool), is_causal=True)
    with pytest.raises(TypeError, match="attn_mask must be bool .* or float .*got dtype int64"):
        F.scaled_dot_product_attention(q, k, k, attn_mask=np.ones((4, 6), np.int64))
    for shape in ((4, 4), (2, 4, 6), (1, 2, 3, 4, 6), (2, 3, 4, 5)):
        with pytest.raises(ValueError, match=r"does not broadcast to \(B, H, L, S\) = \(2, 3, 4, 6\)"):
            F.scaled_dot_product_attention(q, k, k, attn_mask=np.zeros(shape))


def test_multi_head_attention_reference_path_is_reference_attention():
    """MultiHeadAttention.reference_attention is F.reference_attention with the key mask as (B, 1, 1, L)."""
    rng = np.random.default_rng(5)
    mha = mm.nn.MultiHeadAttention(12, 3).eval()
    q, k, v = (mm.tensor(rng.standard_normal((2, 3, 5, 4))) for _ in range(3))
    key_mask = rng.random((2, 5)) < 0.7
    context, probs = mha.reference_attention(q, k, v, key_mask)
    expected, expected_probs = F.reference_attention(q, k, v, key_mask[:, None, None, :], mha.scale)
    np.testing.assert_array_equal(context.numpy(), expected.numpy())
    np.testing.assert_array_equal(probs.numpy(), expected_probs.numpy())
