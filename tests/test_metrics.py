"""Every metric against scikit-learn's on random predictions (and Pearson/Spearman against their
definitions), and evaluate() under a fake two-rank world: gathered, not averaged."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minillm.training import metrics


@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn's MCC, on a one-class draw
@settings(deadline=None)
@given(n=st.integers(1, 60), classes=st.integers(2, 5), seed=st.integers(0, 2**32 - 1), skew=st.floats(0, 3))
def test_classification_metrics_match_scikit_learn(sklearn, n, classes, seed, skew):
    """Random logits and labels, some classes rare or absent (skew), so zero divisions happen."""
    rng = np.random.default_rng(seed)
    p = np.exp(-skew * np.arange(classes))
    labels = rng.choice(classes, n, p=p / p.sum())
    logits = rng.standard_normal((n, classes)) + skew * (np.arange(classes) == 0)
    predicted = logits.argmax(axis=1)
    id2label = {i: f"c{i}" for i in range(classes)}
    ours = metrics.classification_metrics(logits, labels, id2label)
    everything = list(range(classes))
    assert ours["accuracy"] == pytest.approx(sklearn.accuracy_score(labels, predicted))
    assert ours["confusion_matrix"] == sklearn.confusion_matrix(labels, predicted, labels=everything).tolist()
    precision, recall, f1, support = sklearn.precision_recall_fscore_support(labels, predicted, labels=everything,
                                                                              zero_division=0)
    for i in everything:
        row = ours["per_class"][f"c{i}"]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[i], recall[i], f1[i]))
        assert row["support"] == support[i]
    assert ours["macro_f1"] == pytest.approx(sklearn.f1_score(labels, predicted, labels=everything, average="macro",
                                                              zero_division=0))
    assert ours["matthews_correlation"] == pytest.approx(sklearn.matthews_corrcoef(labels, predicted), abs=1e-12)
    assert ours["loss"] == pytest.approx(sklearn.log_loss(labels, softmax(logits), labels=everything))
    if classes == 2:
        assert ours["f1"] == pytest.approx(sklearn.f1_score(labels, predicted, zero_division=0))
    else:
        assert "f1" not in ours


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@settings(deadline=None)
@given(n=st.integers(1, 40), classes=st.integers(2, 5), seed=st.integers(0, 2**32 - 1))  # one column: binary to sklearn
def test_multi_label_metrics_match_scikit_learn(sklearn, n, classes, seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, classes)) < rng.random(classes)).astype(np.float32)
    logits = rng.standard_normal((n, classes))
    predicted = (logits > 0).astype(int)
    ours = metrics.multi_label_metrics(logits, labels, {i: f"c{i}" for i in range(classes)})
    assert ours["accuracy"] == pytest.approx(sklearn.accuracy_score(labels, predicted))  # exact match
    for average in ("macro", "micro"):
        assert ours[f"{average}_f1"] == pytest.approx(sklearn.f1_score(labels, predicted, average=average,
                                                                       zero_division=0))
    precision, recall, f1, support = sklearn.precision_recall_fscore_support(labels, predicted, zero_division=0)
    assert [ours["per_class"][f"c{i}"]["recall"] for i in range(classes)] == pytest.approx(recall)
    assert [ours["per_class"][f"c{i}"]["precision"] for i in range(classes)] == pytest.approx(precision)
    assert ours["loss"] == pytest.approx(np.mean(-labels * np.log(1 / (1 + np.exp(-logits)))
                                                 - (1 - labels) * np.log(1 - 1 / (1 + np.exp(-logits)))))


def test_regression_metrics(sklearn):
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, 50)
    predictions = labels + rng.normal(0, 1, 50)
    ours = metrics.regression_metrics(predictions[:, None], labels)
    assert ours["mse"] == pytest.approx(sklearn.mean_squared_error(labels, predictions)) == ours["loss"]
    assert ours["pearson"] == pytest.approx(np.corrcoef(predictions, labels)[0, 1])
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731  (no ties in continuous draws)
    assert ours["spearmanr"] == pytest.approx(np.corrcoef(rank(predictions), rank(labels))[0, 1])


def test_the_report_shows_every_class_and_the_confusion_matrix():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    report = metrics.format_report(metrics.classification_metrics(logits, np.array([0, 0, 1]),
                                                                  {0: "entailment", 1: "not_entailment"}))
    assert report[0].split() == ["class", "precision", "recall", "f1", "support"]
    assert report[1].split() == ["entailment", "0.5000", "0.5000", "0.5000", "2"]
    assert report[-2].split() == ["0", "entailment", "1", "1"] and report[-1].split() == ["1", "not_entailment",
                                                                                          "1", "0"]


class TwoRanks:
    """A world of two ranks whose other rank holds ``other`` (its logits and labels)."""
    size, rank = 2, 0

    def __init__(self, other):
        self.other = other

    def allgather(self, value):
        return [value, self.other]


def test_evaluate_gathers_the_ranks_predictions_before_computing(sklearn):
    """An F1 (or an MCC) of the whole set is not the mean of the shards': evaluate() gathers."""
    from finetune_helpers import tiny_model
    from minillm.training import evaluate

    model = tiny_model(0, dropout=0.0)
    rng = np.random.default_rng(3)
    batches = [{"input_ids": rng.integers(5, 20, (6, 5)), "labels": rng.integers(0, 2, 6)} for _ in range(2)]
    mine = evaluate(model, batches[:1])
    other_logits = model(batches[1]["input_ids"]).logits.numpy().astype(np.float64)
    whole = evaluate(model, batches[:1], world=TwoRanks((other_logits, batches[1]["labels"])))
    logits = np.concatenate([model(b["input_ids"]).logits.numpy() for b in batches])
    labels = np.concatenate([b["labels"] for b in batches])
    assert whole["examples"] == 12 and mine["examples"] == 6
    assert whole["f1"] == pytest.approx(sklearn.f1_score(labels, logits.argmax(1), zero_division=0))
    assert whole["matthews_correlation"] == pytest.approx(sklearn.matthews_corrcoef(labels, logits.argmax(1)))


def test_the_names_finetune_checks_metric_against_are_the_ones_reported():
    rng = np.random.default_rng(0)
    logits, ids = rng.standard_normal((8, 2)), rng.integers(0, 2, 8)
    names = {0: "a", 1: "b"}
    reported = {"single_label_classification": metrics.classification_metrics(logits, ids, names),
                "multi_label_classification": metrics.multi_label_metrics(logits, ids[:, None] * [1, 0], names),
                "regression": metrics.regression_metrics(logits[:, 0], logits[:, 1])}
    for kind, values in reported.items():
        assert {k for k, v in values.items() if isinstance(v, float)} == set(metrics.METRIC_NAMES[kind]), kind
