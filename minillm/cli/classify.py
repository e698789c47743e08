"""finetune, predict and eval: a BERT sequence classifier (or regressor) on labeled text or pairs."""
import logging
import os

from .options import (check_output, data_options, device_option, load_classifier, max_length, read_data, run_training,
                      training_options)

logger = logging.getLogger("minillm")
DATA_EXTENSIONS = (".tsv", ".csv", ".jsonl")


def add_commands(commands):
    tune = commands.add_parser("finetune", help="fine-tune a BERT classifier on labeled text",
                               description="Fine-tune a pretrained BERT (Hugging Face folder or known name) "
                                           "for text classification or regression, with the BERT recipe.")
    tune.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or known name (default %(default)s)")
    tune.add_argument("--data", required=True,
                      help="folder with train.tsv|csv|jsonl (and dev.*, evaluated after each epoch), or one file")
    tune.add_argument("--out", required=True, help="output folder (a Hugging Face model when done)")
    tune.add_argument("--epochs", type=int, default=1)
    tune.add_argument("--batch-size", type=int, default=32)
    tune.add_argument("--lr", type=float, default=5e-5)
    tune.add_argument("--max-length", type=int, default=None,
                      help="tokens per text (or pair), longer ones are truncated (default: the model's positions)")
    tune.add_argument("--seed", type=int, default=42)
    data_options(tune)
    tune.add_argument("--problem-type", choices=["single_label_classification", "multi_label_classification",
                                                 "regression"], default="single_label_classification",
                      help="one class a row (default), several, or a number (MSE loss, one output)")
    tune.add_argument("--labels", default=None, type=lambda s: [n.strip() for n in s.split(",")],
                      help="the label names in their id order, comma-separated (default: the labels seen, sorted; "
                           "integer labels 0..N-1 are ids)")
    tune.add_argument("--num-labels", type=int, default=None,
                      help="classes of integer labels 0..N-1 (default: the largest label + 1)")
    tune.add_argument("--class-weights", default=None,
                      help="'balanced' (n / (classes x count), as scikit-learn's) or one weight per class, "
                           "comma-separated: the weighted cross-entropy of torch's weight=")
    tune.add_argument("--metric", default="loss",
                      help="the dev metric that picks the best epoch, whose model --out keeps (default loss; "
                           "e.g. accuracy, f1, macro_f1, matthews_correlation, pearson, spearmanr)")
    tune.add_argument("--early-stopping-patience", type=int, default=0,
                      help="stop after N evaluations without a better --metric (default 0: never)")
    tune.add_argument("--bucket", action="store_true", help="batch texts of similar length together (faster)")
    tune.add_argument("--limit", type=int, default=None, help="use only the first N training rows")
    tune.add_argument("--eval-limit", type=int, default=None, help="evaluate on only the first N dev rows")
    tune.add_argument("--cuda-graph", action="store_true",
                      help="capture the training step as a CUDA graph and replay it (--device cuda; turns dropout "
                           "off, pads every batch to the longest training text)")
    training_options(tune)
    device_option(tune)
    tune.set_defaults(run=finetune)

    predict = commands.add_parser("predict", help="classify texts, or a data file's rows, with a fine-tuned model")
    predict.add_argument("--model", required=True, help="a fine-tuned model folder")
    predict.add_argument("--max-length", type=int, default=None)
    predict.add_argument("--data", default=None, help="a .tsv, .csv or .jsonl file whose texts (or pairs) to predict")
    data_options(predict, labeled=False)
    predict.add_argument("--limit", type=int, default=None, help="only the first N rows of --data")
    predict.add_argument("texts", nargs="*", metavar="TEXT")
    device_option(predict)
    predict.set_defaults(run=predict_command)

    evaluate = commands.add_parser("eval", help="the metrics of a model on a labeled data file")
    evaluate.add_argument("--model", required=True, help="a fine-tuned model folder")
    evaluate.add_argument("--data", required=True, help="a .tsv, .csv or .jsonl file with text and label columns")
    data_options(evaluate)
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--max-length", type=int, default=None)
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N rows")
    device_option(evaluate)
    evaluate.set_defaults(run=eval_command)


def finetune(args):
    from .. import random
    from ..data import encode_labels
    from ..training import Trainer, TrainingArguments

    train_file, dev_file = _data_files(args.data)
    check_output(args.out, args.resume, args.overwrite)
    train_rows = read_data(args, train_file, limit=args.limit)  # a bad or empty file fails here
    labels = _encode(args, train_rows, encode_labels(train_rows, args.problem_type, names=args.labels,
                                                    num_labels=args.num_labels, separator=args.label_separator))
    dev_rows = read_data(args, dev_file, limit=args.eval_limit, limit_option="--eval-limit") if dev_file else None
    _check_selection(args, dev_rows, len(labels.id2label))
    options = TrainingArguments(output_dir=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
                                max_grad_norm=args.max_grad_norm, seed=args.seed, bucket=args.bucket,
                                save_steps=args.save_steps, progress=not args.no_progress,
                                cuda_graph=args.cuda_graph, metric_for_best_model=args.metric,
                                early_stopping_patience=args.early_stopping_patience,
                                class_weights=class_weights(args.class_weights, labels))  # checked before any weight
    random.manual_seed(args.seed)  # the classifier's initialization is part of the run
    fields = dict(num_labels=len(labels.id2label), id2label=labels.id2label, problem_type=args.problem_type)
    if args.cuda_graph:  # a replayed step would repeat the dropout masks drawn when it was captured
        fields.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
        logger.info("--cuda-graph: dropout is off (a replayed step would repeat one dropout mask)")
    model, tokenizer = load_classifier(args.model, args.device, **fields)
    length = max_length(args.max_length, model)
    train = _dataset(tokenizer, train_rows, labels.values, length)
    dev = None
    if dev_rows is not None:
        dev_labels = encode_labels(dev_rows, args.problem_type, id2label=model.config.id2label,
                                   separator=args.label_separator)
        dev = _dataset(tokenizer, dev_rows, dev_labels.values, length)
    trainer = Trainer(model, options, train, dev, tokenizer)
    kind = "pairs" if train_rows.text_pairs is not None else "texts"
    logger.info("fine-tuning %s on %d %s (%s, %s, labels %s): %d epochs of %d steps", args.model, len(train), kind,
                train_file, args.problem_type, ", ".join(model.config.id2label.values()), args.epochs,
                len(trainer.loader))
    return run_training(trainer, args, f"saved the fine-tuned model to {args.out}")


def _encode(args, rows, labels):
    """The training labels, after checking that --labels and --num-labels fit the problem type."""
    if args.problem_type == "regression" and (args.labels or args.num_labels or args.class_weights):
        raise ValueError("--problem-type regression has one output: --labels, --num-labels and --class-weights "
                         "are for classification")
    if len(labels.id2label) < 2 and args.problem_type != "regression":
        raise ValueError(f"{rows.path}: every label is {labels.id2label[0]!r}: classification needs 2 classes "
                         "or more (--labels names them all)")
    return labels


def _check_selection(args, dev_rows, classes):
    """--metric must be one the evaluation reports (said before training, not after an epoch)."""
    from ..training.metrics import METRIC_NAMES

    names = [n for n in METRIC_NAMES[args.problem_type] if n != "f1" or classes == 2]
    if args.metric not in names:
        raise ValueError(f"--metric {args.metric}: the evaluation of {args.problem_type} with {classes} classes "
                         f"reports {', '.join(names)}")
    if dev_rows is None and (args.early_stopping_patience or args.metric != "loss"):
        logger.warning("--metric and --early-stopping-patience need a dev file (dev.tsv|csv|jsonl beside train): "
                       "without one the last model is saved")


def class_weights(spec, labels):
    """--class-weights: None, 'balanced' (n / (classes x count of the class), scikit-learn's
    compute_class_weight) or a comma-separated weight per class."""
    import numpy

    if spec is None:
        return None
    classes = len(labels.id2label)
    if spec == "balanced":
        values = labels.values
        if values.ndim == 2:
            raise ValueError("--class-weights is for single-label classification (the weighted cross-entropy)")
        counts = numpy.bincount(values, minlength=classes)
        if not counts.all():
            missing = [labels.id2label[i] for i in numpy.flatnonzero(counts == 0)]
            raise ValueError(f"--class-weights balanced: no training row has the class(es) {missing}")
        return (len(values) / (classes * counts)).tolist()
    try:
        weights = [float(w) for w in spec.split(",")]
    except ValueError:
        raise ValueError(f"--class-weights {spec}: expected 'balanced' or numbers separated by commas") from None
    if len(weights) != classes:
        raise ValueError(f"--class-weights {spec}: {len(weights)} weights for {classes} classes "
                         f"({', '.join(labels.id2label.values())})")
    return weights


def predict_command(args):
    from ..training import predict_proba

    if bool(args.texts) == bool(args.data):
        raise ValueError("give the texts to predict, or --data FILE, one of the two")
    texts, pairs = args.texts, None
    if args.data:
        rows = read_data(args, args.data, labeled=False, limit=args.limit)
        texts, pairs = rows.texts, rows.text_pairs
    model, tokenizer = load_classifier(args.model, args.device)
    outputs = predict_proba(model, tokenizer, texts, max_length(args.max_length, model), text_pairs=pairs)
    names, kind = model.config.id2label, _task(model.config)
    for i, (text, p) in enumerate(zip(texts, outputs)):
        shown = text if pairs is None else f"{text} | {pairs[i]}"
        if kind == "regression":
            print(f"{p[0]:.4f}  {shown}")
        elif kind == "multi_label_classification":
            chosen = ",".join(names[k] for k in range(len(p)) if p[k] > 0.5) or "-"
            print(f"{chosen}  " + "  ".join(f"p({names[k]})={q:.4f}" for k, q in enumerate(p)) + f"  {shown}")
        else:
            label = int(p.argmax())
            print(f"{label} ({names[label]})  " + "  ".join(f"p({k})={q:.4f}" for k, q in enumerate(p)) + f"  {shown}")
    return 0


def eval_command(args):
    from ..data import DataLoader, encode_labels, pad_batch
    from ..training import evaluate
    from ..training.metrics import format_report

    model, tokenizer = load_classifier(args.model, args.device)
    rows = read_data(args, args.data, limit=args.limit)
    kind = _task(model.config)
    labels = encode_labels(rows, kind, id2label=model.config.id2label, separator=args.label_separator)
    data = _dataset(tokenizer, rows, labels.values, max_length(args.max_length, model))
    loader = DataLoader(data, args.batch_size, collate_fn=lambda b: pad_batch(b, tokenizer.pad_token_id))
    metrics = evaluate(model, loader)
    n = metrics["examples"]
    if kind == "regression":
        print(f"pearson {metrics['pearson']:.4f}, spearmanr {metrics['spearmanr']:.4f}, mse {metrics['mse']:.4f} "
              f"({n} examples)")
    else:
        right = round(metrics["accuracy"] * n)
        others = [k for k in ("macro_f1", "f1", "micro_f1", "matthews_correlation") if k in metrics]
        print(f"accuracy {metrics['accuracy']:.4f} ({right}/{n}), loss {metrics['loss']:.4f}"
              + "".join(f", {k} {metrics[k]:.4f}" for k in others))
        print("\n".join(format_report(metrics)))
    return 0


def _task(config):
    """The problem_type of a fine-tuned model's config (one output and none said: regression, as HF's)."""
    return config.problem_type or ("regression" if config.num_labels == 1 else "single_label_classification")


def _data_files(data):
    """(train file, dev file or None) from a folder (train.* and dev.*: .tsv, .csv or .jsonl) or one file."""
    if os.path.isdir(data):
        train, dev = (_one_file(data, name) for name in ("train", "dev"))
        if train is None:
            raise FileNotFoundError(f"--data {data}: the folder has no train.tsv, train.csv or train.jsonl "
                                    "(expected GLUE's layout: train.tsv, dev.tsv)")
        return train, dev
    if not os.path.isfile(data):
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    return data, None


def _one_file(folder, name):
    found = [os.path.join(folder, name + e) for e in DATA_EXTENSIONS if os.path.isfile(os.path.join(folder, name + e))]
    if len(found) > 1:
        raise ValueError(f"--data {folder}: there are {len(found)} {name} files ({', '.join(found)}): keep one")
    return found[0] if found else None


def _dataset(tokenizer, rows, labels, length):
    from ..data import TextClassificationDataset

    return TextClassificationDataset(tokenizer, rows.texts, labels, length, name=os.path.basename(rows.path),
                                     text_pairs=rows.text_pairs)
