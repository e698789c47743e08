"""cross_entropy's ignore_index against torch in float64, the batch whose every target is ignored
included (torch: a NaN loss, the mean of nothing, and a zero gradient; no RuntimeWarning), and the
Trainer on such a batch: it carries no loss, so the Trainer skips it (no update, logged, a record
without a loss) where a NaN from divergence still stops training with a TrainingError."""
import logging
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minillm as mm
import minillm.nn.functional as F
from finetune_helpers import poison_loss, tiny_model, tiny_tokenizer, toy_texts
from minillm.data import TextClassificationDataset
from minillm.training import Trainer, TrainingArguments, TrainingError


def both(logits, target, ignore_index=-100):
    """(minillm's loss, its gradient), (torch's loss, its gradient), minillm's under warnings as errors."""
    import torch
    x = mm.tensor(logits, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0 / 0 would warn
        loss = F.cross_entropy(x, target, ignore_index=ignore_index)
        loss.backward(np.ones((), logits.dtype) * 0.7)
    t = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(t, torch.tensor(target), ignore_index=ignore_index)
    expected.backward(torch.tensor(0.7, dtype=t.dtype))
    return (loss.numpy(), x.grad.numpy()), (expected.detach().numpy(), t.grad.numpy())


def assert_same(ours, theirs):
    (loss, grad), (expected_loss, expected_grad) = ours, theirs
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-12, atol=1e-14)  # NaN equals NaN here
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-14)


@given(n=st.integers(1, 9), classes=st.integers(1, 5), ignored=st.floats(0, 1), seed=st.integers(0, 2**32 - 1),
       in_range=st.booleans())
def test_ignore_index_matches_torch_every_row_ignored_included(torch, n, classes, ignored, seed, in_range):
    """Any share of rows ignored, all of them included; ignore_index -100, or a class id (in range)."""
    rng = np.random.default_rng(seed)
    ignore_index = int(rng.integers(classes)) if in_range else -100
    target = rng.integers(0, classes, n)
    target[rng.random(n) < ignored] = ignore_index
    assert_same(*both(rng.standard_normal((n, classes)), target, ignore_index))


def test_every_target_ignored_is_a_nan_loss_and_a_zero_gradient(torch):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4))
    for target, ignore_index in ((np.full(6, -100), -100), (np.full(6, 2), 2)):  # the default; an in-range one
        ours, theirs = both(logits, target, ignore_index)
        assert np.isnan(ours[0]) and np.isnan(theirs[0])
        assert (ours[1] == 0).all() and (theirs[1] == 0).all()
        assert_same(ours, theirs)
    x = mm.tensor(logits.astype(np.float32), requires_grad=True)
    loss = F.cross_entropy(x, np.full(6, -100))
    loss.backward()
    assert loss.dtype == np.float32 and x.grad.dtype == np.float32 and (x.grad.numpy() == 0).all()


# ---- the Trainer on a batch with no target -------------------------------------------------------------
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tokenizer = tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    return tokenizer, TextClassificationDataset(tokenizer, *toy_texts(32, seed=1), max_length=24)


def trainer_with(toy, tmp_path, labels_of):
    """A Trainer (4 steps an epoch, 2 epochs) whose n-th batch gets labels_of(n, labels)."""
    tokenizer, train = toy
    args = TrainingArguments(output_dir=str(tmp_path), epochs=2, batch_size=8, lr=2e-3, progress=False)
    trainer = Trainer(tiny_model(0, dropout=0.0), args, train, tokenizer=tokenizer)
    collate, calls = trainer.loader.collate_fn, []

    def relabel(examples):
        batch = collate(examples)
        calls.append(1)
        batch["labels"] = labels_of(len(calls), batch["labels"])
        return batch

    trainer.loader.collate_fn = relabel
    return trainer


def test_the_trainer_skips_a_batch_whose_every_label_is_ignored(toy, tmp_path, caplog, monkeypatch):
    trainer = trainer_with(toy, tmp_path, lambda n, labels: np.full_like(labels, -100) if n == 3 else labels)
    updates, step = [], trainer.optimizer.step

    def counted_step():
        updates.append(trainer.step + 1)
        return step()

    monkeypatch.setattr(trainer.optimizer, "step", counted_step)
    with caplog.at_level(logging.INFO, logger="minillm"):
        history = trainer.train()
    steps = [h for h in history if "lr" in h]
    assert [h["step"] for h in steps] == list(range(1, 9))
    assert "loss" not in steps[2] and "ignored" in steps[2]["skipped"]
    assert all(np.isfinite(h["loss"]) for i, h in enumerate(steps) if i != 2)
    assert updates == [1, 2, 4, 5, 6, 7, 8]  # no update on step 3
    assert any("step 3: every label of the batch is -100" in r.getMessage() for r in caplog.records)
    assert trainer.schedule.last_epoch == 8  # the schedule moved on with the step count


def test_the_skipped_step_leaves_the_weights_as_they_were(toy, tmp_path):
    """After an ignored batch the weights are those after the step before: nothing moved them, not
    even AdamW's momentum (an update with a zero gradient would)."""
    trainer = trainer_with(toy, tmp_path, lambda n, labels: np.full_like(labels, -100) if n == 2 else labels)
    trainer.train(stop_after=1)
    after_one = [p.data.copy() for p in trainer.params]
    trainer.train(stop_after=1)  # the ignored batch
    assert trainer.step == 2 and "skipped" in trainer.history[-1]
    for a, b in zip(after_one, trainer.params):
        np.testing.assert_array_equal(a, b.data)


def test_a_nan_from_divergence_still_stops_training(toy, tmp_path, monkeypatch):
    """A batch with some targets kept (and some ignored) whose loss is NaN: that is divergence, and
    the Trainer stops before the update, as before."""
    def some_ignored(n, labels):
        labels = labels.copy()
        labels[::2] = -100
        return labels

    trainer = trainer_with(toy, tmp_path, some_ignored)
    poison_loss(monkeypatch, trainer.model, 2)  # the 2nd step's loss is NaN
    with pytest.raises(TrainingError, match=r"step 2: the loss is nan"):
        trainer.train()
    assert all(np.isfinite(p.data).all() for p in trainer.model.parameters())
