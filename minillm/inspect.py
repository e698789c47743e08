"""What a BERT model does with one sentence: the logic of ``minillm inspect``.

    minillm inspect --model all-MiniLM-L6-v2 "The movie was not good at all." --plot attn.png

prints the WordPiece tokens and their ids, then for the embeddings and for every layer:
  - the hidden states (1, L, E) and their mean, std and largest absolute value;
  - the entropy of each head's attention, in nats, averaged over the query tokens:
        entropy(p_i) = -sum_j p_ij log p_ij,   0 (one key) <= entropy <= log L (uniform);
  - the share of attention that lands on [CLS] and [SEP]: many heads park their attention there
    when they have nothing to do (a "no-op"), so it hides the links between words;
  - the strongest links between words: query token -> the key token it reads, head, weight.
With --plot it writes a grid of attention heatmaps (layers x heads, tokens on both axes) through
matplotlib (``pip install 'minillm[plot]'``). A fine-tuned classifier folder also shows its
predicted label probabilities.

In Python: ``inspection = run(model, tokenizer, text)``, then ``report(inspection)`` (the text) and
``plot(inspection, "attn.png")``.
"""
import dataclasses
import math
import os
import sys

import numpy

from .tensor import no_grad

SPECIAL = ("[CLS]", "[SEP]")


@dataclasses.dataclass
class Inspection:
    """One sentence through a model. L tokens, E hidden features, H heads, N layers."""
    name: str                     # the model's name or folder
    tokens: list                  # L WordPiece tokens, [CLS] ... [SEP]
    ids: numpy.ndarray            # (L,) their vocabulary ids
    hidden_states: list           # N + 1 arrays (L, E): the embeddings, then each layer's output
    attentions: list              # N arrays (H, L, L): row i = how query token i spreads over the keys
    probabilities: dict = None    # {label: probability} for a classifier, else None

    @property
    def shape(self):
        """(B, L, E) of the hidden states, B = 1."""
        return (1,) + self.hidden_states[0].shape


def load(name_or_path):
    """(model, tokenizer) in eval mode: the classifier when the folder holds one
    (its config.json lists BertForSequenceClassification), otherwise the bare encoder. The
    tokenizer and config.json are read and checked first, the weights last (tokenizer_and_config)."""
    from .models.bert import BertForSequenceClassification, BertModel

    tokenizer, config = BertModel.tokenizer_and_config(name_or_path)
    is_classifier = "BertForSequenceClassification" in config.extra.get("architectures", ())
    cls = BertForSequenceClassification if is_classifier else BertModel
    return cls.from_pretrained(name_or_path, config=config), tokenizer


@no_grad()
def run(model, tokenizer, text, name=""):
    """Run one sentence through ``model`` and keep what there is to see."""
    batch = tokenizer(text)
    model.eval()
    out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                output_hidden_states=True, output_attentions=True)
    probabilities = None
    if hasattr(out, "logits") and model.config.problem_type in (None, "single_label_classification") \
            and model.config.num_labels > 1:
        logits = out.logits.numpy()[0].astype(numpy.float64)
        p = numpy.exp(logits - logits.max())
        probabilities = {model.config.id2label[i]: float(q) for i, q in enumerate(p / p.sum())}
    ids = batch["input_ids"][0]
    return Inspection(name, tokenizer.convert_ids_to_tokens(ids), ids,
                      [h.numpy()[0] for h in out.hidden_states], [a.numpy()[0] for a in out.attentions],
                      probabilities)


def entropy(attention):
    """Per head, the mean over query rows of -sum_j p_ij log p_ij (nats). attention: (H, L, L) -> (H,)."""
    p = numpy.asarray(attention, dtype=numpy.float64)
    logs = numpy.log(numpy.where(p > 0, p, 1))  # 0 log 0 = 0
    return -(p * logs).sum(-1).mean(-1)


def special_share(attention, tokens):
    """The fraction of all attention (over heads and query rows) that lands on [CLS] or [SEP] keys."""
    keys = numpy.array([t in SPECIAL for t in tokens])
    return float(attention[..., keys].sum() / attention.sum())


def strongest_links(attention, tokens, top=3):
    """The ``top`` largest weights p[h, i, j] between two different word tokens (no [CLS]/[SEP],
    no token reading itself), as (weight, head, i, j), strongest first; zero weights are left out."""
    words = numpy.array([t not in SPECIAL for t in tokens])
    p = numpy.where(words[None, :, None] & words[None, None, :], attention, -1.0)
    p[:, numpy.arange(len(tokens)), numpy.arange(len(tokens))] = -1.0
    order = numpy.argsort(p, axis=None)[::-1][:top]
    links = [(float(p.flat[k]),) + tuple(int(n) for n in numpy.unravel_index(k, p.shape)) for k in order]
    return [link for link in links if link[0] > 0]


def report(inspection, top=3):
    """The text ``minillm inspect`` prints."""
    ins = inspection
    heads = ins.attentions[0].shape[0] if ins.attentions else 0
    length = len(ins.tokens)
    lines = [f"model {ins.name}: {len(ins.attentions)} layers (layer n is encoder.layer.<n-1>), {heads} heads, "
             f"hidden size {ins.shape[2]}",
             f"tokens (L={length}): " + " ".join(f"{t}({i})" for t, i in zip(ins.tokens, ins.ids))]
    if ins.probabilities:
        lines.append("prediction: " + "  ".join(f"p({label})={p:.4f}" for label, p in ins.probabilities.items()))
    lines.append(f"attention entropy: nats per head, averaged over queries; 0 = one key, "
                 f"log L = {math.log(length):.2f} = uniform")
    for n, h in enumerate(ins.hidden_states):
        title = "embeddings" if n == 0 else f"layer {n}"
        lines.append(f"{title:<11} hidden {ins.shape}  mean {h.mean():+.4f}  std {h.std():.4f}  "
                     f"max|h| {numpy.abs(h).max():.3f}")
        if n == 0:
            continue
        p = ins.attentions[n - 1]
        lines.append("  entropy  " + " ".join(f"h{k}={e:.2f}" for k, e in enumerate(entropy(p))))
        links = ", ".join(f"{ins.tokens[i]} -> {ins.tokens[j]} (h{k}) {w:.2f}"
                          for w, k, i, j in strongest_links(p, ins.tokens, top))
        lines.append(f"  to [CLS]/[SEP] {special_share(p, ins.tokens):.0%}; strongest links: {links or 'none'}")
    return "\n".join(lines)


def plot(inspection, path, dpi=100):
    """Write a grid of attention heatmaps to ``path`` (the format from its suffix: png, svg, pdf):
    one row per layer, one column per head; in each, row i is query token i, column j key token j."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting attention needs matplotlib: pip install 'minillm[plot]'") from None
    ins = inspection
    layers, heads = len(ins.attentions), ins.attentions[0].shape[0]
    length = len(ins.tokens)
    cell = min(3.5, max(1.4, 0.16 * length))  # inches per heatmap: room for L tick labels, within reason
    fig = Figure(figsize=(heads * cell + 1, layers * cell + 1), layout="constrained")
    axes = fig.subplots(layers, heads, squeeze=False)
    fontsize = min(7.0, 90 / length)
    labels = fontsize >= 3  # past about 30 tokens the labels would be unreadable: leave them out
    for n in range(layers):
        for k in range(heads):
            ax = axes[n, k]
            image = ax.imshow(ins.attentions[n][k], cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if labels and n == layers - 1:  # token labels along the bottom row and the left column
                ax.set_xticks(range(length), ins.tokens, rotation=90, fontsize=fontsize)
            if labels and k == 0:
                ax.set_yticks(range(length), ins.tokens, fontsize=fontsize)
            ax.tick_params(length=0)
            if n == 0:
                ax.set_title(f"head {k}", fontsize=8)
            if k == 0:
                ax.set_ylabel(f"layer {n + 1}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.5, label="attention weight")
    fig.suptitle(f"{ins.name}: attention (row = query token, column = key token it reads)", fontsize=10)
    fig.savefig(path, dpi=dpi)
    return path


def has_matplotlib(command):
    """Whether --plot can run (matplotlib is the plot extra); if not, says so on stderr. Commands
    check it before the model loads, not after."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"minillm {command}: error: --plot needs matplotlib: pip install 'minillm[plot]'", file=sys.stderr)
        return False
    return True


def main(model="all-MiniLM-L6-v2", text="The movie was not good at all.", plot_path=None, top=3, out=None):
    """``minillm inspect``: print the report, write the heatmaps if ``plot_path``; returns an exit status."""
    out = out or sys.stdout
    if plot_path is not None and not has_matplotlib("inspect"):
        return 1
    if top < 0:
        raise ValueError(f"--top must be >= 0, got {top}")
    net, tokenizer = load(model)
    inspection = run(net, tokenizer, text, name=os.fspath(model))
    print(report(inspection, top), file=out)
    if plot_path is not None:
        plot(inspection, plot_path)
        print(f"wrote the attention heatmaps ({len(inspection.attentions)} layers x "
              f"{inspection.attentions[0].shape[0]} heads) to {plot_path}", file=out)
    return 0
