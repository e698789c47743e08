"""train-tokenizer, pretrain and fill-mask: a vocabulary, BERT's masked-LM pretraining, and what it learnt.

    minillm train-tokenizer --files corpus.txt --vocab-size 8000 --out my-vocab
    minillm pretrain --config mini --tokenizer my-vocab --files corpus.txt --out my-bert --epochs 3
    minillm pretrain --model all-MiniLM-L6-v2 --files domain.txt --out minilm-domain    (continued)
    minillm fill-mask --model my-bert "the film was [MASK] ." --top-k 5
"""
import functools
import logging
import os

from .options import check_output, device_option, max_length, run_training, training_options

logger = logging.getLogger("minillm")


def add_commands(commands):
    vocab = commands.add_parser("train-tokenizer", help="train a WordPiece vocabulary on text files",
                                description="Train a BERT WordPiece tokenizer (the tokenizers library's trainer) "
                                            "on plain text files; the folder loads in minillm and transformers.")
    vocab.add_argument("--files", nargs="+", required=True, metavar="FILE", help="plain text files to learn from")
    vocab.add_argument("--vocab-size", type=int, default=8000, help="tokens in the vocabulary (default %(default)s)")
    vocab.add_argument("--out", required=True, help="output folder (tokenizer.json, vocab.txt, configs)")
    case = vocab.add_mutually_exclusive_group()
    case.add_argument("--lowercase", dest="lowercase", action="store_true", default=True,
                      help="lower-case and strip accents, as bert-base-uncased (the default)")
    case.add_argument("--cased", dest="lowercase", action="store_false", help="keep case and accents")
    vocab.add_argument("--min-frequency", type=int, default=2, help="never merge pairs seen fewer times")
    vocab.add_argument("--overwrite", action="store_true", help="write into an --out folder that is not empty")
    vocab.set_defaults(run=train_tokenizer_command)

    pre = commands.add_parser("pretrain", help="pretrain BERT as a masked language model on text files",
                              description="BERT's masked-LM pretraining (15%% of the tokens chosen; 80%% [MASK], "
                                          "10%% random, 10%% kept) through the Trainer, from a named size or "
                                          "config.json, or from an existing model (continued pretraining). Each "
                                          "epoch ends with the held-out masked-LM loss, masked-token accuracy and "
                                          "perplexity; the result is a Hugging Face BertForMaskedLM folder.")
    start = pre.add_mutually_exclusive_group(required=True)
    start.add_argument("--config", help="a model size (tiny, mini, small, medium, base) or a config.json: "
                                        "random weights")
    start.add_argument("--model", help="a model folder or known name to continue pretraining from")
    pre.add_argument("--tokenizer", help="tokenizer folder (default: --model's; needed with --config)")
    pre.add_argument("--files", nargs="+", required=True, metavar="FILE", help="plain text files to train on")
    pre.add_argument("--validation-files", nargs="+", metavar="FILE", help="held-out text (default: the first "
                     "--validation-split-percentage of the lines, as run_mlm.py)")
    pre.add_argument("--validation-split-percentage", type=float, default=5.0)
    pre.add_argument("--out", required=True, help="output folder (a Hugging Face model when done)")
    pre.add_argument("--line-by-line", action="store_true", help="one example per line (default: the lines run "
                     "together and cut into blocks of --max-length, as run_mlm.py)")
    pre.add_argument("--nsp", action="store_true", help="sentence pairs with next-sentence prediction "
                     "(BertForPreTraining); blank lines separate documents")
    pre.add_argument("--max-length", type=int, default=128, help="tokens per example (default %(default)s)")
    pre.add_argument("--mlm-probability", type=float, default=0.15, help="share of the tokens chosen")
    pre.add_argument("--whole-word-mask", action="store_true", help="choose whole words, all their pieces")
    pre.add_argument("--epochs", type=int, default=1)
    pre.add_argument("--batch-size", type=int, default=32)
    pre.add_argument("--lr", type=float, default=1e-4)
    pre.add_argument("--seed", type=int, default=42)
    training_options(pre)
    device_option(pre)
    pre.set_defaults(run=pretrain_command)

    fill = commands.add_parser("fill-mask", help="the likeliest tokens for each [MASK] of a text",
                               description="Score the vocabulary at every [MASK] of each text with a masked-LM "
                                           "model, as transformers' fill-mask pipeline.")
    fill.add_argument("--model", required=True, help="a masked-LM model folder (e.g. minillm pretrain's --out)")
    fill.add_argument("--top-k", type=int, default=5)
    fill.add_argument("texts", nargs="+", metavar="TEXT", help="text with one or more [MASK]")
    device_option(fill)
    fill.set_defaults(run=fill_mask_command)


def train_tokenizer_command(args):
    from ..tokenizer_training import train_wordpiece

    check_output(args.out, False, args.overwrite)
    tokenizer = train_wordpiece(args.files, args.vocab_size, lowercase=args.lowercase,
                                min_frequency=args.min_frequency)
    os.makedirs(args.out, exist_ok=True)
    tokenizer.save_pretrained(args.out)
    print(f"trained a {'lower-cased' if args.lowercase else 'cased'} WordPiece vocabulary of {len(tokenizer)} "
          f"tokens on {len(args.files)} file(s); saved to {args.out}")
    return 0


def pretrain_command(args):
    from .. import random
    from ..data.language_modeling import DataCollatorForLanguageModeling
    from ..models import BertForMaskedLM, BertForPreTraining
    from ..tokenizer import BertTokenizer
    from ..training import Trainer, TrainingArguments
    from ..training.evaluate_mlm import evaluate_mlm
    from ..training.pretraining import pretraining_config

    check_output(args.out, args.resume, args.overwrite)
    if args.tokenizer is None and args.model is None:
        raise ValueError("--config starts from random weights and needs --tokenizer (e.g. minillm train-tokenizer's "
                         "--out)")
    random.manual_seed(args.seed)  # the initialization and the masks are part of the run
    model_class = BertForPreTraining if args.nsp else BertForMaskedLM
    if args.model is not None:  # --tokenizer's (or the model's own) checked against config.json, then the weights
        tokenizer, config = model_class.tokenizer_and_config(args.model, tokenizer=args.tokenizer)
        model = model_class.from_pretrained(args.model, config=config)
    else:
        tokenizer = BertTokenizer.from_pretrained(args.tokenizer)
        model = model_class(pretraining_config(args.config, tokenizer))
    model = model.to(args.device)
    length = max_length(args.max_length, model)
    train, held_out = _corpora(args, tokenizer, length)
    collator = DataCollatorForLanguageModeling(tokenizer, args.mlm_probability, whole_word_mask=args.whole_word_mask)
    options = TrainingArguments(output_dir=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
                                max_grad_norm=args.max_grad_norm, seed=args.seed, save_steps=args.save_steps,
                                progress=not args.no_progress)
    trainer = Trainer(model, options, train, collator.fixed_masks(held_out, seed=args.seed), tokenizer,
                      data_collator=collator, evaluate_fn=evaluate_mlm)
    parameters = sum(p.data.size for p in model.parameters())  # the tied decoder is counted once
    logger.info("pretraining %s (%.1fM parameters) on %d examples of at most %d tokens (%d tokens), %d held out: "
                "%d epochs of %d steps", args.model or args.config, parameters / 1e6, len(train), length,
                int(train.lengths.sum()), len(held_out), args.epochs, len(trainer.loader))
    return run_training(trainer, args, f"saved the pretrained model to {args.out}")


def _corpora(args, tokenizer, length):
    """(training dataset, held-out dataset) from --files and --validation-files or the split."""
    from ..data.text_corpus import (GroupedTextDataset, LineByLineTextDataset, TextDatasetForNextSentencePrediction,
                                    read_text_files)

    lines = read_text_files(args.files)
    if args.validation_files:
        held_out = read_text_files(args.validation_files)
    else:
        if not 0 < args.validation_split_percentage < 100:
            raise ValueError(f"--validation-split-percentage must be in (0, 100), got "
                             f"{args.validation_split_percentage}")
        cut = max(1, int(len(lines) * args.validation_split_percentage / 100))
        held_out, lines = lines[:cut], lines[cut:]
    if args.nsp:
        build = functools.partial(TextDatasetForNextSentencePrediction, tokenizer, max_length=length, seed=args.seed)
    elif args.line_by_line:
        build = functools.partial(LineByLineTextDataset, tokenizer, max_length=length)
    else:
        build = functools.partial(GroupedTextDataset, tokenizer, block_size=length)
    return build(lines, name=", ".join(args.files)), build(held_out, name="the held-out text")


def fill_mask_command(args):
    from ..fill_mask import fill_mask
    from ..models import BertForMaskedLM

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    tokenizer, config = BertForMaskedLM.tokenizer_and_config(args.model)
    model = BertForMaskedLM.from_pretrained(args.model, config=config).to(args.device)
    for text in args.texts:
        found = fill_mask(model, tokenizer, text, top_k=args.top_k)
        blanks = [found] if isinstance(found[0], dict) else found  # one [MASK]: its list, as the pipeline
        print(text)
        for number, candidates in enumerate(blanks, 1):
            if len(blanks) > 1:
                print(f"  [MASK] {number} of {len(blanks)}:")
            for rank, c in enumerate(candidates, 1):
                print(f"  {rank}. {c['token_str']:<15} {c['score']:.4f}  {c['sequence']}")
    return 0
