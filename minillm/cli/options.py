"""What every command's options share: --device, an --out folder checked before any work, --max-length
within the model's positions."""
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
