"""finetune, predict and eval: a BERT sequence classifier on labeled text."""
import logging
import os

from .options import check_output, device_option, load_classifier, max_length, run_training, training_options

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
    tune.add_argument("--num-labels", type=int, default=2, help="classes; labels are 0..N-1")
    tune.add_argument("--bucket", action="store_true", help="batch texts of similar length together (faster)")
    tune.add_argument("--limit", type=int, default=None, help="use only the first N training rows")
    tune.add_argument("--eval-limit", type=int, default=None, help="evaluate on only the first N dev rows")
    tune.add_argument("--cuda-graph", action="store_true",
                      help="capture the training step as a CUDA graph and replay it (--device cuda; turns dropout "
                           "off, pads every batch to the longest training text)")
    training_options(tune)
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
    from ..training import Trainer, TrainingArguments

    train_file, dev_file = _data_files(args.data)
    check_output(args.out, args.resume, args.overwrite)
    options = TrainingArguments(output_dir=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
                                max_grad_norm=args.max_grad_norm, seed=args.seed, bucket=args.bucket,
                                save_steps=args.save_steps, progress=not args.no_progress,
                                cuda_graph=args.cuda_graph)  # every setting checked before any work
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
    trainer = Trainer(model, options, train, dev, tokenizer)
    logger.info("fine-tuning %s on %d examples (%s): %d epochs of %d steps", args.model, len(train), train_file,
                args.epochs, len(trainer.loader))
    return run_training(trainer, args, f"saved the fine-tuned model to {args.out}")


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
