"""The command line: ``minillm finetune``, ``predict``, ``eval``, ``inspect``, ``explain``, ``embed``, ``search``
and ``train-embeddings`` (also ``python -m minillm``).

    minillm finetune --model all-MiniLM-L6-v2 --data glue/SST-2 --epochs 1 --batch-size 32 --lr 5e-5 \\
                     --max-length 64 --seed 42 --out sst2-minilm
    minillm predict --model sst2-minilm "a charming film" "a dull, lifeless film"
    minillm eval --model sst2-minilm --data glue/SST-2/dev.tsv
    minillm finetune ... --device cuda       (finetune, predict and eval run on a GPU through CuPy)
    minillm finetune ... --device cuda --cuda-graph   (each training step a replayed CUDA graph)
    minillm inspect --model sst2-minilm "a charming film" --plot attn.png
    minillm explain --model sst2-minilm "the acting was wooden but the plot was great" --html why.html
    minillm embed --model all-MiniLM-L6-v2 texts.txt --out vectors.npy
    minillm search --model all-MiniLM-L6-v2 --corpus texts.txt "a query" --top-k 5
    minillm train-embeddings --model all-MiniLM-L6-v2 --data pairs.tsv --out my-encoder

finetune's --data is a GLUE-style folder (train.tsv, and dev.tsv to evaluate after each epoch) or
one TSV file. The output folder is a Hugging Face model (config.json, model.safetensors, tokenizer
files) plus checkpoint.safetensors, from which --resume continues an interrupted run exactly.
"""
import argparse
import logging
import os
import sys

from . import __version__

logger = logging.getLogger("minillm")


def main(argv=None):
    from .distributed import world
    from .training import TrainingError

    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)  # minillm's messages, plainly, for this command
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    level = logger.level
    # setLevel, not .level =: it also clears logging's is-enabled cache; under mpirun rank 0 alone logs
    logger.setLevel(logging.INFO if world().rank == 0 else logging.WARNING)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("minillm: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, TrainingError) as err:  # these say what and where: no traceback
        print(f"minillm {args.command}: error: {err}", file=sys.stderr)
        world().abort(1)  # under mpirun the other ranks must not wait for this one
        return 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _parser():
    parser = argparse.ArgumentParser(prog="minillm",
                                     description="Fine-tune, run, evaluate and inspect BERT text classifiers.")
    parser.add_argument("--version", action="version", version=f"minillm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

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
    _device_option(tune)
    tune.set_defaults(run=finetune)

    predict = commands.add_parser("predict", help="classify texts with a fine-tuned model")
    predict.add_argument("--model", required=True, help="a fine-tuned model folder")
    predict.add_argument("--max-length", type=int, default=None)
    predict.add_argument("texts", nargs="+", metavar="TEXT")
    _device_option(predict)
    predict.set_defaults(run=predict_command)

    evaluate = commands.add_parser("eval", help="accuracy and loss of a model on a labeled TSV file")
    evaluate.add_argument("--model", required=True, help="a fine-tuned model folder")
    evaluate.add_argument("--data", required=True, help="a .tsv file with sentence and label columns")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--max-length", type=int, default=None)
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N rows")
    _device_option(evaluate)
    evaluate.set_defaults(run=eval_command)
    _embedding_commands(commands)

    look = commands.add_parser("inspect", help="what every layer and attention head does with one sentence",
                               description="Print the tokens, each layer's hidden-state statistics, each head's "
                                           "attention entropy and the strongest attention links; --plot draws "
                                           "the attention heatmaps (layers x heads).")
    look.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or known name (default %(default)s)")
    look.add_argument("--plot", metavar="PNG", help="write the attention heatmaps to this file (needs matplotlib: "
                                                    "pip install 'minillm[plot]')")
    look.add_argument("--top", type=int, default=3, help="strongest attention links shown per layer")
    look.add_argument("sentence")
    look.set_defaults(run=inspect_command)

    why = commands.add_parser("explain", help="which words decided a classifier's prediction",
                              description="Print the prediction and each word's attribution to a class: integrated "
                                          "gradients from a [PAD] baseline (with its completeness gap), gradient x "
                                          "input, or attention rollout; --html and --plot keep them.")
    why.add_argument("--model", required=True, help="a fine-tuned classifier folder")
    why.add_argument("--method", choices=("ig", "gxi", "rollout"), default="ig",
                     help="ig: integrated gradients (default), gxi: gradient x input, rollout: attention rollout")
    why.add_argument("--steps", type=int, default=50, help="integrated gradients: points on the path (default 50)")
    why.add_argument("--target", type=int, default=None, help="the class to explain (default: the predicted one)")
    why.add_argument("--pair", metavar="TEXT", help="the second text of a pair (e.g. RTE's hypothesis)")
    why.add_argument("--html", metavar="FILE", help="write a self-contained page with the coloured words")
    why.add_argument("--plot", metavar="PNG", help="write a bar chart of the words' attributions (needs "
                                                   "matplotlib: pip install 'minillm[plot]')")
    why.add_argument("sentence")
    why.set_defaults(run=explain_command)
    return parser


# ---- the commands ------------------------------------------------------------------------------------
def finetune(args):
    from . import random
    from .models.bert import BertConfig, BertForSequenceClassification
    from .tokenizer import BertTokenizer
    from .training import CHECKPOINT_NAME, Trainer, TrainingArguments

    train_file, dev_file = _data_files(args.data)
    _check_output(args.out, args.resume, args.overwrite)
    random.manual_seed(args.seed)  # the classifier's initialization is part of the run
    config = None
    if args.cuda_graph:  # a replayed step would repeat the dropout masks drawn when it was captured
        config = BertConfig.from_pretrained(args.model, num_labels=args.num_labels, hidden_dropout_prob=0.0,
                                            attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
        logger.info("--cuda-graph: dropout is off (a replayed step would repeat one dropout mask)")
    model = BertForSequenceClassification.from_pretrained(args.model, num_labels=args.num_labels,
                                                          config=config).to(args.device)
    tokenizer = BertTokenizer.from_pretrained(args.model)
    max_length = _max_length(args.max_length, model)
    train = _dataset(tokenizer, train_file, args.num_labels, max_length, args.limit)
    dev = _dataset(tokenizer, dev_file, args.num_labels, max_length, args.eval_limit) if dev_file else None
    options = TrainingArguments(output_dir=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
                                max_grad_norm=args.max_grad_norm, seed=args.seed, bucket=args.bucket,
                                save_steps=args.save_steps, progress=not args.no_progress,
                                cuda_graph=args.cuda_graph)
    if args.overwrite and os.path.exists(os.path.join(args.out, CHECKPOINT_NAME)):
        os.remove(os.path.join(args.out, CHECKPOINT_NAME))  # never resume into another run's state
    trainer = Trainer(model, options, train, dev, tokenizer)
    logger.info("fine-tuning %s on %d examples (%s): %d epochs of %d steps", args.model, len(train), train_file,
                args.epochs, len(trainer.loader))
    trainer.train(resume=args.resume, stop_after=args.stop_after)  # logs each epoch's evaluation
    if trainer.world.rank != 0:
        pass  # under mpirun rank 0 alone reports
    elif trainer.step < trainer.total_steps:
        print(f"stopped at step {trainer.step} of {trainer.total_steps}; continue with --resume")
    else:
        print(f"saved the fine-tuned model to {args.out}")
    return 0


def predict_command(args):
    from .models.bert import BertForSequenceClassification
    from .tokenizer import BertTokenizer
    from .training import predict_proba

    model = BertForSequenceClassification.from_pretrained(args.model).to(args.device)
    tokenizer = BertTokenizer.from_pretrained(args.model)
    probabilities = predict_proba(model, tokenizer, args.texts, _max_length(args.max_length, model))
    for text, p in zip(args.texts, probabilities):
        label = int(p.argmax())
        shown = "  ".join(f"p({i})={q:.4f}" for i, q in enumerate(p))
        print(f"{label} ({model.config.id2label[label]})  {shown}  {text}")
    return 0


def eval_command(args):
    from .data import DataLoader, pad_batch
    from .models.bert import BertForSequenceClassification
    from .tokenizer import BertTokenizer
    from .training import evaluate

    model = BertForSequenceClassification.from_pretrained(args.model).to(args.device)
    tokenizer = BertTokenizer.from_pretrained(args.model)
    data = _dataset(tokenizer, args.data, model.config.num_labels, _max_length(args.max_length, model), args.limit)
    loader = DataLoader(data, args.batch_size, collate_fn=lambda b: pad_batch(b, tokenizer.pad_token_id))
    metrics = evaluate(model, loader)
    right = round(metrics["accuracy"] * metrics["examples"])
    print(f"accuracy {metrics['accuracy']:.4f} ({right}/{metrics['examples']}), loss {metrics['loss']:.4f}")
    return 0


def _embedding_commands(commands):
    """embed, search and train-embeddings: sentence embeddings (minillm.embeddings)."""
    model_help = "a sentence-transformers or Hugging Face folder, or a known name (default %(default)s)"
    embed = commands.add_parser("embed", help="sentence embeddings of a file's lines, as a .npy array",
                                description="Embed each line of a text file with a sentence encoder (mean pooling "
                                            "and normalization as the model folder says): an (N, E) float32 array.")
    embed.add_argument("--model", default="all-MiniLM-L6-v2", help=model_help)
    embed.add_argument("texts", metavar="TEXTS.txt", help="one text per line")
    embed.add_argument("--out", required=True, help="the .npy file to write (row i: line i)")
    embed.add_argument("--batch-size", type=int, default=32)
    embed.set_defaults(run=embed_command)

    search = commands.add_parser("search", help="the corpus lines nearest a query, by cosine similarity",
                                 description="Embed the corpus once (cached beside it, keyed by the model and the "
                                             "file) and print the top-k lines for each query.")
    search.add_argument("--model", default="all-MiniLM-L6-v2", help=model_help)
    search.add_argument("--corpus", required=True, help="one text per line")
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument("--batch-size", type=int, default=32)
    search.add_argument("queries", nargs="+", metavar="QUERY")
    search.set_defaults(run=search_command)

    train = commands.add_parser("train-embeddings", help="train a sentence encoder on (anchor, positive) pairs",
                                description="Contrastive training with in-batch negatives (sentence-transformers' "
                                            "MultipleNegativesRankingLoss) through the Trainer; the result is a "
                                            "sentence-transformers folder.")
    train.add_argument("--model", default="all-MiniLM-L6-v2", help=model_help)
    train.add_argument("--data", required=True, help="a file of anchor<TAB>positive lines")
    train.add_argument("--out", required=True, help="output folder (a sentence-transformers model when done)")
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--batch-size", type=int, default=32, help="pairs per batch: each anchor's negatives are "
                                                                  "the other positives")
    train.add_argument("--lr", type=float, default=2e-5)
    train.add_argument("--scale", type=float, default=20.0, help="cosine similarities times this (1 / temperature)")
    train.add_argument("--warmup-ratio", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--overwrite", action="store_true", help="write into an --out folder that is not empty")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=train_embeddings_command)


def embed_command(args):
    import io

    import numpy

    from .embeddings import SentenceEncoder
    from .embeddings.search import read_texts
    from .safetensors_io import atomic_write

    encoder = SentenceEncoder.from_pretrained(args.model)
    vectors = encoder.encode(read_texts(args.texts), batch_size=args.batch_size)
    buffer = io.BytesIO()
    numpy.save(buffer, vectors)
    atomic_write(args.out, buffer.getvalue())
    print(f"wrote {vectors.shape[0]} embeddings of {vectors.shape[1]} numbers to {args.out}")
    return 0


def search_command(args):
    from . import pretrained
    from .embeddings import SentenceEncoder, corpus_embeddings, semantic_search

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    folder = pretrained.resolve(args.model)
    encoder = SentenceEncoder.from_pretrained(folder)
    texts, corpus, cached = corpus_embeddings(encoder, folder, args.corpus, args.batch_size)
    logger.info("%s: %d texts, embeddings %s", args.corpus, len(texts), "from the cache" if cached else "computed")
    hits = semantic_search(encoder.encode(args.queries, show_progress_bar=False), corpus, args.top_k)
    for query, found in zip(args.queries, hits):
        print(f"query: {query}")
        for rank, hit in enumerate(found, 1):
            line = hit["corpus_id"]
            print(f"  {rank}. {hit['score']:.4f}  line {line + 1}: {texts[line]}")
    return 0


def train_embeddings_command(args):
    from . import random
    from .embeddings import MultipleNegativesRankingLoss, PairDataset, SentenceEncoder
    from .training import Trainer, TrainingArguments

    _check_output(args.out, False, args.overwrite)
    random.manual_seed(args.seed)  # dropout's masks are part of the run
    encoder = SentenceEncoder.from_pretrained(args.model)
    pairs = PairDataset.from_tsv(encoder, args.data)
    options = TrainingArguments(output_dir=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                warmup_ratio=args.warmup_ratio, seed=args.seed, progress=not args.no_progress)
    trainer = Trainer(MultipleNegativesRankingLoss(encoder, scale=args.scale), options, pairs,
                      data_collator=pairs.collate)
    logger.info("training %s on %d pairs (%s): %d epochs of %d steps", args.model, len(pairs), args.data,
                args.epochs, len(trainer.loader))
    trainer.train()
    print(f"saved the sentence encoder to {args.out}")
    return 0


def inspect_command(args):
    from .inspect import main as inspect

    return inspect(args.model, args.sentence, args.plot, args.top)


def explain_command(args):
    from .explain.render import main as explain

    return explain(args.model, args.sentence, args.pair, args.method, args.target, args.steps, args.html, args.plot)


# ---- helpers -----------------------------------------------------------------------------------------
def _device_option(command):
    command.add_argument("--device", type=_device, default="cpu",
                         help="cpu (default), cuda or cuda:N (a GPU, through CuPy: the extra cuda12 or cuda13)")


def _device(spec):
    """--device, checked before any work starts: an unknown name or a missing GPU is a usage error."""
    from . import backend

    try:
        backend.module_for(spec)
    except (ValueError, RuntimeError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return backend.Device(spec)


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


def _check_output(out, resume, overwrite):
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite starts a new one: pass one of them")
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--out {out} is a file, not a folder")
    if not resume and not overwrite and os.path.isdir(out) and os.listdir(out):
        raise FileExistsError(f"--out {out} exists and is not empty: pass --overwrite to write over it, "
                              "or --resume to continue the run checkpointed there")


def _max_length(requested, model):
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


def _dataset(tokenizer, path, num_labels, max_length, limit):
    from .data import TextClassificationDataset, read_glue_tsv

    texts, labels = read_glue_tsv(path, num_labels)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be at least 1, got {limit}")
        texts, labels = texts[:limit], labels[:limit]
    return TextClassificationDataset(tokenizer, texts, labels, max_length, name=os.path.basename(path))
