"""What every command's options share: --device, an --out folder checked before any work, --max-length
within the model's positions, and a training run as --overwrite, --resume and --stop-after say."""
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


def training_options(command):
    """The BERT recipe's knobs and a run's checkpoints, shared by every command that trains with the Trainer."""
    command.add_argument("--weight-decay", type=float, default=0.01, help="on weights, not biases or LayerNorm")
    command.add_argument("--warmup-ratio", type=float, default=0.1, help="fraction of steps of linear warmup")
    command.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the global gradient norm (0: off)")
    command.add_argument("--save-steps", type=int, default=0, help="also checkpoint every N steps")
    command.add_argument("--stop-after", type=int, default=None, help="stop (and checkpoint) after N steps; "
                         "continue later with --resume")
    command.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    command.add_argument("--overwrite", action="store_true", help="write into an --out folder that is not empty")
    command.add_argument("--no-progress", action="store_true", help="no progress bar")


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


def run_training(trainer, args, finished):
    """Train as --overwrite (no resuming into the old run's checkpoint), --resume and --stop-after say,
    then print ``finished``, or where the run stopped (under mpirun rank 0 alone reports)."""
    from ..training import CHECKPOINT_NAME

    checkpoint = os.path.join(args.out, CHECKPOINT_NAME)
    if args.overwrite and os.path.exists(checkpoint):
        os.remove(checkpoint)  # never resume into another run's state
    trainer.train(resume=args.resume, stop_after=args.stop_after)  # logs each epoch's evaluation
    if trainer.world.rank != 0:
        return
    if trainer.step < trainer.total_steps:
        print(f"stopped at step {trainer.step} of {trainer.total_steps}; continue with --resume")
    else:
        print(finished)
