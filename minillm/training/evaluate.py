"""Evaluation (the loss and the metrics of the model's task over a labeled set) and prediction."""
import numpy
from scipy import special

from .. import backend
from ..data.labels import default_names
from ..models.bert import infer_problem_type
from ..tensor import no_grad
from .metrics import compute_metrics


def _logits(model, batch):
    """The logits of ``model`` called with the batch's model inputs as keyword arguments (the labels
    left out: evaluate scores the logits itself)."""
    return model(**{key: value for key, value in batch.items() if key != "labels"}).logits


@no_grad()
def predict_logits(model, loader):
    """(logits (N, C) float64, labels) of every batch of ``loader`` (labels None if it has none), in eval
    mode; the model's mode is put back after."""
    logits, labels = [], []
    with model.evaluating():
        for batch in loader:
            logits.append(backend.to_host(_logits(model, batch).data).astype(numpy.float64))
            if "labels" in batch:
                labels.append(backend.to_host(batch["labels"]))
    return numpy.concatenate(logits), numpy.concatenate(labels) if labels else None


def evaluate(model, loader, world=None):
    """The metrics of the model's task over ``loader``, whose batches hold "labels", and "examples", the
    count: minillm.training.metrics.compute_metrics for the model's task (config.problem_type, else
    minillm.models.bert.infer_problem_type's from the labels): for classification loss, accuracy, macro_f1, f1,
    matthews_correlation, per_class and confusion_matrix; for regression loss, mse, pearson and
    spearmanr. The loss is the data's own (cross-entropy without class weights).

    world: under mpirun (minillm.distributed), where each rank's loader holds its shard, every rank's
    logits and labels are gathered first, so the metrics are the whole set's: an F1 or a correlation
    is not a mean of the shards'."""
    logits, labels = predict_logits(model, loader)
    if world is not None and world.size > 1:
        parts = world.allgather((logits, labels))
        logits, labels = (numpy.concatenate([part[k] for part in parts]) for k in (0, 1))
    config = getattr(model, "config", None)  # any model with .logits; a BERT classifier's config names the task
    kind = infer_problem_type(logits.shape[1], labels, getattr(config, "problem_type", None))
    id2label = getattr(config, "id2label", None) or default_names(logits.shape[1])
    metrics = compute_metrics(kind, logits, labels, id2label)
    return {**metrics, "examples": len(labels)}


@no_grad()
def predict_proba(model, tokenizer, texts, max_length=None, batch_size=64, text_pairs=None):
    """Class probabilities (N, num_labels) for ``texts`` (and, for pairs, ``text_pairs``), in eval mode:
    softmax, or for a multi-label model each class's sigmoid; texts longer than ``max_length`` tokens
    (default and at most the model's positions) are truncated. A regression model's is its output."""
    positions = model.config.max_position_embeddings
    max_length = positions if max_length is None else min(max_length, positions)
    rows = []
    with model.evaluating():
        for start in range(0, len(texts), batch_size):
            pairs = None if text_pairs is None else list(text_pairs[start:start + batch_size])
            batch = tokenizer(list(texts[start:start + batch_size]), pairs, padding=True, truncation=True,
                              max_length=max_length)
            logits = _logits(model, batch).numpy().astype(numpy.float64)
            kind = model.config.problem_type
            rows.append(logits if kind == "regression" or model.config.num_labels == 1 else
                        special.expit(logits) if kind == "multi_label_classification" else
                        special.softmax(logits, axis=-1))
    return numpy.concatenate(rows)
