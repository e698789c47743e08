"""The real run: all-MiniLM-L6-v2 fine-tuned on SST-2, in minillm and in PyTorch + transformers.

    python bench/sst2_finetune.py                    # full train.tsv, one epoch (here: minillm ~15 min, PyTorch ~20 min)
    python bench/sst2_finetune.py --limit 512        # a quick check on the first 512 rows
    python bench/sst2_finetune.py --bucket           # also minillm with length bucketing, reported beside
    python bench/sst2_finetune.py --seed 43          # another seed: init, batches and dropout all change
    python bench/sst2_finetune.py --level avx2       # both sides held to AVX2 on an AVX-512 machine

Both frameworks run the same recipe on the same batches: lr 5e-5, batch 32, max length 64, warmup
over the first 10% of steps then linear decay, weight decay 0.01 on all but biases and LayerNorm
weights, the global gradient norm clipped at 1.0, seed 42, and the batches of minillm's seeded
DataLoader (each padded to its longest text). Dropout is on in both (model.train()), each framework
drawing its own masks. Each framework runs in its own process, so peak RSS is its own; the train
time covers the optimizer steps only, not loading, tokenizing or evaluating. Dev accuracy is on
the whole dev.tsv. The table starts with the machine, the level and what each side ran
(bench/machine.py), checked in every worker.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import machine

RECIPE = dict(lr=5e-5, batch_size=32, max_length=64, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0,
              seed=42, epochs=1)
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "sst2")


def load_rows(data, limit, eval_limit):
    """((texts, pairs, labels) of train, the same of dev) from a GLUE folder (pairs None for single texts)."""
    from minillm.data import encode_labels, read_examples
    train = read_examples(os.path.join(data, "train.tsv"), limit=limit)
    dev = read_examples(os.path.join(data, "dev.tsv"), limit=eval_limit)
    labels = encode_labels(train)
    return ((train.texts, train.text_pairs, labels.values.tolist()),
            (dev.texts, dev.text_pairs, encode_labels(dev, id2label=labels.id2label).values.tolist()))


# ---- one framework per process -----------------------------------------------------------------
def run_minillm(args, bucket):
    import minillm
    from minillm.data import DataLoader, TextClassificationDataset, pad_batch
    from minillm.models.bert import BertForSequenceClassification
    from minillm.tokenizer import BertTokenizer
    from minillm.training import Trainer, TrainingArguments, evaluate

    (texts, _, labels), (dev_texts, _, dev_labels) = load_rows(args.data, args.limit, args.eval_limit)
    minillm.manual_seed(RECIPE["seed"])
    model = BertForSequenceClassification.from_pretrained(args.model, num_labels=2)
    tokenizer = BertTokenizer.from_pretrained(args.model)
    train = TextClassificationDataset(tokenizer, texts, labels, RECIPE["max_length"], name="train.tsv")
    dev = TextClassificationDataset(tokenizer, dev_texts, dev_labels, RECIPE["max_length"], name="dev.tsv")
    with tempfile.TemporaryDirectory() as out:
        options = TrainingArguments(output_dir=out, bucket=bucket, progress=sys.stderr.isatty(),
                                    **{k: v for k, v in RECIPE.items() if k != "max_length"})
        trainer = Trainer(model, options, train, None, tokenizer)
        widths = [int(train.lengths[b].max()) for b in trainer.loader.batches(0)]
        start = time.perf_counter()
        history = trainer.train()
        train_s = time.perf_counter() - start
    metrics = evaluate(model, DataLoader(dev, 64, collate_fn=pad_batch))
    losses = [h["loss"] for h in history if "loss" in h]
    return dict(accuracy=metrics["accuracy"], train_s=train_s, steps=len(losses), first_loss=losses[0],
                last_loss=sum(losses[-20:]) / len(losses[-20:]), mean_length=float(train.lengths.mean()),
                padded_width=sum(widths) / len(widths), peak_rss_mb=machine.peak_rss_mb())


def run_torch(args):
    train, dev = load_rows(args.data, args.limit, args.eval_limit)
    return torch_finetune(args.model, train, dev, RECIPE)


def torch_finetune(model_name, train, dev, recipe):
    """PyTorch + transformers on ``recipe`` (lr, batch_size, max_length, warmup_ratio, weight_decay,
    max_grad_norm, seed, epochs) with the batches of minillm's seeded DataLoader: train and dev are
    (texts, second texts of pairs or None, integer labels). Returns the dev accuracy after each epoch
    (``accuracies``; ``accuracy`` the last), the training time (the optimizer steps only) and the losses."""
    import torch
    import transformers
    from minillm.data import DataLoader

    torch.set_num_threads(os.cpu_count())
    (texts, pairs, labels), (dev_texts, dev_pairs, dev_labels) = train, dev
    torch.manual_seed(recipe["seed"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_name)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_name,
                                                                            num_labels=max(labels) + 1)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [{"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
               "weight_decay": recipe["weight_decay"]},
              {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=recipe["lr"])
    loader = DataLoader(range(len(texts)), recipe["batch_size"], shuffle=True, seed=recipe["seed"])
    epochs = [loader.batches(epoch) for epoch in range(recipe["epochs"])]
    steps = sum(len(batches) for batches in epochs)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, math.ceil(recipe["warmup_ratio"] * steps), steps)

    def encode(rows, second, index):
        return tokenizer([rows[i] for i in index], None if second is None else [second[i] for i in index],
                         padding=True, truncation="longest_first", max_length=recipe["max_length"],
                         return_tensors="pt")

    @torch.no_grad()
    def dev_accuracy():
        model.eval()
        right = 0
        for s in range(0, len(dev_texts), 64):
            index = range(s, min(s + 64, len(dev_texts)))
            predicted = model(**encode(dev_texts, dev_pairs, index)).logits.argmax(-1)
            right += int((predicted == torch.tensor([dev_labels[i] for i in index])).sum())
        model.train()
        return right / len(dev_texts)

    losses, accuracies, train_s = [], [], 0.0
    model.train()
    for batches in epochs:
        encoded = [encode(texts, pairs, b) for b in batches]  # tokenized before the clock starts, as minillm's
        start = time.perf_counter()
        for batch, index in zip(encoded, batches):
            loss = model(**batch, labels=torch.tensor([labels[i] for i in index])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["max_grad_norm"])
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if sys.stderr.isatty() and len(losses) % 10 == 0:
                print(f"\rtorch: step {len(losses)}/{steps} loss {loss.item():.4f}", end="", file=sys.stderr)
        train_s += time.perf_counter() - start
        accuracies.append(dev_accuracy())
    return dict(accuracy=accuracies[-1], accuracies=accuracies, train_s=train_s, steps=len(losses),
                first_loss=losses[0], last_loss=sum(losses[-20:]) / len(losses[-20:]), peak_rss_mb=machine.peak_rss_mb())


# ---- the driver ----------------------------------------------------------------------------------
def run_worker(name, command, level):
    """Run one worker process at ``level`` (bench/machine.py); the dict it printed on its RESULT line,
    with its wall time, or None if it failed. The bench stops if the worker ran another level."""
    print(f"running {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=machine.worker_env(level, os.cpu_count()))
    wall_s = time.perf_counter() - start
    results = [line[len("RESULT "):] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        print(f"{name} failed (exit {done.returncode})", file=sys.stderr)
        return None
    result = json.loads(results[0])
    machine.check(level, "torch" if name.startswith("torch") else "minillm", result["ran"])  # names start with the side
    return {**result, "wall_s": wall_s}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA, help="GLUE SST-2 folder (default %(default)s)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or known name")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N rows only")
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N dev rows only")
    parser.add_argument("--frameworks", default="minillm,torch", help="comma-separated: minillm, torch")
    parser.add_argument("--bucket", action="store_true", help="also run minillm with length bucketing")
    parser.add_argument("--seed", type=int, default=RECIPE["seed"], help="the recipe's seed (default %(default)s)")
    parser.add_argument("--level", choices=machine.LEVELS, default="native",
                        help="native, or avx2: both sides held to AVX2 (bench/machine.py)")
    parser.add_argument("--worker", choices=["minillm", "minillm-bucket", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    RECIPE["seed"] = args.seed
    if args.worker:
        from minillm import pretrained
        args.model = pretrained.resolve(args.model)
        result = run_torch(args) if args.worker == "torch" else run_minillm(args, args.worker == "minillm-bucket")
        print("RESULT " + json.dumps({**result, "ran": machine.ran(args.worker.removesuffix("-bucket"))}))
        return 0

    print(machine.describe(args.level, os.cpu_count()), flush=True)
    runs = args.frameworks.split(",") + (["minillm-bucket"] if args.bucket else [])
    rows = {}
    for name in runs:
        command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--data", args.data,
                   "--model", args.model, "--seed", str(args.seed)] + (["--limit", str(args.limit)] if args.limit else []) + (
                   ["--eval-limit", str(args.eval_limit)] if args.eval_limit else [])
        rows[name] = run_worker(name, command, args.level)
        if rows[name] is None:
            return 1

    first = next(iter(rows.values()))
    print(f"\nSST-2, all-MiniLM-L6-v2, seed {args.seed}, 1 epoch, {first['steps']} steps of batch 32 "
          f"({'first ' + str(args.limit) if args.limit else 'all'} train rows), dev: "
          f"{'first ' + str(args.eval_limit) if args.eval_limit else 'all'} rows, {os.cpu_count()} cores\n")
    print("| run | batches | dev accuracy | train time | peak RSS | loss: first -> mean of last 20 |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        batches = "bucketed by length" if name == "minillm-bucket" else "same shuffled batches"
        print(f"| {name.replace('-bucket', '')} | {batches} | {100 * r['accuracy']:.2f}% | {r['train_s']:.0f} s | "
              f"{r['peak_rss_mb'] / 1024:.2f} GB | {r['first_loss']:.3f} -> {r['last_loss']:.3f} |")
    for name, r in rows.items():
        if "padded_width" in r:
            print(f"\n{name}: mean real length {r['mean_length']:.1f} tokens, "
                  f"mean padded width {r['padded_width']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
