"""What every command's options share: --device, an --out folder checked before any work, --max-length
within the model's positions, and the data file's format and columns."""
import argparse
import logging
import os

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


def max_length(requested, model):
    positions = model.config.max_position_embeddings
    if requested is None:
        return positions
    if requested < 2:
        raise ValueError(f"--max-length must be at least 2 ([CLS] and [SEP]), got {requested}")
    if requested > positions:
        logger.warning("--max-length %d is more than the model's %d positions; using %d", requested, positions,
                       positions)
        return positions
    return requested


def data_options(command, labeled=True):
    """--format and the columns: what finetune, eval and predict read a data file with."""
    from ..data.readers import LABEL_COLUMNS, PAIR_COLUMNS, TEXT_COLUMNS

    command.add_argument("--format", choices=["tsv", "csv", "jsonl"], default=None,
                         help="the data files' format (default: from the extension: .tsv, .csv, .jsonl)")
    command.add_argument("--text-column", default=None,
                         help=f"the text (default: the first of {', '.join(TEXT_COLUMNS)}, after the pairs)")
    command.add_argument("--text-pair-column", default=None,
                         help="the second text of a pair (default: the second of a pair of columns the file has: "
                              + ", ".join("/".join(p) for p in PAIR_COLUMNS) + ")")
    if labeled:
        command.add_argument("--label-column", default=None,
                             help=f"the label (default: the first of {', '.join(LABEL_COLUMNS)})")
    command.add_argument("--label-separator", default=",",
                         help="what joins several labels in a tsv/csv field (multi-label; default ',')")


def read_data(args, path, labeled=True, limit=None, limit_option="--limit"):
    """The examples of a data file (its first ``limit`` rows), with the command's --format and columns."""
    from ..data import read_examples

    if limit is not None and limit < 1:
        raise ValueError(f"{limit_option} must be at least 1, got {limit}")
    return read_examples(path, args.text_column, args.text_pair_column, getattr(args, "label_column", None),
                         args.format, labeled=labeled, limit=limit)
