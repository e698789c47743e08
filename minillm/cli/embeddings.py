"""embed, search and train-embeddings: sentence embeddings (minillm.embeddings)."""
import logging

from .options import check_output

logger = logging.getLogger("minillm")


def add_commands(commands):
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

    from ..embeddings import SentenceEncoder
    from ..embeddings.search import read_texts
    from ..safetensors_io import atomic_write

    encoder = SentenceEncoder.from_pretrained(args.model)
    vectors = encoder.encode(read_texts(args.texts), batch_size=args.batch_size)
    buffer = io.BytesIO()
    numpy.save(buffer, vectors)
    atomic_write(args.out, buffer.getvalue())
    print(f"wrote {vectors.shape[0]} embeddings of {vectors.shape[1]} numbers to {args.out}")
    return 0


def search_command(args):
    from .. import pretrained
    from ..embeddings import SentenceEncoder, corpus_embeddings, semantic_search

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
    from .. import random
    from ..embeddings import MultipleNegativesRankingLoss, PairDataset, SentenceEncoder
    from ..training import Trainer, TrainingArguments

    check_output(args.out, False, args.overwrite)
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
