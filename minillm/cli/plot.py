"""plot: a run's record (log.jsonl in a fine-tuning's --out) drawn as loss and metric curves in a PNG."""
import json
import os


def add_commands(commands):
    plot = commands.add_parser("plot", help="draw a fine-tuning run's loss and metric curves (the plot extra)",
                               description="Draw the training loss of every step and the evaluation metrics of "
                                           "every epoch that `minillm finetune` logged in DIR/log.jsonl.")
    plot.add_argument("dir", metavar="DIR", help="a finetune --out folder (or a log.jsonl file)")
    plot.add_argument("--out", default=None, help="the picture (default DIR/training.png; .svg and .pdf work too)")
    plot.set_defaults(run=plot_command)


def read_log(path):
    """The records of a log.jsonl (one JSON object a line), each checked to be an object with a step."""
    from ..data import DataError

    if os.path.isdir(path):
        path = os.path.join(path, "log.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: `minillm finetune --out DIR` writes DIR/log.jsonl")
    records = []
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if text.strip():
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{line}: not valid JSON ({err.msg})") from None
                if not isinstance(record, dict) or "step" not in record:
                    raise DataError(f"{path}:{line}: expected a record with a 'step', got {text.strip()[:60]!r}")
                records.append(record)
    if not records:
        raise DataError(f"{path}: no records yet")
    return records


def curves(records):
    """(training loss, evaluation curves): [(step, loss)] of the steps that have a loss, and
    {metric: [(step, value)]} of every number an evaluation logged (eval_loss, eval_accuracy, ...)."""
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    metrics = {}
    for r in records:
        for key, value in r.items():
            if key.startswith("eval_") and key != "eval_examples" and isinstance(value, (int, float)):
                metrics.setdefault(key[len("eval_"):], []).append((r["step"], value))
    return losses, metrics


def draw(records, path, title="training"):
    """Two panels: the loss (each step's, and the evaluation's) and the other evaluation metrics, by step."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("minillm plot needs matplotlib: pip install 'minillm[plot]'") from None
    losses, metrics = curves(records)
    fig = Figure(figsize=(11, 4), layout="constrained")
    loss_axes, metric_axes = fig.subplots(1, 2)
    if losses:
        loss_axes.plot(*zip(*losses), lw=0.8, alpha=0.8, label="training loss (each step)")
    if "loss" in metrics:
        loss_axes.plot(*zip(*metrics.pop("loss")), "o-", label="evaluation loss")
    loss_axes.set(xlabel="step", ylabel="loss", title="loss")
    loss_axes.legend()
    for name, points in metrics.items():
        metric_axes.plot(*zip(*points), "o-", label=name)
    metric_axes.set(xlabel="step", title="evaluation metrics")
    if metrics:
        metric_axes.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def plot_command(args):
    records = read_log(args.dir)
    folder = args.dir if os.path.isdir(args.dir) else os.path.dirname(args.dir)
    out = args.out or os.path.join(folder, "training.png")
    draw(records, out, title=os.path.basename(os.path.abspath(folder)))
    print(f"wrote {out}: {sum('loss' in r for r in records)} steps, "
          f"{sum(any(k.startswith('eval_') for k in r) for r in records)} evaluations")
    return 0
