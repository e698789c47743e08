"""What a model's forward returns, as Hugging Face's modeling_outputs.py names it: fields read by
name (``out.logits``, ``out.loss``), None where not computed."""
import dataclasses

from ..tensor import Tensor


@dataclasses.dataclass
class BaseModelOutputWithPooling:
    last_hidden_state: Tensor                 # (B, L, E)
    pooler_output: Tensor = None              # (B, E)
    hidden_states: tuple = None               # N + 1 of (B, L, E): the embeddings, then each layer's output
    attentions: tuple = None                  # N of (B, H, L, L)


@dataclasses.dataclass
class SequenceClassifierOutput:
    loss: Tensor = None                       # scalar, when labels were given
    logits: Tensor = None                     # (B, num_labels)
    hidden_states: tuple = None
    attentions: tuple = None


@dataclasses.dataclass
class MaskedLMOutput:
    loss: Tensor = None                       # scalar, when labels were given
    logits: Tensor = None                     # (B, L, V); with labels, (M, V): the M labelled rows (bert.py)
    hidden_states: tuple = None
    attentions: tuple = None


@dataclasses.dataclass
class BertForPreTrainingOutput:
    loss: Tensor = None                       # scalar: masked-LM loss + next-sentence loss
    prediction_logits: Tensor = None          # as MaskedLMOutput.logits
    seq_relationship_logits: Tensor = None    # (B, 2): is-next (0) / random (1)
    hidden_states: tuple = None
    attentions: tuple = None
