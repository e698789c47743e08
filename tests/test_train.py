"""The training step and loop: any model with a loss, determinism, exact resume, checkpoints, a NaN
stop, and parity with torch."""
import dataclasses
import json
import os

import numpy as np
import pytest

import minillm as mm
import minillm.nn.functional as F
from finetune_helpers import poison_loss, tiny_model, toy_splits
from minillm.data import pad_batch
from minillm.nn import Embedding, Linear, Module
from minillm.nn.utils import clip_grad_norm_
from minillm.optim import AdamW
from minillm.training import (CHECKPOINT_NAME, Trainer, TrainingArguments, TrainingError, decay_groups, evaluate,
                              train_step)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_splits(tmp_path_factory.mktemp("tok"))


def run(toy, out, resume=False, stop_after=None, seed=0, **options):
    tokenizer, train, dev = toy
    options = {"epochs": 2, "batch_size": 8, "lr": 2e-3, "progress": False, **options}
    args = TrainingArguments(output_dir=str(out), **options)
    trainer = Trainer(tiny_model(seed), args, train, dev, tokenizer)
    trainer.train(resume=resume, stop_after=stop_after)
    return trainer


def losses(history):
    return [h["loss"] for h in history if "loss" in h]


@dataclasses.dataclass
class Output:
    loss: mm.Tensor
    logits: mm.Tensor


class MeanOfEmbeddings(Module):
    """Not a BERT: logits from the mean of the token embeddings. It takes the batch's keywords and
    returns a loss, which is all train_step and the Trainer need of a model."""

    def __init__(self, vocab, classes=2, seed=0):
        super().__init__()
        mm.manual_seed(seed)
        self.embed, self.head = Embedding(vocab, 8), Linear(8, classes)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        logits = self.head(self.embed(input_ids).mean(1))
        return Output(None if labels is None else F.cross_entropy(logits, labels), logits)


def test_train_step_is_forward_backward_clipping_and_update(toy):
    tokenizer, train, _ = toy
    batch = pad_batch([train[i] for i in range(8)])
    ours, theirs = (MeanOfEmbeddings(len(tokenizer)) for _ in range(2))
    ours_opt, theirs_opt = (AdamW(m.parameters(), lr=0.1) for m in (ours, theirs))
    loss, norm = train_step(ours, batch, ours_opt, max_grad_norm=0.1)
    out = theirs(batch["input_ids"], batch["attention_mask"], labels=batch["labels"])  # the step by hand
    out.loss.backward()
    expected_norm = clip_grad_norm_(list(theirs.parameters()), 0.1)
    theirs_opt.step()
    assert float(loss) == out.loss.item() and float(norm) == expected_norm.item() > 0.1  # the norm before clipping
    for a, b in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    ours_opt.zero_grad()
    before = [p.data.copy() for p in ours.parameters()]

    def refuse(loss, norm):
        raise RuntimeError("not finite")

    with pytest.raises(RuntimeError, match="not finite"):  # the check runs before the update: nothing changes
        train_step(ours, batch, ours_opt, check=refuse)
    for a, b in zip(ours.parameters(), before):
        np.testing.assert_array_equal(a.data, b)
    ours_opt.zero_grad()
    loss, norm = train_step(ours, batch, ours_opt, max_grad_norm=0, check=lambda loss, norm: (float(loss), norm))
    assert isinstance(loss, float) and norm is None  # what the check returned; no clipping, no norm


def test_the_trainer_trains_any_model_that_returns_a_loss(toy, tmp_path):
    tokenizer, train, dev = toy
    model = MeanOfEmbeddings(len(tokenizer))
    args = TrainingArguments(output_dir=str(tmp_path), epochs=2, batch_size=8, lr=2e-2, progress=False)
    trainer = Trainer(model, args, train, dev, tokenizer)
    history = trainer.train(stop_after=5)  # one epoch, evaluated and checkpointed
    assert len(losses(history)) == 5 and all(np.isfinite(losses(history)))
    assert [h["eval_examples"] for h in history if "eval_examples" in h] == [20]
    assert (tmp_path / CHECKPOINT_NAME).exists()
    from minillm import safetensors_io  # the best model so far: no save_pretrained here, so its state_dict
    saved = safetensors_io.read_safetensors(tmp_path / "model.safetensors")[0]
    np.testing.assert_array_equal(saved["head.weight"], model.head.weight.numpy())


def test_same_seed_same_losses_and_training_helps(toy, tmp_path):
    first = run(toy, tmp_path / "a")
    second = run(toy, tmp_path / "b")
    assert len(losses(first.history)) == 10  # 40 examples / 8, two epochs
    assert losses(first.history) == losses(second.history)
    other = run(toy, tmp_path / "c", seed=1)
    assert losses(other.history) != losses(first.history)
    evals = [h for h in first.history if "eval_accuracy" in h]
    assert [h["epoch"] for h in evals] == [1, 2] and evals[0]["eval_examples"] == 20
    # ten steps at lr 2e-3 leave the loss at ln 2 give or take dropout's noise: to see training
    # help, train long enough to learn the toy task (100 steps; every seed tried gets below 0.35)
    learned = losses(run(toy, tmp_path / "d", epochs=20, lr=2e-2).history)
    assert np.mean(learned[-5:]) < np.mean(learned[:5]) - 0.2


@pytest.mark.parametrize("stop_after", [3, 5])  # mid-epoch, and exactly at the end of epoch 1
def test_resume_gives_the_losses_of_an_uninterrupted_run(toy, tmp_path, stop_after):
    straight = run(toy, tmp_path / "straight")
    interrupted = run(toy, tmp_path / "resumed", stop_after=stop_after)
    assert len(losses(interrupted.history)) == stop_after
    # a new process would build everything afresh: a differently seeded model, then the checkpoint
    resumed = run(toy, tmp_path / "resumed", resume=True, seed=123)
    assert losses(resumed.history) == losses(straight.history)
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_checkpoint_every_n_steps_and_final_model_folder(toy, tmp_path):
    trainer = run(toy, tmp_path, save_steps=2, stop_after=3)
    assert trainer.saved_step == 3  # saved at step 2, then when stopping at step 3
    assert not (tmp_path / "config.json").exists()  # the run is not finished
    trainer = run(toy, tmp_path, resume=True)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", CHECKPOINT_NAME,
            "trainer_state.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]  # no half-written files left behind
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 10 and len(losses(state["log_history"])) == 10


def test_resume_refuses_another_recipe_or_no_checkpoint(toy, tmp_path):
    with pytest.raises(TrainingError, match="does not exist"):
        run(toy, tmp_path, resume=True)
    run(toy, tmp_path, stop_after=2)
    with pytest.raises(TrainingError, match="written with recipe"):
        run(toy, tmp_path, resume=True, lr=1e-3)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(toy, tmp_path, monkeypatch):
    tokenizer, train, dev = toy
    args = TrainingArguments(output_dir=str(tmp_path), epochs=2, batch_size=8, lr=2e-3, save_steps=2,
                             progress=False)
    trainer = Trainer(tiny_model(0), args, train, dev, tokenizer)
    poison_loss(monkeypatch, trainer.model, 4)  # the 4th training step's loss is NaN
    with pytest.raises(TrainingError, match=r"step 4: the loss is nan.*last good checkpoint is .*\(step 2\)"):
        trainer.train()
    saved = json.loads(_metadata(tmp_path / CHECKPOINT_NAME))
    assert saved["step"] == 2
    assert all(np.isfinite(p.data).all() for p in trainer.model.parameters())  # no update from the NaN step


def _metadata(path):
    from minillm import safetensors_io
    return safetensors_io.read_safetensors(path)[1]["minillm_training_state"]


def test_decay_groups_leave_biases_and_layer_norm_out(toy):
    model = tiny_model(0)
    decay, no_decay = decay_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert any("LayerNorm.weight" in names[id(p)] for p in no_decay["params"])
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


def test_evaluate_accuracy_and_loss(toy):
    tokenizer, _, dev = toy
    from minillm.data import DataLoader
    model = tiny_model(0)
    model.train()
    metrics = evaluate(model, DataLoader(dev, 7, collate_fn=pad_batch))
    assert metrics["examples"] == 20 and 0 <= metrics["accuracy"] <= 1
    assert metrics["loss"] == pytest.approx(np.log(2), abs=0.1)  # an untrained classifier guesses
    assert model.training  # evaluate put the mode back


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        TrainingArguments(output_dir=str(tmp_path), batch_size=0)
    with pytest.raises(ValueError, match="warmup_ratio must be in"):
        TrainingArguments(output_dir=str(tmp_path), warmup_ratio=1.5)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        TrainingArguments(output_dir=str(tmp_path), lr=-1)


def test_a_failed_save_leaves_the_previous_checkpoint_whole(toy, tmp_path, monkeypatch):
    trainer = run(toy, tmp_path, save_steps=2, stop_after=2)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()

    def crash(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(os, "replace", crash)  # the moment the new file would take the old one's place
    with pytest.raises(OSError, match="No space left"):
        run(toy, tmp_path, resume=True, save_steps=2)
    monkeypatch.undo()
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert run(toy, tmp_path, resume=True).step == 10 and trainer.saved_step == 2


def test_the_trainer_evaluates_with_the_function_it_is_given(toy, tmp_path, caplog):
    tokenizer, train, dev = toy
    seen = []

    def count_tokens(model, loader):  # any metrics, as a pretraining run's masked-token ones
        tokens = sum(int(batch["attention_mask"].sum()) for batch in loader)
        seen.append(model)
        return {"loss": 0.5, "tokens": float(tokens), "examples": len(dev)}

    args = TrainingArguments(output_dir=str(tmp_path), epochs=1, batch_size=8, progress=False)
    model = tiny_model(0)
    with caplog.at_level("INFO", logger="minillm"):
        history = Trainer(model, args, train, dev, tokenizer, evaluate_fn=count_tokens).train()
    assert seen == [model]
    expected = float(sum(len(dev[i]["input_ids"]) for i in range(len(dev))))
    assert history[-1] == {"step": 5, "epoch": 1, "eval_loss": 0.5, "eval_tokens": expected, "eval_examples": 20}
    assert f"epoch 1: eval loss 0.5000, tokens {expected:.4f} on 20 examples" in caplog.text
