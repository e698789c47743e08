"""The model a pretraining run starts from: a named size, a config.json, or an existing checkpoint.

    config = pretraining_config("mini", tokenizer)          # 4 layers, hidden 256, the tokenizer's vocabulary
    model = BertForMaskedLM(config)                         # random weights, BERT's initialization
    model = BertForMaskedLM.from_pretrained("all-MiniLM-L6-v2")   # or continue from a checkpoint

The names are Google's smaller BERTs (Turc et al. 2019, "Well-Read Students Learn Better", released
with google-research/bert): L layers, hidden size H, H / 64 heads, a feed-forward of 4H, BERT's 512
positions. Their vocabulary is the tokenizer's, whatever its size.
"""
import logging
import os

logger = logging.getLogger("minillm")

MODEL_SIZES = {  # name: (layers, hidden size)
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
}


def size_fields(name):
    """BertConfig fields of the named size."""
    if name not in MODEL_SIZES:
        raise ValueError(f"unknown model size {name!r}: expected one of {', '.join(MODEL_SIZES)} or a config.json")
    layers, hidden = MODEL_SIZES[name]
    return dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=hidden // 64,
                intermediate_size=4 * hidden, max_position_embeddings=512, type_vocab_size=2)


def pretraining_config(size, tokenizer, **overrides):
    """A BertConfig of ``size`` (a name in MODEL_SIZES, or a config.json file) whose vocabulary and
    padding id are ``tokenizer``'s (a config.json's own vocab_size is replaced, with a warning
    when it differs); ``overrides``: more fields (e.g. hidden_dropout_prob)."""
    from ..models import BertConfig

    vocabulary = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if os.path.isfile(os.fspath(size)):
        config = BertConfig.from_json_file(size, **vocabulary, **overrides)
        stated = BertConfig.from_json_file(size).vocab_size
        if stated != config.vocab_size:
            logger.warning("%s: vocab_size %d replaced by the tokenizer's %d", size, stated, config.vocab_size)
        return config
    return BertConfig(**size_fields(size), **vocabulary, **overrides)
