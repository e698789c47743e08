"""The metrics of an evaluation, from predictions and labels, plainly (scikit-learn is the tests' oracle).

    confusion_matrix(labels, predicted, 3)    (3, 3): row = the true class, column = the predicted one
    precision_recall_f1(matrix)               per class: tp / (tp + fp), tp / (tp + fn), their harmonic mean
    matthews_corrcoef(matrix)                 Matthews' correlation, multi-class (Gorodkin's R_K)
    compute_metrics(problem_type, logits, labels, id2label)   the dict an evaluation reports

The names are Hugging Face's GLUE names: accuracy, f1 (of class 1, for binary tasks: MRPC, QQP),
matthews_correlation (CoLA), pearson and spearmanr (STS-B, scipy's), plus macro_f1 (the mean of the
classes' F1, for imbalanced classes) and mse. A class never predicted (or never true) has precision
(recall) 0, as scikit-learn's zero_division=0.
"""
import numpy
from scipy import special, stats

# the numbers each problem type's evaluation reports (f1: binary classification only)
METRIC_NAMES = {"single_label_classification": ("loss", "accuracy", "macro_f1", "f1", "matthews_correlation"),
                "multi_label_classification": ("loss", "accuracy", "macro_f1", "micro_f1"),
                "regression": ("loss", "mse", "pearson", "spearmanr")}


def confusion_matrix(labels, predicted, num_labels):
    """(C, C) int64 counts: entry [i, j] is the number of examples of class i predicted as class j."""
    matrix = numpy.zeros((num_labels, num_labels), numpy.int64)
    numpy.add.at(matrix, (numpy.asarray(labels), numpy.asarray(predicted)), 1)
    return matrix


def _ratio(numerator, denominator):
    return numpy.divide(numerator, denominator, out=numpy.zeros(len(numerator)), where=denominator > 0)


def precision_recall_f1(matrix):
    """(precision, recall, f1), each (C,), from a confusion matrix (C, C) (or, for multi-label, from the
    true positives, false positives and false negatives of every class: see multi_label_metrics)."""
    tp = numpy.diag(matrix).astype(numpy.float64)
    return _scores(tp, matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp)


def _scores(tp, fp, fn):
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return precision, recall, _ratio(2 * tp, 2 * tp + fp + fn)  # = 2 p r / (p + r), 0 where both are 0


def matthews_corrcoef(matrix):
    """(c s - sum_k p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)): c correct, s examples, p_k
    predicted and t_k true counts of class k; 0 where a factor under the root is 0 (one class only)."""
    matrix = matrix.astype(numpy.float64)
    c, s = numpy.trace(matrix), matrix.sum()
    predicted, true = matrix.sum(axis=0), matrix.sum(axis=1)
    denominator = numpy.sqrt((s * s - predicted @ predicted) * (s * s - true @ true))
    return float((c * s - predicted @ true) / denominator) if denominator > 0 else 0.0


def classification_metrics(logits, labels, id2label):
    """Single-label classification: logits (N, C), labels (N,) class ids."""
    logits, labels = numpy.asarray(logits, numpy.float64), numpy.asarray(labels)
    matrix = confusion_matrix(labels, logits.argmax(axis=-1), logits.shape[1])
    precision, recall, f1 = precision_recall_f1(matrix)
    logp = special.log_softmax(logits, axis=-1)
    metrics = {"loss": float(-logp[numpy.arange(len(labels)), labels].mean()),
               "accuracy": float(numpy.trace(matrix) / len(labels)), "macro_f1": float(f1.mean())}
    if logits.shape[1] == 2:
        metrics["f1"] = float(f1[1])
    metrics["matthews_correlation"] = matthews_corrcoef(matrix)
    metrics["per_class"] = _per_class(id2label, precision, recall, f1, matrix.sum(axis=1))
    metrics["confusion_matrix"] = matrix.tolist()
    return metrics


def multi_label_metrics(logits, labels, id2label):
    """Multi-label: logits (N, C), labels (N, C) multi-hot; a class is predicted where sigmoid > 0.5.
    accuracy is the exact-match ratio (every class of the row right), scikit-learn's subset accuracy."""
    logits, labels = numpy.asarray(logits, numpy.float64), numpy.asarray(labels) > 0.5
    predicted = logits > 0
    tp = (predicted & labels).sum(axis=0).astype(numpy.float64)
    fp, fn = (predicted & ~labels).sum(axis=0), (~predicted & labels).sum(axis=0)
    precision, recall, f1 = _scores(tp, fp, fn)
    bce = numpy.logaddexp(0, logits) - logits * labels  # -log sigmoid(x) for y=1, -log(1 - sigmoid(x)) for y=0
    micro = _scores(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))[2]
    return {"loss": float(bce.mean()), "accuracy": float((predicted == labels).all(axis=1).mean()),
            "macro_f1": float(f1.mean()), "micro_f1": float(micro[0]),
            "per_class": _per_class(id2label, precision, recall, f1, labels.sum(axis=0))}


def regression_metrics(predictions, labels):
    """Regression: predictions (N,) or (N, 1), labels (N,): mse, and scipy's Pearson and Spearman."""
    predictions, labels = numpy.asarray(predictions, numpy.float64).reshape(-1), numpy.asarray(labels, numpy.float64)
    return {"loss": float(((predictions - labels) ** 2).mean()), "mse": float(((predictions - labels) ** 2).mean()),
            "pearson": float(stats.pearsonr(predictions, labels)[0]),
            "spearmanr": float(stats.spearmanr(predictions, labels)[0])}


def compute_metrics(problem_type, logits, labels, id2label):
    """The metrics of ``problem_type`` (Hugging Face's names) on ``logits`` and ``labels``."""
    if problem_type == "regression":
        return regression_metrics(logits, labels)
    if problem_type == "multi_label_classification":
        return multi_label_metrics(logits, labels, id2label)
    return classification_metrics(logits, labels, id2label)


def _per_class(id2label, precision, recall, f1, support):
    return {id2label[i]: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i in range(len(precision))}


def format_report(metrics):
    """The lines that show an evaluation's per-class scores and confusion matrix (where it has them)."""
    per_class = metrics.get("per_class")
    if not per_class:
        return []
    width = max(10, *(len(name) for name in per_class))
    lines = [f"{'class':<{width}} precision  recall      f1  support"]
    lines += [f"{name:<{width}} {s['precision']:9.4f} {s['recall']:7.4f} {s['f1']:7.4f} {s['support']:8d}"
              for name, s in per_class.items()]
    matrix = metrics.get("confusion_matrix")
    if matrix is not None:
        cell = max(8, *(len(str(n)) + 1 for row in matrix for n in row))
        lines.append("confusion matrix (row: the true class, column: the predicted one)")
        lines.append(" " * (width + 3) + "".join(f"{i:>{cell}}" for i in range(len(matrix))))
        lines += [f"{i:>2} {name:<{width}}" + "".join(f"{n:>{cell}}" for n in row)
                  for i, (name, row) in enumerate(zip(per_class, matrix))]
    return lines
