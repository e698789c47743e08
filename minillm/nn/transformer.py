"""The Transformer encoder as BERT builds it: post-LN layers ("Attention Is All You Need", section 3.1).

One layer, x (B, L, E) -> (B, L, E):

    a = LayerNorm(x + Dropout(Dense(SelfAttention(x))))          attention.self, attention.output
    y = LayerNorm(a + Dropout(Dense(act(Dense(a)))))             intermediate, output

The sub-modules carry Hugging Face's BERT names, so a layer's weights are found where a reader of a
BERT checkpoint expects them: ``attention.self.query``, ``attention.output.dense``,
``attention.output.LayerNorm``, ``intermediate.dense``, ``output.dense``, ``output.LayerNorm``.
Arguments follow torch.nn.TransformerEncoderLayer's names (d_model, nhead, dim_feedforward); the
defaults are BERT's (GELU, layer norm eps 1e-12); tensors are batch first.
"""
import copy

from . import functional as F
from .attention import MultiHeadAttention
from .layers import Dropout, LayerNorm, Linear
from .module import Module, ModuleList

ACTIVATIONS = {
    "gelu": F.gelu,                                           # exact: x * Phi(x), BERT's
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),      # the tanh approximation (GPT-2's)
    "relu": F.relu,
}


class DenseAddNorm(Module):
    """y = LayerNorm(residual + Dropout(Dense(x))): a sub-layer's output, the paper's "Add & Norm"
    (Hugging Face's BertSelfOutput and BertOutput). x: (..., in_features), residual and y: (..., d_model)."""

    def __init__(self, in_features, d_model, dropout, layer_norm_eps):
        super().__init__()
        self.dense = Linear(in_features, d_model)
        self.LayerNorm = LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = Dropout(dropout)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class SelfAttentionBlock(Module):
    """Self-attention and its Add & Norm: ``self`` (MultiHeadAttention) and ``output`` (DenseAddNorm)."""

    def __init__(self, d_model, nhead, dropout, attention_dropout, layer_norm_eps):
        super().__init__()
        self.self = MultiHeadAttention(d_model, nhead, dropout=attention_dropout)
        self.output = DenseAddNorm(d_model, d_model, dropout, layer_norm_eps)

    def forward(self, x, key_mask=None, output_attentions=False):
        context, probs = self.self(x, key_mask, output_attentions)
        return self.output(context, x), probs


class Intermediate(Module):
    """The feed-forward network's first half: act(Dense(x)), (..., d_model) -> (..., dim_feedforward)."""

    def __init__(self, d_model, dim_feedforward, activation):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
        self.dense = Linear(d_model, dim_feedforward)
        self.activation = activation

    def forward(self, x):
        return ACTIVATIONS[self.activation](self.dense(x))

    def extra_repr(self):
        return f"activation={self.activation}"


class TransformerEncoderLayer(Module):
    """One post-LN encoder layer (BERT's BertLayer). x: (B, L, d_model) -> (B, L, d_model).

    dropout: on each sub-layer's output (BERT's hidden_dropout_prob);
    attention_dropout: on the attention probabilities (attention_probs_dropout_prob), default ``dropout``.
    """

    def __init__(self, d_model, nhead, dim_feedforward, dropout=0.1, activation="gelu", layer_norm_eps=1e-12,
                 attention_dropout=None):
        super().__init__()
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.attention = SelfAttentionBlock(d_model, nhead, dropout, attention_dropout, layer_norm_eps)
        self.intermediate = Intermediate(d_model, dim_feedforward, activation)
        self.output = DenseAddNorm(dim_feedforward, d_model, dropout, layer_norm_eps)

    def forward(self, x, key_mask=None, output_attentions=False):
        """key_mask: (B, L), True/1 for real tokens. Returns (y, attention probabilities or None)."""
        a, probs = self.attention(x, key_mask, output_attentions)
        return self.output(self.intermediate(a), a), probs


class TransformerEncoder(Module):
    """``num_layers`` copies of ``encoder_layer`` applied in turn (as torch.nn.TransformerEncoder),
    held in ``layer`` so that the third one is ``layer.2`` (BERT's ``encoder.layer.2``).
    The copies start with equal weights; a model re-initializes them (BertModel does)."""

    def __init__(self, encoder_layer, num_layers):
        super().__init__()
        self.layer = ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))

    def forward(self, x, key_mask=None, output_hidden_states=False, output_attentions=False):
        """x: (B, L, E). Returns (last hidden state (B, L, E), hidden_states, attentions) where, when asked,
        hidden_states = (x, after layer 1, ..., after layer N) and attentions = one (B, H, L, L) per layer,
        as Hugging Face returns them; otherwise None."""
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layer:
            x, probs = layer(x, key_mask, output_attentions)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(probs)
        return x, _tuple(hidden_states), _tuple(attentions)


def _tuple(items):
    return None if items is None else tuple(items)
