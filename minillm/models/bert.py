"""BERT (Devlin et al., 2018), built as Hugging Face's transformers builds it, so checkpoints load 1:1.

    input_ids (B, L)
      -> embeddings: word[ids] + token_type[type ids] + position[0..L-1], LayerNorm, dropout   (B, L, E)
      -> encoder: N post-LN Transformer layers; padding keys are masked out                   (B, L, E)
           = last_hidden_state
      -> pooler: tanh(Dense(h[:, 0])), the hidden state of the [CLS] token                    (B, E)
           = pooler_output
    BertForSequenceClassification adds dropout and a Dense layer: logits (B, num_labels), and
    the cross-entropy loss when labels are given.

Every module and weight has Hugging Face's name (``bert.encoder.layer.3.attention.self.query.weight``),
so ``model.named_parameters()`` lines up with the checkpoint's keys; the encoder layers come from
minillm.nn.transformer, which uses the same names.
"""
import dataclasses
import json
import logging
import os

import numpy

from .. import backend, cuda, pretrained, random, safetensors_io
from ..nn import Dropout, Embedding, LayerNorm, Linear, Module, TransformerEncoder, TransformerEncoderLayer
from ..nn import functional as F
from ..nn.transformer import ACTIVATIONS
from ..ops.nn import Embedding as EmbeddingLookup
from ..tensor import Tensor, as_array

logger = logging.getLogger("minillm")
CONFIG_NAME = "config.json"


class BertConfig:
    """BERT's hyper-parameters, read from and written to a Hugging Face config.json.

    The fields have Hugging Face's names and bert-base-uncased's defaults (see ``defaults``). A
    config.json must state the ``required`` fields, which fix the weights' shapes. Fields minillm
    does not use are kept in ``extra`` and written back; values minillm cannot honour are refused
    by name. ``num_labels`` is the length of ``id2label`` (labels of the classification head).
    """
    model_type = "bert"
    defaults = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                    attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                    layer_norm_eps=1e-12, pad_token_id=0, initializer_range=0.02, classifier_dropout=None,
                    problem_type=None)
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size")
    problem_types = (None, "regression", "single_label_classification", "multi_label_classification")

    def __init__(self, num_labels=None, id2label=None, **fields):
        model_type = fields.pop("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"model_type={model_type!r} is not supported: this is BERT's config")
        for name, default in self.defaults.items():
            setattr(self, name, fields.pop(name, default))
        fields.pop("label2id", None)  # derived from id2label
        num_labels = fields.pop("num_labels", None) if num_labels is None else num_labels
        self.id2label = {int(i): str(label) for i, label in (id2label or {}).items()}
        if num_labels is not None and num_labels != len(self.id2label):
            self.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        if not self.id2label:
            self.id2label = {0: "LABEL_0", 1: "LABEL_1"}
        self.extra = fields
        self._validate()

    @property
    def num_labels(self):
        return len(self.id2label)

    def _validate(self):
        def refuse(name, why):
            raise ValueError(f"{name}={getattr(self, name, self.extra.get(name))!r} is not supported: {why}")

        for name in self.required:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                refuse(name, "expected a positive integer")
        if self.hidden_size % self.num_attention_heads:
            refuse("hidden_size", f"it must be a multiple of num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            refuse("hidden_act", f"minillm's BERT supports {', '.join(ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if not (value is None and name == "classifier_dropout") and not 0 <= value <= 1:
                refuse(name, "a dropout probability must be in [0, 1]")
        if not self.layer_norm_eps > 0:
            refuse("layer_norm_eps", "it must be positive")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            refuse("pad_token_id", f"it must be None or an id below vocab_size={self.vocab_size}")
        if self.problem_type not in self.problem_types:
            refuse("problem_type", f"expected one of {self.problem_types}")
        if self.extra.get("position_embedding_type", "absolute") != "absolute":
            refuse("position_embedding_type", "minillm's BERT has absolute position embeddings only")
        for name in ("is_decoder", "add_cross_attention"):
            if self.extra.get(name):
                refuse(name, "minillm's BERT is an encoder only")

    def to_dict(self):
        fields = {name: getattr(self, name) for name in self.defaults}
        labels = {"id2label": {str(i): label for i, label in self.id2label.items()},
                  "label2id": {label: i for i, label in self.id2label.items()}}
        return dict(sorted({**self.extra, **fields, **labels, "model_type": self.model_type}.items()))

    @classmethod
    def from_dict(cls, values, **overrides):
        """A config from config.json's contents; the required fields must be there."""
        missing = [name for name in cls.required if name not in values]
        if missing:
            raise ValueError(f"missing field {missing[0]!r} (a BERT config.json needs {', '.join(cls.required)})")
        return cls(**{**values, **overrides})

    @classmethod
    def from_json_file(cls, path, **overrides):
        try:
            with open(path, encoding="utf-8") as f:
                values = json.load(f)
            if not isinstance(values, dict):
                raise ValueError(f"expected a JSON object, got {type(values).__name__}")
            return cls.from_dict(values, **overrides)
        except (ValueError, TypeError) as err:
            raise safetensors_io.CheckpointError(f"{path}: {err}") from None

    @classmethod
    def from_pretrained(cls, name_or_path, **overrides):
        """From a config.json file, a model folder, or a known model name (see minillm.pretrained)."""
        path = os.fspath(name_or_path)
        if not os.path.isfile(path):
            path = os.path.join(path if os.path.isdir(path) else pretrained.resolve(path), CONFIG_NAME)
        return cls.from_json_file(path, **overrides)

    def save_pretrained(self, folder):
        safetensors_io.atomic_write(os.path.join(folder, CONFIG_NAME), json.dumps(self.to_dict(), indent=2) + "\n")

    def __repr__(self):
        return f"BertConfig {json.dumps(self.to_dict(), indent=2)}"


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


class BertEmbeddings(Module):
    """e = LayerNorm(word[input_ids] + token_type[token_type_ids] + position[0..L-1]), then dropout.
    input_ids, token_type_ids: (B, L) integers -> (B, L, E)."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        """The ids were range-checked by _check_inputs (BertModel.forward): the tables are read
        without F.embedding's own check, which on a GPU would wait once per table."""
        positions = backend.array_module(input_ids).arange(input_ids.shape[1])
        e = _lookup(self.word_embeddings, input_ids) + _lookup(self.token_type_embeddings, token_type_ids)
        e = e + _lookup(self.position_embeddings, positions)  # (L, E), the same for every sequence of the batch
        return self.dropout(self.LayerNorm(e))


def _lookup(table, ids):
    """table(ids) for ids already checked to be in range."""
    return EmbeddingLookup.apply(ids, table.weight, padding_idx=table.padding_idx)


class BertPooler(Module):
    """pooled = tanh(Dense(h[:, 0])): the [CLS] token's final hidden state, (B, L, E) -> (B, E)."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return self.dense(hidden_states[:, 0]).tanh()


class BertPreTrainedModel(Module):
    """What every BERT model shares: Hugging Face's initialization, from_pretrained and save_pretrained."""
    base_model_prefix = "bert"
    # Checkpoint tensors that are no weights of ours: pre-training heads (ignored, and listed) and
    # buffers (ignored); and the task head a checkpoint of the bare model lacks (initialized, and listed).
    ignored_heads = (r"^cls\.", r"^classifier\.", r"^(bert\.)?pooler\.")
    ignored_buffers = (r"embeddings\.position_ids$", r"embeddings\.token_type_ids$")
    new_heads = (r"^classifier\.",)

    def _init_weights(self, module):
        """As Hugging Face: Linear and Embedding weights ~ N(0, initializer_range), biases 0, the
        padding row 0; LayerNorm weight 1, bias 0."""
        std = self.config.initializer_range
        if isinstance(module, (Linear, Embedding)):
            module.weight.data[...] = random.normal(module.weight.shape, std=std)
        if isinstance(module, Linear) and module.bias is not None:
            module.bias.data[...] = 0
        if isinstance(module, Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx] = 0
        if isinstance(module, LayerNorm):
            module.weight.data[...], module.bias.data[...] = 1, 0

    @classmethod
    def from_pretrained(cls, name_or_path, num_labels=None, config=None, output_loading_info=False):
        """The model from a Hugging Face folder (config.json + model.safetensors) or a known name
        (minillm.pretrained.resolve), in eval mode. Weights of heads this model lacks are ignored and
        a missing classifier is initialized, each with a warning; every other mismatch is an error."""
        folder = pretrained.resolve(name_or_path)
        if config is None:
            config = BertConfig.from_pretrained(folder, **({} if num_labels is None else {"num_labels": num_labels}))
        model = cls(config, initialize=False)  # every weight but a new head is about to be overwritten
        tensors = safetensors_io.index_weights(folder)
        weights, new, ignored = safetensors_io.match_state_dict(
            model, tensors, cls.base_model_prefix, cls.ignored_heads, cls.ignored_buffers, cls.new_heads)
        safetensors_io.read_into(model.state_dict(), weights)  # from the file into the parameters' own arrays
        if ignored:
            logger.warning("Some weights of %s were not used by %s (expected for pre-training heads): %s",
                           folder, cls.__name__, ignored)
        if new:
            logger.warning("Some weights of %s were not in %s and are newly initialized: %s. "
                           "Train the model on a downstream task before using it for predictions.",
                           cls.__name__, folder, new)
        model.eval()
        return (model, {"missing_keys": new, "unexpected_keys": ignored}) if output_loading_info else model

    def save_pretrained(self, folder):
        """config.json and model.safetensors (float32, Hugging Face's names), each written atomically."""
        self.config.extra["architectures"] = [type(self).__name__]
        self.config.extra.pop("torch_dtype", None)
        self.config.extra["dtype"] = "float32"
        safetensors_io.write_safetensors(self.state_dict(), os.path.join(folder, safetensors_io.WEIGHTS_NAME),
                                     metadata={"format": "pt"})
        self.config.save_pretrained(folder)


class BertModel(BertPreTrainedModel):
    """The bare encoder: embeddings, N Transformer layers, pooler."""

    def __init__(self, config, add_pooling_layer=True, initialize=True):
        """initialize=False skips BERT's initialization (the layers keep torch's defaults) for a model
        whose weights a checkpoint is about to overwrite (from_pretrained: 110M fewer random draws for BERT-base)."""
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        layer = TransformerEncoderLayer(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                                        dropout=config.hidden_dropout_prob, activation=config.hidden_act,
                                        layer_norm_eps=config.layer_norm_eps,
                                        attention_dropout=config.attention_probs_dropout_prob)
        self.encoder = TransformerEncoder(layer, config.num_hidden_layers)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        if initialize:
            self.apply(self._init_weights)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_attentions=False,
                output_hidden_states=False):
        """input_ids (B, L) integers; attention_mask (B, L): 1 for tokens, 0 for padding (default all 1);
        token_type_ids (B, L): 0 for the first segment, 1 for the second (default all 0).
        Padded keys get no attention (Hugging Face adds a large negative number to their scores; the
        fused kernel skips them). A row whose mask is all 0 attends to nothing and its attention output
        is 0, where Hugging Face's would average all positions: every sequence should keep its [CLS]."""
        input_ids, attention_mask, token_type_ids = _check_inputs(self.config, input_ids, attention_mask,
                                                                  token_type_ids)
        device = self.embeddings.word_embeddings.weight.device  # inputs go there once, not once per use
        input_ids, token_type_ids = backend.to_device(input_ids, device), backend.to_device(token_type_ids, device)
        if attention_mask is not None:
            attention_mask = backend.to_device(attention_mask, device)
        h = self.embeddings(input_ids, token_type_ids)
        h, hidden_states, attentions = self.encoder(h, attention_mask, output_hidden_states, output_attentions)
        pooled = self.pooler(h) if self.pooler is not None else None
        return BaseModelOutputWithPooling(h, pooled, hidden_states, attentions)


class BertForSequenceClassification(BertPreTrainedModel):
    """BERT with a classifier on the pooled [CLS] state: logits = Dense(Dropout(pooler_output))."""

    def __init__(self, config, initialize=True):
        super().__init__()
        self.config, self.num_labels = config, config.num_labels
        self.bert = BertModel(config, initialize=initialize)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = Dropout(p)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self._init_weights(self.classifier)  # always: a checkpoint of the bare model has none

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, output_attentions=False,
                output_hidden_states=False):
        """As BertModel; labels (B,): class ids (or floats for regression / multi-label) -> .loss."""
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = None if labels is None else self._loss(logits, labels)
        return SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)

    def _loss(self, logits, labels):
        """Hugging Face's choice: mean squared error for one label (regression), cross-entropy for
        integer class ids, binary cross-entropy with logits for float multi-label targets."""
        y = as_array(labels)
        kind = self.config.problem_type or ("regression" if self.num_labels == 1 else
                                            "single_label_classification" if y.dtype.kind in "iu" else
                                            "multi_label_classification")
        if kind == "single_label_classification":
            return F.cross_entropy(logits, y.reshape(-1))
        y = Tensor(backend.to_device(y, logits.device, logits.dtype).reshape(logits.shape))
        if kind == "regression":
            return ((logits - y) ** 2).mean()
        # log(1 + exp(-|x|)) + max(x, 0) - x y: binary cross-entropy of sigmoid(x), without overflow
        return ((-logits.abs()).exp() + 1).log().mean() + (logits.relu() - logits * y).mean()


def _check_inputs(config, input_ids, attention_mask, token_type_ids):
    """The model's inputs as (B, L) integer arrays (on the device they came on), with errors that
    name the argument at fault. Device inputs are range-checked with one wait for the GPU, not four,
    and not at all inside a CUDA-graph capture, where nothing may wait (the batch was checked on the
    host with this function: minillm.training.cuda_graph)."""
    ids = _integers(input_ids, "input_ids")
    if ids.shape[1] > config.max_position_embeddings:
        raise ValueError(f"input_ids has {ids.shape[1]} tokens per sequence, more than max_position_embeddings="
                         f"{config.max_position_embeddings}: truncate the input (tokenizer max_length)")
    xp = backend.array_module(ids)
    types = xp.zeros_like(ids) if token_type_ids is None else _integers(token_type_ids, "token_type_ids", ids.shape)
    if ids.size and not (backend.on_device(ids) and cuda.is_capturing()):
        low, high, types_low, types_high = (int(n) for n in backend.to_host(
            xp.stack([ids.min(), ids.max(), types.min(), types.max()])))
        if low < 0 or high >= config.vocab_size:
            raise ValueError(f"input_ids holds ids from {low} to {high}; they must be in "
                             f"[0, vocab_size={config.vocab_size})")
        if types_low < 0 or types_high >= config.type_vocab_size:
            raise ValueError(f"token_type_ids holds {types_low} to {types_high}; this model has "
                             f"type_vocab_size={config.type_vocab_size} (ids 0..{config.type_vocab_size - 1})")
    mask = None if attention_mask is None else _integers(attention_mask, "attention_mask", ids.shape) != 0
    return ids, mask, types


def _integers(values, name, shape=None):
    array = as_array(values)
    if array.dtype.kind not in "biu":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.ndim != 2 or (shape is not None and array.shape != shape):
        expected = "(batch, sequence length)" if shape is None else f"{shape}, the shape of input_ids"
        raise ValueError(f"{name} must be {expected}, got shape {array.shape}")
    return array.astype(numpy.int64, copy=False)
