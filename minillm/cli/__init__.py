"""The command line: ``minillm finetune``, ``predict``, ``eval``, ``plot``, ``inspect``, ``explain``, ``embed``,
``search``, ``train-embeddings``, ``train-tokenizer``, ``pretrain`` and ``fill-mask`` (also ``python -m minillm``).

    minillm finetune --model all-MiniLM-L6-v2 --data glue/SST-2 --epochs 1 --batch-size 32 --lr 5e-5 \\
                     --max-length 64 --seed 42 --out sst2-minilm
    minillm predict --model sst2-minilm "a charming film" "a dull, lifeless film"
    minillm eval --model sst2-minilm --data glue/SST-2/dev.tsv
    minillm finetune --data glue/RTE --out rte-minilm --metric accuracy --early-stopping-patience 2
    minillm finetune --data reviews.csv --text-column review --label-column stars --class-weights balanced ...
    minillm plot rte-minilm                   (loss and metric curves from rte-minilm/log.jsonl to a PNG)
    minillm finetune ... --device cuda       (finetune, predict and eval run on a GPU through CuPy)
    minillm finetune ... --device cuda --cuda-graph   (each training step a replayed CUDA graph)
    minillm inspect --model sst2-minilm "a charming film" --plot attn.png
    minillm explain --model sst2-minilm "the acting was wooden but the plot was great" --html why.html
    minillm embed --model all-MiniLM-L6-v2 texts.txt --out vectors.npy
    minillm search --model all-MiniLM-L6-v2 --corpus texts.txt "a query" --top-k 5
    minillm train-embeddings --model all-MiniLM-L6-v2 --data pairs.tsv --out my-encoder
    minillm train-tokenizer --files corpus.txt --vocab-size 8000 --out my-vocab
    minillm pretrain --config mini --tokenizer my-vocab --files corpus.txt --out my-bert
    minillm fill-mask --model my-bert "the film was [MASK] ."

finetune's --data is a GLUE-style folder (train.tsv|csv|jsonl, and dev.* to evaluate after each epoch)
or one file; columns by name (--text-column, --text-pair-column, --label-column). The output folder is
a Hugging Face model (config.json with the label names, model.safetensors, tokenizer files: the best
epoch's, by --metric, when there is a dev set) plus checkpoint.safetensors, the last state, from which
--resume continues an interrupted run exactly, and log.jsonl, every step and evaluation.

Each group of commands is a module of this package (classify.py, plot.py, embeddings.py, inspection.py,
pretraining.py), with
an ``add_commands(commands)`` that adds its subcommands; options.py holds the options they share.
"""
import argparse
import logging
import sys

from .. import __version__
from . import classify, embeddings, inspection, plot, pretraining

logger = logging.getLogger("minillm")


def main(argv=None):
    from ..distributed import world
    from ..training import TrainingError

    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # finetune prints the command that resumes
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
    for group in (classify, plot, embeddings, inspection, pretraining):
        group.add_commands(commands)
    return parser
