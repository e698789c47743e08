"""What every model with a Hugging Face checkpoint shares (transformers' modeling_utils.py): the
PreTrainedModel mixin, with Hugging Face's initialization, from_pretrained and save_pretrained.

A model class sets ``config_class`` (BertConfig), ``base_model_prefix`` (the attribute holding the
bare model: ``bert``), and which checkpoint tensors are no weights of its own (``ignored_heads``:
ignored and listed; ``ignored_buffers``: ignored) and which of its weights a checkpoint may lack
(``new_heads``: initialized and listed); its __init__ takes (config, initialize=True). A model
whose output layer shares the input embeddings' weight names the pairs in ``_tied_weights_keys``
(transformers' attribute, {tied weight: the weight it shares}) and calls tie_weights().
"""
import logging
import os
import re

from .. import pretrained, random, safetensors_io
from ..nn import Embedding, LayerNorm, Linear, Module

logger = logging.getLogger("minillm")


class PreTrainedModel(Module):
    """A Module with a ``config``, loaded from and saved to a Hugging Face folder."""
    config_class = None
    base_model_prefix = ""
    ignored_heads = ()
    ignored_buffers = ()
    new_heads = ()
    _tied_weights_keys = {}

    def tie_weights(self):
        """Make each tied weight of ``_tied_weights_keys`` the very Parameter it shares (transformers'
        tie_weights), unless ``config.tie_word_embeddings`` is false. One Parameter used twice in the
        graph receives the sum of both uses' gradients, and named_parameters() lists it once, under
        the name it had first: so it is updated once, and saved once, under that name, as
        transformers writes a tied checkpoint (without the tied copy)."""
        if not getattr(self.config, "tie_word_embeddings", True):
            return
        modules, params = dict(self.named_modules()), dict(self.named_parameters())
        for tied, source in self._tied_weights_keys.items():
            owner, attribute = tied.rsplit(".", 1)
            setattr(modules[owner], attribute, params[source])

    def tied_weights(self):
        """The names of the weights tie_weights() made copies of another (none when untied)."""
        return list(self._tied_weights_keys) if getattr(self.config, "tie_word_embeddings", True) else []

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
    def config_shapes(cls, config):
        """{name in the bare model: shape} of the weights whose shapes follow from the config's sizes,
        checked against a checkpoint's headers before the model is built (each model defines it)."""
        return {}

    def check_batch(self, batch):
        """Check ``batch`` (a dict of host arrays: forward's keyword arguments) as forward would,
        raising the same errors, without running the model. A CUDA-graph step calls it on the host,
        because inside a captured graph nothing may wait for the GPU. Each model defines it."""
        raise NotImplementedError(f"{type(self).__name__} does not define check_batch()")

    @classmethod
    def tokenizer_and_config(cls, name_or_path, tokenizer=None, **config_fields):
        """(tokenizer, config) of a model folder or known name, read and checked together before any
        weight is, in the order that reads the least before it can fail: the tokenizer files (of the
        folder ``tokenizer``, if given; else the model's), then config.json (``config_fields`` set),
        then the tokenizer's largest id against config's vocab_size, the embedding table's rows.
        from_pretrained(name_or_path, config=config) reads the weights last: so a broken tokenizer
        file, or a vocabulary the model cannot embed, fails at once, whatever model.safetensors holds
        (gigabytes, or garbage). Every command that loads a model loads it so."""
        from ..tokenizer import BertTokenizer

        folder = pretrained.resolve(name_or_path)  # a known name is fetched; a folder's files are only listed
        tokens = BertTokenizer.from_pretrained(folder if tokenizer is None else tokenizer)
        config = cls.config_class.from_pretrained(folder, **config_fields)
        if tokens.max_id >= config.vocab_size:
            raise safetensors_io.CheckpointError(
                f"{folder if tokenizer is None else tokenizer}: the tokenizer has ids up to {tokens.max_id} but "
                f"{os.path.join(folder, 'config.json')}'s vocab_size={config.vocab_size} gives the embedding table "
                "only that many rows: tokenizer and model do not belong together")
        return tokens, config

    @classmethod
    def from_pretrained(cls, name_or_path, num_labels=None, config=None, output_loading_info=False):
        """The model from a Hugging Face folder (config.json + model.safetensors) or a known name
        (minillm.pretrained.resolve), in eval mode. Weights of heads this model lacks are ignored and
        a missing new head is initialized, each with a warning; every other mismatch is an error.
        A tied weight's copy in the checkpoint (older files hold cls.predictions.decoder.weight) is
        skipped: the model reads the weight it shares."""
        folder = pretrained.resolve(name_or_path)
        if config is None:
            overrides = {} if num_labels is None else {"num_labels": num_labels}
            config = cls.config_class.from_pretrained(folder, **overrides)
        tensors = safetensors_io.index_weights(folder)
        cls._check_config_fits(folder, config, tensors)  # before the parameters are allocated
        model = cls(config, initialize=False)  # every weight but a new head is about to be overwritten
        skipped = cls.ignored_buffers + tuple(f"^{re.escape(name)}$" for name in model.tied_weights())
        weights, new, ignored = safetensors_io.match_state_dict(
            model, tensors, cls.base_model_prefix, cls.ignored_heads, skipped, cls.new_heads)
        safetensors_io.read_into(model.state_dict(), weights)  # from the file into the parameters' own arrays
        model._init_new(new)
        if ignored:
            logger.warning("Some weights of %s were not used by %s (expected for pre-training heads): %s",
                           folder, cls.__name__, ignored)
        if new:
            logger.warning("Some weights of %s were not in %s and are newly initialized: %s. "
                           "Train the model on a downstream task before using it for predictions.",
                           cls.__name__, folder, new)
        model.eval()
        return (model, {"missing_keys": new, "unexpected_keys": ignored}) if output_loading_info else model

    def _init_new(self, new):
        """Initialize each module whose weights are all ``new`` (a head the checkpoint lacks) as a
        model built from its config would have it; a module with any weight read is left alone."""
        new = set(new)
        for name, module in self.named_modules():
            weights = [f"{name}.{key}" for key, _ in module.named_parameters()]
            if weights and all(w in new for w in weights):
                self._init_weights(module)

    @classmethod
    def _check_config_fits(cls, folder, config, tensors):
        """A CheckpointError unless the checkpoint's headers (name -> TensorInfo) have the shapes the
        config's sizes imply (config_shapes): a vocab_size of 10**9 must fail here, not by
        allocating its embedding table."""
        prefix = cls.base_model_prefix + "."
        by_name = {safetensors_io.rename_legacy(key).removeprefix(prefix): info for key, info in tensors.items()}
        problems = []
        for name, shape in cls.config_shapes(config).items():
            info = by_name.get(name)
            if info is None:
                problems.append(f"the sizes ask for a tensor {name!r} of shape {shape}, which the checkpoint lacks")
            elif info.shape != shape:
                problems.append(f"the sizes make {name!r} {shape}, but {info.path} has {info.shape}")
        if problems:
            raise safetensors_io.CheckpointError(f"{folder}: config.json does not fit the weights:\n  "
                                                 + "\n  ".join(problems))

    def save_pretrained(self, folder):
        """config.json and model.safetensors (float32, Hugging Face's names), each written atomically."""
        self.config.extra["architectures"] = [type(self).__name__]
        self.config.extra.pop("torch_dtype", None)
        self.config.extra["dtype"] = "float32"
        safetensors_io.write_safetensors(self.state_dict(), os.path.join(folder, safetensors_io.WEIGHTS_NAME),
                                         metadata={"format": "pt"})
        self.config.save_pretrained(folder)
