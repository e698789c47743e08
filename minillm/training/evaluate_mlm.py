"""Evaluation of a masked language model: held-out masked-LM loss, masked-token accuracy, perplexity.

    held_out = collator.fixed_masks(dev)            # masks drawn once: every epoch reads the same ones
    Trainer(model, args, train, held_out, tokenizer, data_collator=collator, evaluate_fn=evaluate_mlm)

Every metric is a mean over the masked tokens (the labels that are not -100), not over batches,
so a batch with few masked tokens weighs little: loss = sum of -log p(true token) / M, accuracy =
the share of the M tokens whose highest-scoring id is the true one, perplexity = exp(loss), the
number of tokens the model is, on average, as unsure among as if it guessed uniformly.
"""
import math

import numpy

from ..nn import functional as F
from ..ops import IGNORE_INDEX
from ..tensor import no_grad


@no_grad()
def evaluate_mlm(model, loader):
    """{"loss", "accuracy", "perplexity", "examples"} over ``loader``'s masked-LM batches (with
    "labels" (B, L)); "examples" counts the masked tokens, the unit of every mean (and the weight
    of each rank's metrics under mpirun; the perplexity is then the ranks' weighted mean of theirs).
    For a BertForPreTraining whose batches hold "next_sentence_label", also "nsp_accuracy" (weighed
    by the masked tokens too, which under mpirun makes it approximate) and the loss is the masked-LM
    loss alone. The model runs in eval mode and is put back after."""
    total_loss, right, count, nsp_right, sequences = 0.0, 0, 0, 0, 0
    with model.evaluating():
        for batch in loader:
            labels = numpy.asarray(batch["labels"])
            targets = labels[labels != IGNORE_INDEX]  # row-major: the order of the model's (M, V) logits
            if not len(targets):
                continue
            out = model(**batch)
            logits = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
            total_loss += F.cross_entropy(logits, targets).item() * len(targets)
            right += int((logits.numpy().argmax(axis=-1) == targets).sum())
            count += len(targets)
            if "next_sentence_label" in batch:
                nsp = numpy.asarray(batch["next_sentence_label"])
                nsp_right += int((out.seq_relationship_logits.numpy().argmax(axis=-1) == nsp).sum())
                sequences += len(nsp)
    if not count:
        raise ValueError("evaluate_mlm: the held-out data has no masked tokens (every label is -100)")
    metrics = {"loss": total_loss / count, "accuracy": right / count, "perplexity": math.exp(total_loss / count)}
    if sequences:
        metrics["nsp_accuracy"] = nsp_right / sequences
    return {**metrics, "examples": count}
