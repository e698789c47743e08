"""What every command's options share: --device, an --out folder checked before any work, --max-length
within the model's positions, and a classifier loaded so that a bad file fails before any weight is read."""
import argparse
import logging
import os
import tempfile

logger = logging.getLogger("minillm")


def device_option(command):
    command.add_argument("--device", type=device, default="cpu",
                         help="cpu (default), cuda or cuda:N (a GPU, through CuPy: the extra cuda12 or cuda13)")


def device(spec):
    """--device, checked before any work starts: an unknown name or a missing GPU is a usage error."""
    from .. import backend

    try:
        backend.module_for(spec)
    except (ValueError, RuntimeError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return backend.Device(spec)


def check_output(out, resume, overwrite):
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite starts a new one: pass one of them")
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--out {out} is a file, not a folder")
    if not resume and not overwrite and os.path.isdir(out) and os.listdir(out):
        raise FileExistsError(f"--out {out} exists and is not empty: pass --overwrite to write over it, "
                              "or --resume to continue the run checkpointed there")
    try:  # hours of training must not end in a folder that cannot take the model
        os.makedirs(out, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as err:
        raise OSError(err.errno, f"--out {out} cannot be written ({err.strerror})") from None


def max_length(requested, model):
    """--max-length, or the model's positions by default; beyond them is an error (there are no
    position embeddings for the tokens past them)."""
    positions = model.config.max_position_embeddings
    if requested is None:
        return positions
    if requested < 2:
        raise ValueError(f"--max-length must be at least 2 ([CLS] and [SEP]), got {requested}")
    if requested > positions:
        raise ValueError(f"--max-length {requested} is more than the model's {positions} position embeddings "
                         f"(max_position_embeddings in its config.json): pass --max-length {positions} or less")
    return requested


def load_classifier(name, device="cpu", **config_fields):
    """(model, tokenizer) of a BERT classifier folder or known name, in the order that reads the
    least before it can fail: the tokenizer files, then config.json (with ``config_fields`` set),
    each checked, then the vocabulary against the embedding table, and only then the weights."""
    from ..models.bert import BertConfig, BertForSequenceClassification
    from ..safetensors_io import CheckpointError
    from ..tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(name)
    config = BertConfig.from_pretrained(name, **config_fields)
    if tokenizer.max_id >= config.vocab_size:
        raise CheckpointError(f"{name}: the tokenizer has ids up to {tokenizer.max_id} but config.json's "
                              f"vocab_size={config.vocab_size} gives the embedding table only that many rows: "
                              "tokenizer and model do not belong together")
    model = BertForSequenceClassification.from_pretrained(name, config=config).to(device)
    return model, tokenizer
