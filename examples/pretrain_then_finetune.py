"""Pretrain a small BERT from scratch, then fine-tune it: the two stages of a language model, on a CPU.

    python examples/pretrain_then_finetune.py --data ../shared/data/sst2 --out pipeline     # ~35 min, 2 cores
    python examples/pretrain_then_finetune.py --data ../shared/data/sst2 --out quick --quick   # ~2 min

1. The corpus: SST-2's training sentences with their labels dropped (pretraining sees no label).
2. A WordPiece vocabulary trained on it (``minillm train-tokenizer``).
3. Masked-LM pretraining of a BERT of a named size from random weights (``minillm pretrain``) on
   the corpus run together in blocks; each epoch ends with the masked-LM loss and accuracy on
   dev.tsv's sentences (held out: pretraining never trains on them, and no label is read). The
   budget is a number of epochs, so a run is the same on any machine; the wall time is what it
   cost on this one.
4. Fine-tuning on SST-2 (``minillm finetune``), twice from the pretrained weights and twice from
   random weights of the same architecture (seeds 1 and 2), on every labelled sentence (1 epoch)
   and on the first 2,000 of them (3 epochs), at lr 1e-3 (a 2-layer model from random weights
   learns nothing in 3 epochs at BERT-base's 2e-5 to 2e-4): what pretraining bought is the gap.
5. results.md (the table), results.json, and pretraining.png (loss and masked-token accuracy; the
   ``plot`` extra's matplotlib).

Every stage is one command of minillm's CLI, called here as minillm.cli.main([...]) and printed, so
each can be run by hand; trainer_state.json in each output folder keeps the run's history.
"""
import argparse
import itertools
import json
import os
import sys
import time

import minillm as mm
from minillm.cli import main as minillm
from minillm.data import read_examples
from minillm.data.text_corpus import GroupedTextDataset, read_text_files
from minillm.models import BertConfig, BertForMaskedLM
from minillm.tokenizer import BertTokenizer

FULL = dict(size="tiny", vocab_size=8000, block=128, pretrain_epochs=5, batch_size=16, lr=1e-3, finetune_lr=1e-3,
            limit=None, few_labels=2000)
QUICK = dict(FULL, pretrain_epochs=2, limit=3000, few_labels=500)  # a smoke run: 3,000 sentences, ~3 minutes
# the fine-tunes: on every labelled sentence for 1 epoch, and on the first few_labels of them for 3 epochs
REGIMES = {"all": 1, "few": 3}
PROBES = ["the film was [MASK] .", "a [MASK] , funny and moving film .", "the acting is wooden and the plot [MASK] ."]


def run(*argv):
    """One minillm command, printed as it would be typed; an error stops the pipeline."""
    argv = [str(a) for a in argv]
    print("$ minillm " + " ".join(argv), flush=True)
    if minillm(argv) != 0:
        sys.exit(f"minillm {argv[0]} failed")


def history(folder):
    with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as f:
        return json.load(f)["log_history"]


def write_sentences(tsv, path, limit=None):
    """A GLUE file's sentences, one a line, without their labels; returns how many."""
    texts = read_examples(tsv).texts
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(text + "\n" for text in texts[:limit])
    return len(texts[:limit])


def random_init(pretrained, folder, seed):
    """The pretrained model's architecture and tokenizer with BERT's random initialization (``seed``)."""
    mm.manual_seed(seed)
    BertForMaskedLM(BertConfig.from_pretrained(pretrained)).save_pretrained(folder)
    BertTokenizer.from_pretrained(pretrained).save_pretrained(folder)
    return folder


def finetune(start, data, out, seed, setting, limit, epochs):
    """``minillm finetune`` from the model folder ``start``; (dev accuracy, seconds)."""
    began = time.perf_counter()
    run("finetune", "--model", start, "--data", data, "--out", out, "--epochs", epochs,
        "--batch-size", 32, "--lr", setting["finetune_lr"], "--max-length", 64, "--bucket", "--seed", seed,
        "--overwrite", "--no-progress", *(["--limit", limit] if limit else []))
    return [h for h in history(out) if "eval_accuracy" in h][-1]["eval_accuracy"], time.perf_counter() - began


def plot(log, path):
    """Training loss (a moving mean of 50 steps) and the held-out loss and masked-token accuracy per epoch."""
    try:
        import matplotlib
    except ImportError:
        print("(no plot: pip install -e '.[plot]' brings matplotlib)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h for h in log if "loss" in h]
    evals = [h for h in log if "eval_loss" in h]
    window = min(50, len(steps))
    smooth = [sum(h["loss"] for h in steps[i - window:i]) / window for i in range(window, len(steps) + 1)]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot([h["step"] for h in steps[window - 1:]], smooth, label=f"training (mean of {window} steps)")
    left.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="held out (fixed masks)")
    left.set(xlabel="step", ylabel="masked-LM loss (nats)", title="Pretraining loss")
    left.legend()
    right.plot([h["step"] for h in evals], [100 * h["eval_accuracy"] for h in evals], "o-", color="C2")
    right.set(xlabel="step", ylabel="% of masked tokens predicted", title="Held-out masked-token accuracy")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


def table(r):
    """The results as a Markdown table."""
    rows = [("vocabulary", f"{r['vocab_size']:,} WordPiece tokens, trained on {r['sentences']:,} sentences"),
            ("model", f"BERT-{r['size']}: {r['layers']} layers, hidden {r['hidden']}, "
                      f"{r['parameters'] / 1e6:.2f}M parameters"),
            ("pretraining", f"{r['pretrain_epochs']} epochs x {r['blocks']:,} blocks of {r['block']} tokens, "
                            f"batch {r['batch_size']}, lr {r['lr']}: {r['steps']:,} steps, "
                            f"{r['tokens_seen']:,} tokens seen"),
            ("pretraining time", f"{r['pretrain_seconds'] / 60:.1f} min"),
            ("held-out masked-LM", f"loss {r['mlm_loss']:.3f}, perplexity {r['mlm_perplexity']:.1f}, "
                                   f"masked-token accuracy {100 * r['mlm_accuracy']:.1f}%")]
    for regime, epochs in REGIMES.items():
        labels = f"{r['few_labels'] if regime == 'few' else r['limit'] or r['sentences']:,} labelled sentences"
        for start in ("pretrained", "random"):
            runs = r["finetune"][regime][start]
            accuracies = ", ".join(f"seed {x['seed']}: {100 * x['accuracy']:.2f}%" for x in runs)
            mean = sum(x["accuracy"] for x in runs) / len(runs)
            seconds = sum(x["seconds"] for x in runs) / len(runs)
            rows.append((f"SST-2 dev, {labels} ({epochs} epoch{'s' * (epochs > 1)}), from {start} weights",
                         f"{accuracies} (mean {100 * mean:.2f}%; {seconds / 60:.1f} min per fine-tune)"))
    return "| | |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.path.join(os.environ.get("MINILLM_DATA", "../shared/data"), "sst2"),
                        help="a GLUE SST-2 folder: train.tsv, dev.tsv (default %(default)s)")
    parser.add_argument("--out", required=True, help="a folder for every stage's output")
    parser.add_argument("--quick", action="store_true", help="a small setting, to try the pipeline out")
    parser.add_argument("--size", help="model size (tiny, mini, small...; default tiny)")
    parser.add_argument("--pretrain-epochs", type=int, help="the pretraining budget (default 5)")
    args = parser.parse_args()
    setting = dict(QUICK if args.quick else FULL)
    setting.update({k: v for k, v in (("size", args.size), ("pretrain_epochs", args.pretrain_epochs)) if v})
    os.makedirs(args.out, exist_ok=True)
    path = lambda name: os.path.join(args.out, name)  # noqa: E731

    sentences = write_sentences(os.path.join(args.data, "train.tsv"), path("corpus.txt"), setting["limit"])
    # held out: dev.tsv's sentences, which pretraining never trains on (their labels are never read here)
    write_sentences(os.path.join(args.data, "dev.tsv"), path("held-out.txt"))
    run("train-tokenizer", "--files", path("corpus.txt"), "--vocab-size", setting["vocab_size"],
        "--out", path("vocab"), "--overwrite")
    began = time.perf_counter()
    run("pretrain", "--config", setting["size"], "--tokenizer", path("vocab"), "--files", path("corpus.txt"),
        "--validation-files", path("held-out.txt"), "--out", path("pretrained"), "--max-length", setting["block"],
        "--epochs", setting["pretrain_epochs"], "--batch-size", setting["batch_size"], "--lr", setting["lr"],
        "--seed", 42, "--overwrite", "--no-progress")
    pretrain_seconds = time.perf_counter() - began
    log = history(path("pretrained"))
    plot(log, path("pretraining.png"))
    run("fill-mask", "--model", path("pretrained"), *PROBES)

    finetuned = {regime: {"pretrained": [], "random": []} for regime in REGIMES}
    for seed in (1, 2):
        starts = (("pretrained", path("pretrained")),
                  ("random", random_init(path("pretrained"), path(f"random-init-{seed}"), seed)))
        for (regime, epochs), (start, folder) in itertools.product(REGIMES.items(), starts):
            limit = setting["few_labels"] if regime == "few" else setting["limit"]
            accuracy, seconds = finetune(folder, args.data, path(f"sst2-{regime}-{start}-{seed}"), seed, setting,
                                         limit, epochs)
            finetuned[regime][start].append({"seed": seed, "accuracy": accuracy, "seconds": seconds})

    config = BertConfig.from_pretrained(path("pretrained"))
    model = BertForMaskedLM.from_pretrained(path("pretrained"))
    blocks = GroupedTextDataset(BertTokenizer.from_pretrained(path("vocab")), read_text_files(path("corpus.txt")),
                                setting["block"])  # what the Trainer read, once an epoch
    last = [h for h in log if "eval_loss" in h][-1]
    results = dict(setting, vocab_size=config.vocab_size,  # what the trainer made (at most the size asked for)
                   sentences=sentences, layers=config.num_hidden_layers, hidden=config.hidden_size,
                   parameters=sum(p.data.size for p in model.parameters()), blocks=len(blocks),
                   steps=sum("loss" in h for h in log),
                   tokens_seen=int(blocks.lengths.sum()) * setting["pretrain_epochs"],
                   pretrain_seconds=pretrain_seconds, mlm_loss=last["eval_loss"], mlm_accuracy=last["eval_accuracy"],
                   mlm_perplexity=last["eval_perplexity"], finetune=finetuned, load=os.getloadavg())
    with open(path("results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    with open(path("results.md"), "w", encoding="utf-8") as f:
        f.write(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
