"""BERT's configuration: the hyper-parameters of a Hugging Face config.json (transformers'
configuration_bert.py), read, checked and written back."""
import json
import math
import os

from .. import pretrained, safetensors_io
from ..nn.functional import ACTIVATIONS

CONFIG_NAME = "config.json"
MAX_LABELS = 100_000  # classes of a classification head; more is surely a corrupt config.json


class BertConfig:
    """BERT's hyper-parameters, read from and written to a Hugging Face config.json.

    The fields have Hugging Face's names and bert-base-uncased's defaults (see ``defaults``). A
    config.json must state the ``required`` fields, which fix the weights' shapes. Fields minillm
    does not use are kept in ``extra`` and written back; values minillm cannot honour are refused
    by name. ``num_labels`` is the length of ``id2label`` (labels of the classification head).
    ``tie_word_embeddings`` (True, as Hugging Face's): the masked-LM decoder shares the word
    embeddings' weight (bert.py, BertForMaskedLM).
    """
    model_type = "bert"
    defaults = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                    attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                    layer_norm_eps=1e-12, pad_token_id=0, initializer_range=0.02, classifier_dropout=None,
                    problem_type=None, tie_word_embeddings=True)
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
        if num_labels is not None and not (type(num_labels) is int and 1 <= num_labels <= MAX_LABELS):
            raise ValueError(f"num_labels={num_labels!r} is not supported: expected an integer in 1..{MAX_LABELS}")
        if not isinstance(id2label or {}, dict):
            raise ValueError(f"id2label must be an object of class id -> name, got {type(id2label).__name__}")
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

        def number(value):  # a JSON number: not a string, not true or false
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        for name in self.required:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                refuse(name, "expected a positive integer")
        if self.hidden_size % self.num_attention_heads:
            refuse("hidden_size", f"it must be a multiple of num_attention_heads={self.num_attention_heads}")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACTIVATIONS:
            refuse("hidden_act", f"minillm's BERT supports {', '.join(ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if not (value is None and name == "classifier_dropout") and not (number(value) and 0 <= value <= 1):
                refuse(name, "a dropout probability must be in [0, 1]")
        if not (number(self.initializer_range) and 0 <= self.initializer_range < math.inf):
            refuse("initializer_range", "a standard deviation must be a finite number >= 0")
        if not (number(self.layer_norm_eps) and self.layer_norm_eps > 0):
            refuse("layer_norm_eps", "it must be positive")
        if self.pad_token_id is not None and not (type(self.pad_token_id) is int and
                                                  0 <= self.pad_token_id < self.vocab_size):
            refuse("pad_token_id", f"it must be None or an id below vocab_size={self.vocab_size}")
        if not isinstance(self.tie_word_embeddings, bool):
            refuse("tie_word_embeddings", "expected true or false")
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
        except (ValueError, TypeError, RecursionError) as err:  # RecursionError: JSON nested too deep
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
