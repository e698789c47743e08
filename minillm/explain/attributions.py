"""Which tokens decided a classifier's prediction: three attributions, each one number per token.

    x_i (L, E)  the word embeddings of the L tokens ([CLS] and [SEP] included), the model's input
    f(x)        the target class's logit (output="logit") or probability (output="probability")

Integrated gradients (Sundararajan, Taly and Yan 2017) walk the straight path from a baseline x'
(by default the [PAD] token's embedding in every position but [CLS] and [SEP]) to x:

    IG_i = (x_i - x'_i) . integral_0^1 df/dx_i(x' + a (x - x')) da          summed over the E features
         ~ (x_i - x'_i) . sum_k w_k df/dx_i(x' + a_k (x - x'))              the Riemann (or Gauss) sum

and add up to f(x) - f(x') (completeness: the fundamental theorem of calculus along the path, since
d/da f(x' + a (x - x')) = sum_i df/dx_i . (x_i - x'_i)). The sum over the path is one batch: the
points are the rows of a forward and a backward pass (``batch_size`` rows at a time), and the gap
between the sum of the attributions and f(x) - f(x') says how far the sum is from the integral.

Gradient times input: df/dx_i . x_i, the first-order term of f at x (one forward, one backward).
Attention rollout (Abnar and Zuidema 2020): how much of each token reaches [CLS] through the layers'
attention, the residual counted as attention to oneself; it does not depend on the class.

Each returns an ``Explanation``: the tokens and one attribution per token, in the tokenizer's order.
"""
import contextlib
import dataclasses
import functools

import numpy

from .. import backend
from ..nn import functional as F
from ..tensor import Tensor, no_grad

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
OUTPUTS = ("logit", "probability")


@dataclasses.dataclass
class Explanation:
    """One text's attributions. L tokens, C classes."""
    method: str                    # "integrated gradients", "gradient x input" or "attention rollout"
    tokens: list                   # L WordPiece tokens, [CLS] ... [SEP] (... [SEP] for a pair)
    attributions: numpy.ndarray    # (L,) float64: one per token
    probabilities: numpy.ndarray   # (C,) the model's class probabilities for the text
    target: int                    # the class explained
    label: str                     # its name (config.id2label)
    output: str = None             # what f is: "logit" or "probability" (None for rollout)
    f_input: float = None          # integrated gradients: f(x) ...
    f_baseline: float = None       # ... and f(baseline)
    steps: int = None

    @property
    def gap(self):
        """The completeness gap: sum of the attributions - (f(x) - f(baseline)); None but for integrated gradients."""
        if self.f_input is None:
            return None
        return float(self.attributions.sum() - (self.f_input - self.f_baseline))

    @property
    def relative_gap(self):
        """|gap| / |f(x) - f(baseline)| (inf where f(x) = f(baseline) but the gap is not 0)."""
        if self.gap is None:
            return None
        difference = abs(self.f_input - self.f_baseline)
        return abs(self.gap) / difference if difference else (0.0 if self.gap == 0 else float("inf"))

    def words(self):
        """The word pieces grouped back into words: [(word, attribution, [(piece, attribution), ...])]."""
        return group_words(self.tokens, self.attributions)


def _in_eval_mode(explain):
    """Run ``explain(model, ...)`` in eval mode (dropout off: every point of the path sees the same
    network), then put the model back in the mode it was in, as Captum leaves it."""
    @functools.wraps(explain)
    def run(model, *args, **kwargs):
        with model.evaluating():
            return explain(model, *args, **kwargs)
    return run


@_in_eval_mode
def integrated_gradients(model, tokenizer, text, text_pair=None, target=None, baseline="pad", steps=50,
                         method="gausslegendre", output="logit", batch_size=25):
    """Integrated gradients over the word embeddings, as Captum's LayerIntegratedGradients on
    ``bert.embeddings.word_embeddings`` with the same baseline ids computes them.

    baseline: "pad" (the input's ids with every token but [CLS] and [SEP] replaced by [PAD]), the
    baseline's token ids (L,), or its word embeddings (L, E). steps: points on the path; method: how
    they are placed and weighted (METHODS, Captum's names; Gauss-Legendre by default). The path is
    cut into forward-backward passes of ``batch_size`` points: 50 steps are 2 passes of 25 rows.
    target: a class id, default the predicted one. The returned Explanation carries f(x), f(baseline)
    and the completeness gap."""
    _check_choice("method", method, METHODS)
    if steps < 2 or batch_size < 1:
        raise ValueError(f"steps must be at least 2 and batch_size at least 1, got steps={steps}, "
                         f"batch_size={batch_size}")
    encoded, tokens, probabilities, target = _prepare(model, tokenizer, text, text_pair, target, output)
    x = _word_embeddings(model, encoded["input_ids"][0])                            # (L, E)
    x_baseline = _baseline_embeddings(model, tokenizer, tokens, encoded, baseline)  # (L, E)
    alphas, weights = path_weights(method, steps)                                   # (steps,) each
    integral = numpy.zeros_like(x, dtype=numpy.float64)        # sum_k w_k df/dx(x' + a_k (x - x'))
    with _frozen(model):
        for start in range(0, steps, batch_size):
            a = alphas[start:start + batch_size, None, None]
            _, grads = _gradients(model, encoded, x_baseline + a * (x - x_baseline), target, output)
            integral += numpy.tensordot(weights[start:start + batch_size], grads, axes=1)
        with no_grad():
            f_input, f_baseline = _scores(model, encoded, numpy.stack([x, x_baseline]), target, output)
    attributions = ((x - x_baseline) * integral).sum(-1)                            # (L,)
    return Explanation("integrated gradients", tokens, attributions, probabilities, target,
                       model.config.id2label[target], output, float(f_input), float(f_baseline), steps)


@_in_eval_mode
def gradient_x_input(model, tokenizer, text, text_pair=None, target=None, output="logit"):
    """df/dx_i . x_i for each token's word embedding x_i: one forward and one backward pass."""
    encoded, tokens, probabilities, target = _prepare(model, tokenizer, text, text_pair, target, output)
    x = _word_embeddings(model, encoded["input_ids"][0])
    with _frozen(model):
        _, grads = _gradients(model, encoded, x[None], target, output)
    return Explanation("gradient x input", tokens, (grads[0] * x).sum(-1), probabilities, target,
                       model.config.id2label[target], output)


@_in_eval_mode
def attention_rollout(model, tokenizer, text, text_pair=None, target=None):
    """The [CLS] row of ``rollout`` of the model's attention probabilities: how much of each token
    flows into [CLS] (which the classifier reads). The same for every class: ``target`` only names
    the class shown beside it (default the predicted one)."""
    encoded, tokens, probabilities, target = _prepare(model, tokenizer, text, text_pair, target, "logit")
    with no_grad():
        out = model(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"],
                    output_attentions=True)
    attentions = numpy.stack([backend.to_host(a.data)[0] for a in out.attentions])  # (N, H, L, L)
    return Explanation("attention rollout", tokens, rollout(attentions)[0], probabilities, target,
                       model.config.id2label[target])


def rollout(attentions):
    """Attention rollout. attentions: (N, H, L, L), layer by layer, row i = query token i.
    Per layer, A = mean over heads; the residual x + attention(x) passes token i on to itself, so
    A~ = (A + I) with rows renormalized to sum 1 (= 0.5 A + 0.5 I, the paper's); then
    R = A~_N ... A~_2 A~_1 (L, L): R[i, j] = how much of input token j reaches position i at the top."""
    p = numpy.asarray(attentions, dtype=numpy.float64)
    length = p.shape[-1]
    result = numpy.eye(length)
    for layer in p:
        a = layer.mean(0) + numpy.eye(length)
        result = (a / a.sum(-1, keepdims=True)) @ result
    return result


def path_weights(method, steps):
    """(alphas, weights), each (steps,): the points a_k on [0, 1] and the weights w_k of the sum
    sum_k w_k g(a_k) ~ integral_0^1 g(a) da, as Captum's approximation_methods place them.
    gausslegendre: numpy's Legendre nodes x_k and weights v_k on [-1, 1] moved to [0, 1]
    (a_k = (1 + x_k) / 2, w_k = v_k / 2), exact for polynomials of degree < 2 steps; riemann_*: the
    left, right or middle points of ``steps`` equal slices (w_k = 1/steps); riemann_trapezoid: the
    trapezoid rule on ``steps`` points from 0 to 1, steps - 1 slices (w_k = 1/(steps - 1), halved at
    the ends). Captum's trapezoid weights are 1/steps, halved at the ends: they sum to 1 - 1/steps,
    which leaves a completeness gap of about 1/steps; these sum to 1."""
    _check_choice("method", method, METHODS)
    if method == "gausslegendre":
        nodes, weights = numpy.polynomial.legendre.leggauss(steps)
        return (1 + nodes) / 2, weights / 2
    if method == "riemann_trapezoid":
        weights = numpy.full(steps, 1 / (steps - 1))
        weights[[0, -1]] /= 2
        return numpy.linspace(0, 1, steps), weights
    weights = numpy.full(steps, 1 / steps)
    start = {"riemann_left": 0, "riemann_right": 1 / steps, "riemann_middle": 1 / (2 * steps)}[method]
    return numpy.linspace(start, start + 1 - 1 / steps, steps), weights


def group_words(tokens, values):
    """WordPiece's continuation pieces ("##ing") joined back to the word they continue:
    [(word, sum of its pieces' values, [(piece, value), ...])]. Summing keeps completeness."""
    words = []
    for token, value in zip(tokens, numpy.asarray(values, dtype=numpy.float64)):
        if token.startswith("##") and words:
            word, total, pieces = words[-1]
            words[-1] = (word + token[2:], total + value, pieces + [(token, value)])
        else:
            words.append((token, value, [(token, value)]))
    return [(word, float(total), [(piece, float(v)) for piece, v in pieces]) for word, total, pieces in words]


# ---- the passes ------------------------------------------------------------------------------------
def _prepare(model, tokenizer, text, text_pair, target, output):
    """(encoded (1, L) arrays, tokens, class probabilities (C,), target class) after checking the
    model is a classifier and the arguments are ones it can explain."""
    if not hasattr(model, "classifier") or not hasattr(model, "bert"):
        raise TypeError(f"explain needs a classifier (BertForSequenceClassification), got {type(model).__name__}")
    _check_choice("output", output, OUTPUTS)
    num_labels = model.config.num_labels
    if output == "probability" and num_labels < 2:
        raise ValueError(f"output='probability' needs at least 2 classes; this model has num_labels={num_labels}")
    if target is not None and not 0 <= target < num_labels:
        raise ValueError(f"target {target} is not a class of this model (0..{num_labels - 1})")
    encoded = tokenizer(text, text_pair)
    with no_grad():
        logits = backend.to_host(model(**encoded).logits.data)[0].astype(numpy.float64)  # (C,)
    p = numpy.exp(logits - logits.max())
    target = int(logits.argmax()) if target is None else int(target)
    return encoded, tokenizer.convert_ids_to_tokens(encoded["input_ids"][0]), p / p.sum(), target


def _word_embeddings(model, ids):
    """word_embeddings(ids): (L,) -> (L, E) float64 on the host."""
    weight = model.bert.embeddings.word_embeddings.weight
    return backend.to_host(weight.data[backend.to_device(ids, weight.device)]).astype(numpy.float64)


def _baseline_embeddings(model, tokenizer, tokens, encoded, baseline):
    """The baseline's word embeddings (L, E): from "pad", from ids (L,), or given (L, E)."""
    ids = encoded["input_ids"][0]
    shape = (len(ids), model.config.hidden_size)
    if isinstance(baseline, str):
        _check_choice("baseline", baseline, ("pad",))
        kept = {tokenizer.special_tokens["cls_token"], tokenizer.special_tokens["sep_token"]}
        return _word_embeddings(model, numpy.array([i if t in kept else tokenizer.pad_token_id
                                                    for i, t in zip(ids, tokens)]))
    baseline = numpy.asarray(baseline)
    if baseline.dtype.kind in "iu" and baseline.shape == ids.shape:
        if baseline.min() < 0 or baseline.max() >= model.config.vocab_size:
            raise ValueError(f"baseline ids must be in [0, vocab_size={model.config.vocab_size}), "
                             f"got {baseline.min()} to {baseline.max()}")
        return _word_embeddings(model, baseline)
    if baseline.dtype.kind == "f" and baseline.shape == shape:
        return baseline.astype(numpy.float64)
    raise ValueError(f"baseline must be 'pad', token ids of shape {ids.shape} or word embeddings of shape {shape}, "
                     f"got {baseline.dtype} of shape {baseline.shape}")


def _forward_scores(model, encoded, embeddings, target, output):
    """f for each row of ``embeddings`` (n, L, E), host floats: a Tensor (n,) and the input Tensor."""
    weight = model.bert.embeddings.word_embeddings.weight
    x = Tensor(backend.to_device(embeddings, weight.device, weight.dtype), requires_grad=True)
    rows = len(embeddings)
    logits = model(attention_mask=numpy.repeat(encoded["attention_mask"], rows, 0),
                   token_type_ids=numpy.repeat(encoded["token_type_ids"], rows, 0), inputs_embeds=x).logits
    scores = logits if output == "logit" else F.softmax(logits, -1)
    return scores[:, target], x


def _scores(model, encoded, embeddings, target, output):
    """f for each row of ``embeddings`` (n, L, E): (n,) float64."""
    scores, _ = _forward_scores(model, encoded, embeddings, target, output)
    return backend.to_host(scores.data).astype(numpy.float64)


def _gradients(model, encoded, embeddings, target, output):
    """f and df/dx for each row x of ``embeddings`` (n, L, E), in one forward and one backward pass
    (the rows are independent, so the gradient of the sum is each row's own): (n,), (n, L, E) float64."""
    scores, x = _forward_scores(model, encoded, embeddings, target, output)
    scores.sum().backward()
    return backend.to_host(scores.data).astype(numpy.float64), backend.to_host(x.grad.data).astype(numpy.float64)


@contextlib.contextmanager
def _frozen(model):
    """The model's parameters without requires_grad for the block: backward computes the gradient of
    the input embeddings only, no weight gradients, and leaves no .grad on the model."""
    wanted = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in wanted:
        p.requires_grad = False
    try:
        yield
    finally:
        for p, requires_grad in wanted:
            p.requires_grad = requires_grad


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(map(repr, choices))}")
