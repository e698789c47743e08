"""finetune, predict and eval: a BERT sequence classifier on labeled text."""
import logging
import os
import shlex
import sys

from .options import check_output, device_option, load_classifier, max_length

logger = logging.getLogger("minillm")


def add_commands(commands):
    tune = commands.add_parser("finetune", help="fine-tune a BERT classifier on labeled text",
                               description="Fine-tune a pretrained BERT (Hugging Face folder or known name) "
                                           "for text classification, with the BERT recipe.")
    tune.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or known name (default %(default)s)")
    tune.add_argument("--data", required=True, help="folder with train.tsv (and dev.tsv), or one .tsv file")
    tune.add_argument("--out", required=True, help="output folder (a Hugging Face model when done)")
    tune.add_argument("--epochs", type=int, default=1)
    tune.add_argument("--batch-size", type=int, default=32)
    tune.add_argument("--lr", type=float, default=5e-5)
    tune.add_argument("--max-length", type=int, default=None,
                      help="tokens per text, longer ones are truncated (default: the model's positions)")
    tune.add_argument("--seed", type=int, default=42)
    tune.add_argument("--weight-decay", type=float, default=0.01, help="on weights, not biases or LayerNorm")
    tune.add_argument("--warmup-ratio", type=float, default=0.1, help="fraction of steps of linear warmup")
    tune.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the global gradient norm (0: off)")
    tune.add_argument("--num-labels", type=int, default=2, help="classes; labels are 0..N-1")
    tune.add_argument("--bucket", action="store_true", help="batch texts of similar length together (faster)")
    tune.add_argument("--limit", type=int, default=None, help="use only the first N training rows")
    tune.add_argument("--eval-limit", type=int, default=None, help="evaluate on only the first N dev rows")
    tune.add_argument("--save-steps", type=int, default=0, help="also checkpoint every N steps")
    tune.add_argument("--stop-after", type=int, default=None, help="stop (and checkpoint) after N steps; "
                      "continue later with --resume")
    tune.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    tune.add_argument("--overwrite", action="store_true", help="write into an --out folder that is not empty")
    tune.add_argument("--no-progress", action="store_true", help="no progress bar")
    tune.add_argument("--cuda-graph", action="store_true",
                      help="capture the training step as a CUDA graph and replay it (--device cuda; turns dropout "
                           "off, pads every batch to the longest training text)")
    device_option(tune)
    tune.set_defaults(run=finetune)

    predict = commands.add_parser("predict", help="classify texts with a fine-tuned model")
    predict.add_argument("--model", required=True, help="a fine-tuned model folder")
    predict.add_argument("--max-length", type=int, default=None)
    predict.add_argument("texts", nargs="+", metavar="TEXT")
    device_option(predict)
    predict.set_defaults(run=predict_command)

    evaluate = commands.add_parser("eval", help="accuracy and loss of a model on a labeled TSV file")
    evaluate.add_argument("--model", required=True, help="a fine-tuned model folder")
    evaluate.add_argument("--data", required=True, help="a .tsv file with sentence and label columns")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--max-length", type=int, default=None)
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N rows")
    device_option(evaluate)
    evaluate.set_defaults(run=eval_command)


def finetune(args):
    from .. import random
    from ..training import CHECKPOINT_NAME, Trainer, TrainingArguments, TrainingInterrupted

    train_file, dev_file = _data_files(args.data)
    check_output(args.out, args.resume, args.overwrite)
    options = TrainingArguments(output_dir=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
                                max_grad_norm=args.max_grad_norm, seed=args.seed, bucket=args.bucket,
                                save_steps=args.save_steps, progress=not args.no_progress,
                                cuda_graph=args.cuda_graph)  # every setting checked before any work
    if args.stop_after is not None and args.stop_after < 1:
        raise ValueError(f"--stop-after must be at least 1, got {args.stop_after}")
    train_rows = _rows(train_file, args.num_labels, args.limit, "--limit")  # a bad or empty file fails here
    dev_rows = _rows(dev_file, args.num_labels, args.eval_limit, "--eval-limit") if dev_file else None
    random.manual_seed(args.seed)  # the classifier's initialization is part of the run
    no_dropout = {}
    if args.cuda_graph:  # a replayed step would repeat the dropout masks drawn when it was captured
        no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
        logger.info("--cuda-graph: dropout is off (a replayed step would repeat one dropout mask)")
    model, tokenizer = load_classifier(args.model, args.device, num_labels=args.num_labels, **no_dropout)
    length = max_length(args.max_length, model)
    train = _dataset(tokenizer, train_rows, length, train_file)
    dev = _dataset(tokenizer, dev_rows, length, dev_file) if dev_file else None
    if args.overwrite and os.path.exists(os.path.join(args.out, CHECKPOINT_NAME)):
        os.remove(os.path.join(args.out, CHECKPOINT_NAME))  # never resume into another run's state
    trainer = Trainer(model, options, train, dev, tokenizer)
    logger.info("fine-tuning %s on %d examples (%s): %d epochs of %d steps", args.model, len(train), train_file,
                args.epochs, len(trainer.loader))
    try:
        trainer.train(resume=args.resume, stop_after=args.stop_after)  # logs each epoch's evaluation
    except TrainingInterrupted as stop:
        print(f"minillm finetune: interrupted: step {stop.step} of {trainer.total_steps} is checkpointed in "
              f"{stop.checkpoint}; continue with:\n  {resume_command(args.argv)}", file=sys.stderr)
        return 130
    if trainer.world.rank != 0:
        pass  # under mpirun rank 0 alone reports
    elif trainer.step < trainer.total_steps:
        print(f"stopped at step {trainer.step} of {trainer.total_steps}; continue with --resume")
    else:
        print(f"saved the fine-tuned model to {args.out}")
    return 0


def predict_command(args):
    from ..training import predict_proba

    model, tokenizer = load_classifier(args.model, args.device)
    probabilities = predict_proba(model, tokenizer, args.texts, max_length(args.max_length, model))
    for text, p in zip(args.texts, probabilities):
        label = int(p.argmax())
        shown = "  ".join(f"p({i})={q:.4f}" for i, q in enumerate(p))
        print(f"{label} ({model.config.id2label[label]})  {shown}  {text}")
    return 0


def eval_command(args):
    from ..data import DataLoader, pad_batch
    from ..training import evaluate

    model, tokenizer = load_classifier(args.model, args.device)
    rows = _rows(args.data, model.config.num_labels, args.limit, "--limit")
    data = _dataset(tokenizer, rows, max_length(args.max_length, model), args.data)
    loader = DataLoader(data, args.batch_size, collate_fn=lambda b: pad_batch(b, tokenizer.pad_token_id))
    metrics = evaluate(model, loader)
    right = round(metrics["accuracy"] * metrics["examples"])
    print(f"accuracy {metrics['accuracy']:.4f} ({right}/{metrics['examples']}), loss {metrics['loss']:.4f}")
    return 0


def _data_files(data):
    """(train file, dev file or None) from a GLUE folder or one file."""
    if os.path.isdir(data):
        train, dev = os.path.join(data, "train.tsv"), os.path.join(data, "dev.tsv")
        if not os.path.isfile(train):
            raise FileNotFoundError(f"--data {data}: the folder has no train.tsv (expected GLUE's layout: "
                                    "train.tsv, dev.tsv)")
        return train, dev if os.path.isfile(dev) else None
    if not os.path.isfile(data):
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    return data, None


def _rows(path, num_labels, limit, option):
    """(texts, labels) of a data file, its first ``limit`` rows if given (``option`` names the limit)."""
    from ..data import read_glue_tsv

    if limit is not None and limit < 1:
        raise ValueError(f"{option} must be at least 1, got {limit}")
    texts, labels = read_glue_tsv(path, num_labels)
    return (texts, labels) if limit is None else (texts[:limit], labels[:limit])


def _dataset(tokenizer, rows, length, path):
    from ..data import TextClassificationDataset

    return TextClassificationDataset(tokenizer, *rows, length, name=os.path.basename(path))


def resume_command(argv):
    """The command line that continues the run ``argv`` started: --resume in place of --overwrite."""
    kept = [arg for arg in argv if arg not in ("--overwrite", "--resume")]
    return shlex.join(["minillm", *kept, "--resume"])
