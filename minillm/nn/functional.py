"""torch.nn.functional's names over minillm's ops: ``import minillm.nn.functional as F``; and
ACTIVATIONS, the activation functions by the names a Hugging Face config gives them (``hidden_act``);
and ``reference_attention``, the attention equation in plain ops (MultiHeadAttention's reference
path, and scaled_dot_product_attention's for the masks the fused op does not take)."""
import math

from .. import backend
from ..kernels.attention import check_shapes
from ..ops import cross_entropy, dropout, embedding, layer_norm, linear, log_softmax, relu, softmax  # noqa: F401
from ..ops import attention, gelu as _gelu
from ..tensor import Tensor


def gelu(x, approximate="none"):
    """GELU, exact (erf) by default, or the tanh approximation with approximate="tanh"."""
    return _gelu(x, approximate)


ACTIVATIONS = {
    "gelu": gelu,                                           # exact: x * Phi(x), BERT's
    "gelu_new": lambda x: gelu(x, approximate="tanh"),      # the tanh approximation (GPT-2's)
    "relu": relu,
}


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """torch's: dropout(softmax(q k^T * scale + mask)) v for q (B, H, L, D), k and v (B, H, S, D);
    scale 1 / sqrt(D) unless given.

    ``attn_mask``, as in torch, is anything that broadcasts to (B, H, L, S): boolean, True where a
    query may attend to a key, or float, added to the scores (-inf: not at all). ``is_causal=True``
    is the boolean mask tril(ones(L, S)), query i attending to keys 0..i, and an error with a mask
    (as in torch). ``dropout_p`` drops probabilities whenever it is above 0 (as in torch: pass 0
    outside training). A query whose keys are all masked gets an output of 0 and no gradient, as
    in torch 2.13.

    Two paths, with the same numbers up to rounding (tests/test_sdpa_masks.py):
      - the fused op (``minillm.ops.attention``: one kernel, no (L, S) matrix kept) for no mask, a
        boolean key padding mask (broadcasting to (B, 1, 1, S)), and a mask that is one (L, S)
        matrix for every batch and head (broadcasting to (1, 1, L, S)), boolean, float or
        is_causal, as an additive bias;
      - ``reference_attention`` below, the equation in plain ops, for every other mask: one that
        differs across batches and heads at once or per query, a float mask that differs per batch
        or head, and a float Tensor that requires grad (the fused op takes masks as constants; this
        path gives the mask its gradient).
    """
    check_shapes(q, k, v)
    (batch, _, length, _), keys = q.shape, k.shape[2]
    if is_causal:
        if attn_mask is not None:
            raise ValueError("scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True "
                             "(as torch says); put the causal mask into attn_mask instead")
        attn_mask = backend.array_module(_data(q)).tri(length, keys, dtype=bool)  # key j <= query i
    mask = _checked_mask(attn_mask, q.shape[:3] + (keys,))
    fused = _fused_masks(mask, batch, length, keys, q.dtype)
    if fused is None:
        return reference_attention(q, k, v, mask, scale, dropout_p)[0]
    key_mask, bias = fused
    return attention(q, k, v, key_mask, bias, scale, dropout_p)


def reference_attention(q, k, v, attn_mask=None, scale=None, dropout_p=0.0):
    """The attention equation in plain ops, the definition the fused op is held to:

        scores = q k^T * scale + mask      (B, H, L, S)
        probs = softmax(scores)            over S: each row sums to 1, or is 0 where every key is masked
        out = dropout(probs) v             (B, H, L, D)

    q (B, H, L, D), k and v (B, H, S, D); scale 1 / sqrt(D) unless given. attn_mask: None, boolean
    (False puts -inf in the score: True = may attend) or float (added, and given its gradient where
    it is a Tensor that requires one), broadcasting to (B, H, L, S). Returns (out, probs), probs
    before dropout. It keeps the (B, H, L, S) probabilities in the graph, so memory grows with
    L * S: MultiHeadAttention's output_attentions and scaled_dot_product_attention's general masks
    take it, and the fused op everything else."""
    probs = attention_probs(q, k, attn_mask, scale)
    return dropout(probs, dropout_p) @ v, probs


def attention_probs(q, k, attn_mask=None, scale=None):
    """softmax(q k^T * scale + mask) over S, (B, H, L, S): reference_attention's first two lines,
    which MultiHeadAttention also runs before its own nn.Dropout."""
    q, k = (t if isinstance(t, Tensor) else Tensor(t) for t in (q, k))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale                          # (B, H, L, S)
    if attn_mask is not None:
        if _data(attn_mask).dtype == bool:
            scores = scores.masked_fill(~_data(attn_mask), -math.inf)  # masked keys: -inf
        elif isinstance(attn_mask, Tensor):
            scores = scores + attn_mask.to(scores.dtype)               # the mask's gradient: the scores'
        else:
            scores = scores + attn_mask.astype(scores.dtype, copy=False)
    return softmax(scores, -1)                                         # a row of -inf: all 0


def _data(t):
    return t.data if isinstance(t, Tensor) else t


def _checked_mask(mask, full):
    """attn_mask as an array, or as the Tensor where it is a float Tensor that requires grad (None
    stays None); a TypeError or ValueError naming it unless it is bool or float and broadcasts to
    ``full``, (B, H, L, S)."""
    if mask is None:
        return None
    m = _data(mask)
    if m.dtype != bool and m.dtype.kind != "f":
        raise TypeError(f"scaled_dot_product_attention: attn_mask must be bool (True = may attend) or float "
                        f"(added to the scores), got dtype {m.dtype}")
    if m.ndim > 4 or not _broadcasts(m.shape, full):
        raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {tuple(m.shape)} does not broadcast to "
                         f"(B, H, L, S) = {full}")
    return mask if isinstance(mask, Tensor) and mask.requires_grad and m.dtype != bool else m


def _fused_masks(mask, batch, length, keys, dtype):
    """The fused op's (key_mask (B, S) bool or None, bias (L, S) float or None) for a checked mask,
    or None where only the reference path computes it."""
    if mask is None:
        return None, None
    if isinstance(mask, Tensor):  # a float mask that requires grad
        return None
    xp = backend.array_module(mask)
    b, h, l, s = (1,) * (4 - mask.ndim) + tuple(mask.shape)
    m = mask.reshape(b, h, l, s)
    if mask.dtype == bool and h == l == 1:  # a key padding mask
        return xp.ascontiguousarray(xp.broadcast_to(m[:, 0, 0], (batch, keys))), None
    if b == h == 1:  # one (L, S) mask for every batch and head: an additive bias
        square = m[0, 0]
        if mask.dtype == bool:
            square = xp.where(square, dtype.type(0), dtype.type(-math.inf))
        return None, xp.ascontiguousarray(xp.broadcast_to(square.astype(dtype, copy=False), (length, keys)))
    return None


def _broadcasts(shape, target):
    if len(shape) > len(target):
        return False
    return all(a in (1, b) for a, b in zip(shape[::-1], target[::-1]))


__all__ = ["cross_entropy", "dropout", "embedding", "gelu", "layer_norm", "linear", "log_softmax", "relu",
           "scaled_dot_product_attention", "softmax"]
