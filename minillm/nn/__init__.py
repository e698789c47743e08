"""Neural-network building blocks, as torch.nn. ``minillm.nn.functional`` holds the stateless functions."""
from . import functional  # noqa: F401
from .attention import MultiHeadAttention  # noqa: F401
from .layers import Dropout, Embedding, LayerNorm, Linear  # noqa: F401
from .module import Module, ModuleList, Parameter  # noqa: F401
from .transformer import TransformerEncoder, TransformerEncoderLayer  # noqa: F401
