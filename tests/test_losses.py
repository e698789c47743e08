"""The losses of every problem type against torch's: cross-entropy with torch's weight= (ignore_index
too), and BertForSequenceClassification's regression (MSE), multi-label (BCE) and weighted losses
against transformers' on the same weights."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minillm as mm
import minillm.nn.functional as F
from finetune_helpers import tiny_model


def both(logits, target, weight, ignore_index=-100):
    """(loss, gradient) of minillm's and of torch's weighted cross-entropy, float64."""
    import torch
    x = mm.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, target, ignore_index=ignore_index, weight=weight)
    loss.backward(np.ones((), logits.dtype) * 0.7)
    t = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(t, torch.tensor(target), weight=torch.tensor(weight),
                                                 ignore_index=ignore_index)
    expected.backward(torch.tensor(0.7, dtype=t.dtype))
    return (loss.numpy(), x.grad.numpy()), (expected.detach().numpy(), t.grad.numpy())


@given(n=st.integers(1, 9), classes=st.integers(1, 5), ignored=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_weighted_cross_entropy_matches_torch(torch, n, classes, ignored, seed):
    """sum(w_y l) / sum(w_y) over the kept rows, any share of them ignored (all: NaN, a zero gradient)."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, n)
    target[rng.random(n) < ignored] = -100
    weight = rng.uniform(0.1, 3, classes)
    (loss, grad), (expected, expected_grad) = both(rng.standard_normal((n, classes)), target, weight)
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)


def test_weights_of_zero_are_torchs_nan_and_the_weight_shape_is_checked(torch):
    logits = np.random.default_rng(0).standard_normal((4, 3))
    (loss, grad), (expected, expected_grad) = both(logits, np.array([0, 0, 1, -100]), np.array([0.0, 0.0, 2.0]))
    assert np.isnan(loss) and np.isnan(expected) and (grad == 0).all()
    (loss, _), (expected, _) = both(logits, np.array([2, 0, 1, 2]), np.array([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(loss, F.cross_entropy(mm.tensor(logits), [2, 0, 1, 2]).numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match=r"weight must be \(3,\), one per class .* got shape \(2,\)"):
        F.cross_entropy(mm.tensor(logits), [0, 1, 2, 0], weight=[1.0, 2.0])


@pytest.mark.parametrize("problem_type", ["regression", "multi_label_classification", "weighted"])
def test_the_classifiers_losses_match_transformers(transformers, torch, tmp_path, problem_type):
    labels = 1 if problem_type == "regression" else 3
    model = tiny_model(0, dropout=0.0, num_labels=labels)
    model.config.problem_type = None if problem_type == "weighted" else problem_type
    model.save_pretrained(tmp_path)
    theirs = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval().double()
    model = model.to(dtype=np.float64)
    rng = np.random.default_rng(1)
    ids = rng.integers(5, model.config.vocab_size, (5, 7))
    if problem_type == "regression":
        y = rng.uniform(0, 5, 5)
    elif problem_type == "multi_label_classification":
        y = (rng.random((5, 3)) < 0.5).astype(np.float64)
    else:
        y = rng.integers(0, 3, 5)
    if problem_type == "weighted":
        weight = np.array([0.5, 2.0, 1.5])
        model.class_weights = weight
        logits = theirs(input_ids=torch.tensor(ids)).logits
        expected = torch.nn.functional.cross_entropy(logits, torch.tensor(y), weight=torch.tensor(weight))
    else:
        expected = theirs(input_ids=torch.tensor(ids), labels=torch.tensor(y)).loss
    ours = model(ids, labels=y).loss
    np.testing.assert_allclose(ours.numpy(), expected.detach().numpy(), rtol=1e-9)
