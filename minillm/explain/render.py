"""An Explanation shown three ways: the text ``minillm explain`` prints (coloured in a terminal),
a self-contained HTML page (``--html``) and a bar chart (``--plot``, matplotlib: the `plot` extra).

    minillm explain --model sst2-minilm "the acting was wooden but the plot was great" --plot ig.png

Words are shown with the sum of their pieces' attributions, and a word of several pieces lists them.
Colours: green pushes towards the explained class, red away from it, the stronger the larger |value|
is against the largest |value| of the text.
"""
import html
import io
import os
import sys

from .. import safetensors_io
from .attributions import attention_rollout, gradient_x_input, integrated_gradients

EXPLAINERS = {"ig": integrated_gradients, "gxi": gradient_x_input, "rollout": attention_rollout}
GREEN, RED = (26, 152, 80), (215, 48, 39)  # ColorBrewer's RdYlGn ends


def report(explanation, color=False):
    """The text ``minillm explain`` prints: the prediction, what was computed, then one word a line."""
    e = explanation
    shown = "  ".join(f"p({i})={p:.4f}" for i, p in enumerate(e.probabilities))
    lines = [f"prediction: {int(e.probabilities.argmax())}  {shown}", _title(e)]
    if e.gap is not None:
        lines.append(f"completeness: f(x) {e.f_input:+.6f}, f(baseline) {e.f_baseline:+.6f}, difference "
                     f"{e.f_input - e.f_baseline:+.6f}; sum of attributions {e.attributions.sum():+.6f}; "
                     f"gap {e.gap:+.2e} ({e.relative_gap:.3%} of the difference)")
    words = e.words()
    scale = max((abs(v) for _, v, _ in words), default=0.0) or 1.0
    lines.append("  " + " ".join(_paint(word, value / scale) if color else word for word, value, _ in words))
    for word, value, pieces in words:
        parts = "" if len(pieces) == 1 else "  = " + " ".join(f"{p} {v:+.4f}" for p, v in pieces)
        lines.append(f"  {_paint(f'{word:<14}', value / scale) if color else f'{word:<14}'} {value:+.4f}{parts}")
    return "\n".join(lines)


def to_html(explanation):
    """A self-contained page: the text with each word's background coloured by its attribution
    (hover for the value and pieces), then the report's figures."""
    e = explanation
    words = e.words()
    scale = max((abs(v) for _, v, _ in words), default=0.0) or 1.0
    spans = " ".join(
        f'<span title="{html.escape(" ".join(f"{p} {v:+.4f}" for p, v in pieces))}" '
        f'style="background:{_rgba(value / scale)};padding:2px 3px;border-radius:3px">{html.escape(word)}</span>'
        for word, value, pieces in words)
    rows = "".join(f"<tr><td>{html.escape(w)}</td><td>{v:+.4f}</td></tr>" for w, v, _ in words)
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in report(e).splitlines()[:3] if not line.startswith("  "))
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>minillm explain: {html.escape(e.method)}'
            f'</title></head>\n<body style="font-family:sans-serif;max-width:50em;margin:2em auto">\n'
            f'<h1>{html.escape(e.method)}</h1>\n{lines}\n<p style="font-size:1.4em;line-height:2">{spans}</p>\n'
            f'<table>{rows}</table>\n</body></html>\n')


def plot(explanation, path, dpi=100):
    """A bar per word (green towards the class, red away) to ``path`` (png, svg, pdf by its suffix),
    written to a temporary name and renamed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting attributions needs matplotlib: pip install 'minillm[plot]'") from None
    e = explanation
    words = e.words()
    fig = Figure(figsize=(max(4.0, 0.5 * len(words) + 1), 3.2), layout="constrained")
    ax = fig.subplots()
    values = [v for _, v, _ in words]
    ax.bar(range(len(words)), values, color=["#%02x%02x%02x" % (GREEN if v >= 0 else RED) for v in values])
    ax.set_xticks(range(len(words)), [w for w, _, _ in words], rotation=60, ha="right")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("attribution")
    ax.set_title(f"{_title(e)}\nprediction {e.label} (p={e.probabilities[e.target]:.3f})", fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=os.path.splitext(os.fspath(path))[1][1:] or "png", dpi=dpi)
    safetensors_io.atomic_write(path, buffer.getvalue())
    return path


def main(model, text, text_pair=None, method="ig", target=None, steps=50, html_path=None, plot_path=None, out=None):
    """``minillm explain``: print the report, write the page and the image if asked; returns an exit status."""
    from ..inspect import has_matplotlib, load

    out = out or sys.stdout
    if plot_path is not None and not has_matplotlib("explain"):
        return 1
    net, tokenizer = load(model)
    if not hasattr(net, "classifier"):
        raise ValueError(f"--model {model} is not a classifier (its config.json lists no "
                         "BertForSequenceClassification): fine-tune one with minillm finetune")
    options = {"steps": steps} if method == "ig" else {}
    explanation = EXPLAINERS[method](net, tokenizer, text, text_pair, target, **options)
    print(report(explanation, color=_is_terminal(out)), file=out)
    if html_path is not None:
        safetensors_io.atomic_write(html_path, to_html(explanation))
        print(f"wrote the page to {html_path}", file=out)
    if plot_path is not None:
        plot(explanation, plot_path)
        print(f"wrote the chart to {plot_path}", file=out)
    return 0


def _title(e):
    if e.method == "integrated gradients":
        return f"integrated gradients of the {e.output} of class {e.target} ({e.label}), {e.steps} steps from the baseline"
    if e.method == "gradient x input":
        return f"gradient x input of the {e.output} of class {e.target} ({e.label})"
    return "attention rollout: each token's share of [CLS] after the last layer (the same for every class)"


def _is_terminal(stream):
    """Colours only on a terminal, and not when NO_COLOR is set (no-color.org)."""
    return hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ


def _paint(text, strength):
    """``text`` on a background from white (0) to green (+1) or red (-1): 24-bit ANSI colour."""
    r, g, b = _mix(strength)
    return f"\033[48;2;{r};{g};{b}m\033[38;2;0;0;0m{text}\033[0m"


def _rgba(strength):
    r, g, b = GREEN if strength >= 0 else RED
    return f"rgba({r},{g},{b},{min(abs(strength), 1.0):.2f})"


def _mix(strength):
    """White blended towards GREEN or RED by |strength| (0..1)."""
    a = min(abs(strength), 1.0)
    end = GREEN if strength >= 0 else RED
    return tuple(round(255 + a * (c - 255)) for c in end)
