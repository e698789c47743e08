"""Evaluation (loss and accuracy over a labeled set) and prediction (class probabilities)."""
import numpy

from ..nn import functional as F
from ..tensor import no_grad


def _logits(model, batch):
    """The logits of ``model`` called with the batch's model inputs as keyword arguments (the labels
    left out: evaluate scores the logits itself)."""
    return model(**{key: value for key, value in batch.items() if key != "labels"}).logits


@no_grad()
def evaluate(model, loader):
    """{"loss": mean cross-entropy, "accuracy": fraction right, "examples": count} over ``loader``,
    whose batches hold "labels". The model runs in eval mode (no dropout) and is put back after."""
    was_training = model.training
    model.eval()
    total_loss, right, count = 0.0, 0, 0
    try:
        for batch in loader:
            logits = _logits(model, batch)
            labels = batch["labels"]
            total_loss += F.cross_entropy(logits, labels).item() * len(labels)
            right += int((logits.numpy().argmax(axis=-1) == labels).sum())
            count += len(labels)
    finally:
        model.train(was_training)
    return {"loss": total_loss / count, "accuracy": right / count, "examples": count}


@no_grad()
def predict_proba(model, tokenizer, texts, max_length=None, batch_size=64):
    """Class probabilities (N, num_labels) for ``texts``, in eval mode; texts longer than
    ``max_length`` tokens (default and at most the model's positions) are truncated."""
    positions = model.config.max_position_embeddings
    max_length = positions if max_length is None else min(max_length, positions)
    was_training = model.training
    model.eval()
    try:
        rows = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                              max_length=max_length)
            rows.append(_logits(model, batch).softmax(-1).numpy())
    finally:
        model.train(was_training)
    return numpy.concatenate(rows).astype(numpy.float64)
