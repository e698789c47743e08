"""torch.nn.functional's names over minillm's ops: ``import minillm.nn.functional as F``; and
ACTIVATIONS, the activation functions by the names a Hugging Face config gives them (``hidden_act``)."""
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


def scaled_dot_product_attention(q, k, v, attn_mask=None, scale=None):
    """softmax(q k^T * scale + mask) v for q (B, H, L, D), k and v (B, H, S, D), fused.

    ``attn_mask`` as in torch: a boolean mask (True = may attend) or an additive float mask.
    Two forms are supported, which cover BERT and causal models:
      - a key padding mask, boolean, shaped (B, 1, 1, S) (or broadcastable to it);
      - an additive float mask shaped (L, S) (or broadcastable to it), e.g. causal.
    """
    check_shapes(q, k, v)
    key_mask, bias = _split_mask(attn_mask, q.shape[0], q.shape[2], k.shape[2], q.dtype)
    return attention(q, k, v, key_mask, bias, scale)


def _split_mask(mask, batch, query_len, key_len, dtype):
    """A torch-style attn_mask as (key_mask (B, S) bool, bias (L, S) float), or a clear error."""
    if mask is None:
        return None, None
    m = mask.data if isinstance(mask, Tensor) else mask
    xp = backend.array_module(m)
    if m.dtype == bool:
        full = (batch, 1, 1, key_len)
        if m.ndim <= 4 and _broadcasts(m.shape, full):
            return xp.ascontiguousarray(xp.broadcast_to(m.reshape((1,) * (4 - m.ndim) + m.shape), full)[:, 0, 0]), None
        raise ValueError(f"scaled_dot_product_attention: a boolean attn_mask must broadcast to (B, 1, 1, S) = "
                         f"{full} (a key padding mask), got shape {m.shape}")
    if m.dtype.kind == "f":
        if m.ndim <= 4 and all(n == 1 for n in m.shape[:-2]) and _broadcasts(m.shape[-2:], (query_len, key_len)):
            square = m.reshape(m.shape[-2:]) if m.ndim >= 2 else m.reshape(1, -1)
            return None, xp.ascontiguousarray(xp.broadcast_to(square, (query_len, key_len)).astype(dtype, copy=False))
        raise ValueError(f"scaled_dot_product_attention: a float attn_mask must broadcast to (L, S) = "
                         f"{(query_len, key_len)}, got shape {m.shape}; use a boolean (B, 1, 1, S) mask for padding")
    raise TypeError(f"scaled_dot_product_attention: attn_mask must be bool or float, got dtype {m.dtype}")


def _broadcasts(shape, target):
    if len(shape) > len(target):
        return False
    return all(a in (1, b) for a, b in zip(shape[::-1], target[::-1]))


__all__ = ["cross_entropy", "dropout", "embedding", "gelu", "layer_norm", "linear", "log_softmax", "relu",
           "scaled_dot_product_attention", "softmax"]
