"""What every command's options share: --device, an --out folder checked before any work, --max-length
within the model's positions, the data file's format and columns, a classifier loaded so that a bad
file fails before any weight is read, and a training run as --overwrite, --resume and --stop-after say."""
import argparse
import logging
import os
import shlex
import sys
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


def training_options(command):
    """The BERT recipe's knobs and a run's checkpoints, shared by every command that trains with the Trainer."""
    command.add_argument("--weight-decay", type=float, default=0.01, help="on weights, not biases or LayerNorm")
    command.add_argument("--warmup-ratio", type=float, default=0.1, help="fraction of steps of linear warmup")
    command.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the global gradient norm (0: off)")
    command.add_argument("--save-steps", type=int, default=0, help="also checkpoint every N steps")
    command.add_argument("--stop-after", type=positive_int, default=None, help="stop (and checkpoint) after N steps; "
                         "continue later with --resume")
    command.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    command.add_argument("--overwrite", action="store_true", help="write into an --out folder that is not empty")
    command.add_argument("--no-progress", action="store_true", help="no progress bar")


def positive_int(text):
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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


def run_training(trainer, args, finished):
    """Train as --overwrite (no resuming into the old run's checkpoint), --resume and --stop-after say,
    then print ``finished`` (with a dev set: the best model's metric and step, the model --out holds),
    or where the run stopped (under mpirun rank 0 alone reports); the exit code.
    Ctrl-C ends the run at the end of its step, checkpointed, with the command that resumes (130)."""
    from ..training import CHECKPOINT_NAME, TrainingInterrupted

    checkpoint = os.path.join(args.out, CHECKPOINT_NAME)
    if args.overwrite and os.path.exists(checkpoint):
        os.remove(checkpoint)  # never resume into another run's state
    try:
        trainer.train(resume=args.resume, stop_after=args.stop_after)  # logs each epoch's evaluation
    except TrainingInterrupted as stop:  # Ctrl-C: the step it came in was finished and checkpointed
        print(f"minillm {args.command}: interrupted: step {stop.step} of {trainer.total_steps} is checkpointed in "
              f"{stop.checkpoint}; continue with:\n  {resume_command(args.argv)}", file=sys.stderr)
        return 130
    if trainer.world.rank != 0:
        pass  # under mpirun rank 0 alone reports
    elif not trainer.finished:
        print(f"stopped at step {trainer.step} of {trainer.total_steps}; continue with --resume")
    elif trainer.eval_loader is not None:  # the Trainer kept the best evaluation's model in --out
        early = f"stopped early at step {trainer.step}; " if trainer.stopped_early else ""
        print(f"{early}saved the best model ({trainer.args.metric_for_best_model} {trainer.best_metric:.4f}, step "
              f"{trainer.best_step}) to {args.out}; the last state is {checkpoint}")
    else:
        print(finished)
    return 0


def resume_command(argv):
    """The command line that continues the run ``argv`` started: --resume in place of --overwrite."""
    kept = [arg for arg in argv if arg not in ("--overwrite", "--resume")]
    return shlex.join(["minillm", *kept, "--resume"])


def load_classifier(name, device="cpu", **config_fields):
    """(model, tokenizer) of a BERT classifier folder or known name: the tokenizer files, then
    config.json (with ``config_fields`` set), checked together, and only then the weights
    (PreTrainedModel.tokenizer_and_config)."""
    from ..models.bert import BertForSequenceClassification

    tokenizer, config = BertForSequenceClassification.tokenizer_and_config(name, **config_fields)
    model = BertForSequenceClassification.from_pretrained(name, config=config).to(device)
    return model, tokenizer


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
