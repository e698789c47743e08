"""GLUE's RTE (sentence pairs, string labels) with run_glue's recipe: minillm's CLI against PyTorch + transformers.

    python bench/glue_rte.py                       # seeds 42 and 43, both sides (here: about an hour)
    python bench/glue_rte.py --seeds 42 --limit 256 --epochs 1 --results /tmp/quick.jsonl   # a quick check
    python bench/glue_rte.py --seeds 43 --sides torch      # one more run, added to the table's file

The recipe is run_glue.py's for RTE (lr 2e-5, batch 32, 3 epochs, max length 128, weight decay 0.01 on
all but biases and LayerNorm weights, linear decay) with a linear warmup over the first 10% of the
steps (run_glue's own default is no warmup; 0.1 is the BERT recipe and minillm's default) and the
global gradient norm clipped at 1.0 (Hugging Face's Trainer's default), on all-MiniLM-L6-v2.
minillm runs as `minillm finetune --data rte ...` (its CLI, in the worker process); PyTorch runs the
same steps on the same batches, those of minillm's seeded DataLoader (bench/sst2_finetune.py's
torch_finetune), each pair tokenized by transformers' tokenizer with longest-first truncation. Dropout
is on in both, each framework drawing its own masks. Each side runs in its own process, the sides
alternating, one process per seed; the wall time is the whole process (loading, tokenizing, the three
epochs and the three dev evaluations), the dev accuracy the last epoch's (no selection on dev: the
model run_glue would report). Both sides start from one folder per seed: the pretrained encoder (its
checkpoint has the pooler) with a classifier head that minillm draws with that seed, saved once, so that
the sides do not differ in their initial head: what is left between them is their own dropout masks and
their arithmetic.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402
from sst2_finetune import load_rows, run_worker, torch_finetune  # noqa: E402

RECIPE = dict(lr=2e-5, batch_size=32, max_length=128, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0,
              seed=42, epochs=3)
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "rte")


def cli_arguments(args, out):
    """`minillm finetune`'s arguments for the recipe."""
    return ["finetune", "--model", args.model, "--data", args.data, "--out", out, "--epochs", str(RECIPE["epochs"]),
            "--batch-size", str(RECIPE["batch_size"]), "--lr", str(RECIPE["lr"]),
            "--max-length", str(RECIPE["max_length"]), "--warmup-ratio", str(RECIPE["warmup_ratio"]),
            "--weight-decay", str(RECIPE["weight_decay"]), "--max-grad-norm", str(RECIPE["max_grad_norm"]),
            "--seed", str(RECIPE["seed"]), "--metric", "accuracy", "--no-progress"] + (
        ["--limit", str(args.limit)] if args.limit else [])


def run_minillm(args):
    from minillm.cli import main

    with tempfile.TemporaryDirectory() as out:
        if main(cli_arguments(args, out)) != 0:
            raise SystemExit("minillm finetune failed")
        with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
    losses = [r["loss"] for r in records if "loss" in r]
    accuracies = [r["eval_accuracy"] for r in records if "eval_accuracy" in r]
    return dict(accuracy=accuracies[-1], accuracies=accuracies, steps=len(losses), first_loss=losses[0],
                last_loss=sum(losses[-20:]) / len(losses[-20:]), peak_rss_mb=machine.peak_rss_mb())


def starting_point(args, seed, folder):
    """Save the model both sides start from for ``seed`` into ``folder``: see the docstring above."""
    from minillm import pretrained, random
    from minillm.cli.options import load_classifier
    from minillm.data import encode_labels, read_examples

    labels = encode_labels(read_examples(os.path.join(args.data, "train.tsv")))
    random.manual_seed(seed)
    model, tokenizer = load_classifier(pretrained.resolve(args.model), num_labels=len(labels.id2label),
                                       id2label=labels.id2label)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def run_torch(args):
    train, dev = load_rows(args.data, args.limit, None)
    return torch_finetune(args.model, train, dev, RECIPE)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA, help="GLUE RTE folder (default %(default)s)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or known name")
    parser.add_argument("--seeds", default="42,43", help="comma-separated seeds (default %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N rows only")
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--sides", default="minillm,torch", help="comma-separated, run in this order per seed")
    parser.add_argument("--results", default=os.path.join(tempfile.gettempdir(), "glue_rte_results.jsonl"),
                        help="each finished run is appended here; the table shows every run in the file "
                             "(default %(default)s)")
    parser.add_argument("--worker", choices=["minillm", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    RECIPE["epochs"] = args.epochs
    if args.worker:
        from minillm import pretrained
        RECIPE["seed"] = int(args.seeds)
        if args.worker == "torch":
            args.model = pretrained.resolve(args.model)
        result = run_torch(args) if args.worker == "torch" else run_minillm(args)
        print("RESULT " + json.dumps({**result, "ran": machine.ran(args.worker)}))
        return 0

    print(machine.describe("native", os.cpu_count()), flush=True)
    for seed in args.seeds.split(","):
        with tempfile.TemporaryDirectory() as start:
            starting_point(args, int(seed), start)
            for side in args.sides.split(","):
                command = [sys.executable, os.path.abspath(__file__), "--worker", side, "--data", args.data,
                           "--model", start, "--seeds", seed, "--epochs", str(args.epochs)] + (
                    ["--limit", str(args.limit)] if args.limit else [])
                result = run_worker(f"{side}, seed {seed}", command, "native")
                if result is None:
                    return 1
                row = dict(side=side, seed=int(seed), load=os.getloadavg()[0], same_start=True,
                           date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **result)
                with open(args.results, "a", encoding="utf-8") as f:  # each run kept as it ends: a long
                    f.write(json.dumps(row) + "\n")                  # bench may be finished by another call
                print(f"{side}, seed {seed}: " + json.dumps(row), file=sys.stderr, flush=True)
    with open(args.results, encoding="utf-8") as f:
        print_table([json.loads(line) for line in f], args.epochs)
    return 0


def print_table(rows, epochs):
    print(f"\nRTE (GLUE), all-MiniLM-L6-v2, {epochs} epochs of {rows[0]['steps'] // epochs} steps of batch 32, "
          f"max length 128, lr 2e-5, warmup 10%, {os.cpu_count()} cores\n")
    print("| side | seed | dev accuracy by epoch | dev accuracy | wall time | peak RSS | loss: first -> last 20 "
          "| load (1 min) at the end | finished |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        by_epoch = " / ".join(f"{100 * a:.1f}" for a in r["accuracies"])
        rss = f"{r['peak_rss_mb'] / 1024:.2f} GB" if r.get("peak_rss_mb") else "-"  # - : not recorded
        losses = f"{r['first_loss']:.3f} -> {r['last_loss']:.3f}" if r.get("first_loss") else "-"
        print(f"| {r['side']} | {r['seed']} | {by_epoch} | {100 * r['accuracy']:.2f}% | {r['wall_s']:.0f} s | "
              f"{rss} | {losses} | {r['load']:.2f} | {r['date']} |")
    for side in ("minillm", "torch"):
        mine = [r for r in rows if r["side"] == side]
        if mine:
            print(f"\n{side}: mean dev accuracy {100 * sum(r['accuracy'] for r in mine) / len(mine):.2f}%, "
                  f"mean wall time {sum(r['wall_s'] for r in mine) / len(mine):.0f} s over seeds "
                  f"{', '.join(str(r['seed']) for r in mine)}", end="")
    print()


if __name__ == "__main__":
    sys.exit(main())
