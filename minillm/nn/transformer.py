"""A generic Transformer encoder, post-LN ("Attention Is All You Need", section 3.1), for building
your own models; named as torch.nn.TransformerEncoderLayer and TransformerEncoder (d_model, nhead,
dim_feedforward; ``self_attn``, ``linear1``, ``norm1``, ``layers``), with tensors batch first.

One layer, x (B, L, E) -> (B, L, E):

    a = norm1(x + dropout1(out_proj(self_attn(x))))              attention, then Add & Norm
    y = norm2(a + dropout2(linear2(activation(linear1(a)))))     feed-forward, then Add & Norm

It computes what BERT's layer computes, from the same pieces; BERT itself is written out in
minillm/models/bert.py under Hugging Face's names, so that its checkpoints load. Unlike torch:
self_attn (nn.MultiHeadAttention) has no output projection (``out_proj`` sits beside it), there is
no dropout between the two feed-forward products (BERT has none), and the defaults are BERT's
(GELU, layer norm eps 1e-12).
"""
import copy

from .attention import MultiHeadAttention
from .functional import ACTIVATIONS
from .layers import Dropout, LayerNorm, Linear
from .module import Module, ModuleList


class TransformerEncoderLayer(Module):
    """One post-LN encoder layer. x: (B, L, d_model) -> (B, L, d_model).

    dropout: on each sub-layer's output; attention_dropout: on the attention probabilities
    (default ``dropout``); activation: a name in nn.functional.ACTIVATIONS (gelu, gelu_new, relu).
    """

    def __init__(self, d_model, nhead, dim_feedforward, dropout=0.1, activation="gelu", layer_norm_eps=1e-12,
                 attention_dropout=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout if attention_dropout is None
                                            else attention_dropout)
        self.out_proj = Linear(d_model, d_model)
        self.dropout1 = Dropout(dropout)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps)
        self.linear1 = Linear(d_model, dim_feedforward)
        self.activation = activation
        self.linear2 = Linear(dim_feedforward, d_model)
        self.dropout2 = Dropout(dropout)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps)

    def forward(self, x, key_mask=None, output_attentions=False):
        """x: (B, L, d_model); key_mask: (B, L), True/1 for real tokens.
        Returns (y (B, L, d_model), attention probabilities (B, H, L, L) or None)."""
        context, probs = self.self_attn(x, key_mask, output_attentions)
        a = self.norm1(self.dropout1(self.out_proj(context)), residual=x)  # norm1(x + ...), the add in the norm
        y = self.norm2(self.dropout2(self.linear2(ACTIVATIONS[self.activation](self.linear1(a)))), residual=a)
        return y, probs

    def extra_repr(self):
        return f"activation={self.activation}"


class TransformerEncoder(Module):
    """``num_layers`` copies of ``encoder_layer`` applied in turn, held in ``layers`` (as torch).
    The copies start with equal weights; re-initialize them if they should differ."""

    def __init__(self, encoder_layer, num_layers):
        super().__init__()
        self.layers = ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))

    def forward(self, x, key_mask=None, output_hidden_states=False, output_attentions=False):
        """x: (B, L, E). Returns (last hidden state (B, L, E), hidden_states, attentions) where, when asked,
        hidden_states = (x, after layer 1, ..., after layer N) and attentions = one (B, H, L, L) per layer;
        otherwise None."""
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layers:
            x, probs = layer(x, key_mask, output_attentions)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(probs)
        return x, _tuple(hidden_states), _tuple(attentions)


def _tuple(items):
    return None if items is None else tuple(items)
