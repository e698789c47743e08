"""Best-model selection and early stopping on runs whose best epoch is known (a scripted evaluation),
a resume that selects and stops as the uninterrupted run, the record in log.jsonl, and class weights."""
import json

import numpy as np
import pytest

from finetune_helpers import tiny_model, toy_splits
from minillm import safetensors_io
from minillm.training import CHECKPOINT_NAME, Trainer, TrainingArguments, TrainingError

STEPS = 5  # per epoch: 40 examples in batches of 8


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_splits(tmp_path_factory.mktemp("tok"))


class Scripted:
    """An evaluation that reports ``scores[k]`` as ``name`` at the k-th epoch's end (k from the trainer's
    history, so a resumed trainer goes on with the script), and keeps each epoch's classifier weights."""

    def __init__(self, name, scores):
        self.name, self.scores, self.weights, self.trainer = name, scores, {}, None

    def __call__(self, model, loader):
        epoch = sum("eval_examples" in h for h in self.trainer.history)
        self.weights[epoch + 1] = model.classifier.weight.numpy().copy()
        return {"loss": 1.0, self.name: self.scores[epoch], "examples": 20} if self.name != "loss" else {
            "loss": self.scores[epoch], "examples": 20}


def trainer(toy, out, script, **options):
    tokenizer, train, dev = toy
    args = TrainingArguments(output_dir=str(out), epochs=len(script.scores), batch_size=8, lr=2e-3, progress=False,
                             **options)
    script.trainer = Trainer(tiny_model(0), args, train, dev, tokenizer, evaluate_fn=script)
    return script.trainer


def saved_classifier(out):
    return safetensors_io.read_safetensors(out / "model.safetensors")[0]["classifier.weight"]


def checkpoint_classifier(out):
    return safetensors_io.read_safetensors(out / CHECKPOINT_NAME)[0]["model.classifier.weight"]


def test_early_stopping_keeps_the_best_epoch_and_checkpoints_the_last(toy, tmp_path):
    script = Scripted("accuracy", [0.5, 0.8, 0.7, 0.6, 0.9])  # best: epoch 2; patience 2 stops after epoch 4
    run = trainer(toy, tmp_path, script, metric_for_best_model="accuracy", early_stopping_patience=2)
    history = run.train()
    assert run.stopped_early and run.finished and run.step == 4 * STEPS
    assert (run.best_metric, run.best_step) == (0.8, 2 * STEPS)
    assert [h["eval_accuracy"] for h in history if "eval_accuracy" in h] == [0.5, 0.8, 0.7, 0.6]
    np.testing.assert_array_equal(saved_classifier(tmp_path), script.weights[2])  # --out: the best model
    np.testing.assert_array_equal(checkpoint_classifier(tmp_path), script.weights[4])  # the last state
    assert not np.array_equal(script.weights[2], script.weights[4])
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert (state["best_metric"], state["best_global_step"], state["stopped_early"]) == (0.8, 10, True)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log == json.loads(json.dumps(history)) and len(log) == 4 * STEPS + 4


def test_lower_is_better_for_a_loss_and_no_patience_runs_every_epoch(toy, tmp_path):
    script = Scripted("loss", [0.9, 0.7, 0.4, 0.6])
    run = trainer(toy, tmp_path, script)
    run.train()
    assert not run.stopped_early and run.step == 4 * STEPS and run.best_step == 3 * STEPS
    np.testing.assert_array_equal(saved_classifier(tmp_path), script.weights[3])
    told = Scripted("error_rate", [0.3, 0.2, 0.25])
    run = trainer(toy, tmp_path / "told", told, metric_for_best_model="error_rate", greater_is_better=False)
    run.train()
    assert run.best_step == 2 * STEPS


def test_a_resumed_run_selects_and_stops_as_the_uninterrupted_one(toy, tmp_path):
    scores = [0.5, 0.8, 0.7, 0.6, 0.9]
    options = dict(metric_for_best_model="accuracy", early_stopping_patience=2)
    straight = trainer(toy, tmp_path / "straight", Scripted("accuracy", scores), **options)
    straight.train()
    first = Scripted("accuracy", scores)
    trainer(toy, tmp_path / "resumed", first, **options).train(stop_after=int(2.5 * STEPS))  # inside epoch 3
    assert saved_classifier(tmp_path / "resumed").tolist() == first.weights[2].tolist()
    second = Scripted("accuracy", scores)
    resumed = trainer(toy, tmp_path / "resumed", second, **options)
    resumed.train(resume=True)
    assert (resumed.step, resumed.best_step, resumed.stopped_early) == (straight.step, straight.best_step, True)
    assert resumed.history == straight.history
    for name in ("model.safetensors", CHECKPOINT_NAME):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    assert (tmp_path / "resumed" / "log.jsonl").read_text() == (tmp_path / "straight" / "log.jsonl").read_text()
    again = trainer(toy, tmp_path / "resumed", Scripted("accuracy", scores), **options)
    again.train(resume=True)  # a run that stopped early stays stopped
    assert again.step == straight.step


def test_an_unknown_metric_names_the_ones_there_are(toy, tmp_path):
    run = trainer(toy, tmp_path, Scripted("accuracy", [0.5]), metric_for_best_model="f1")
    with pytest.raises(TrainingError, match=r"metric_for_best_model='f1' is not a metric of this evaluation; "
                                            r"it has loss, accuracy"):
        run.train()


def test_the_default_evaluation_and_class_weights(toy, tmp_path):
    tokenizer, train, dev = toy
    args = TrainingArguments(output_dir=str(tmp_path), epochs=1, batch_size=8, lr=2e-3, progress=False,
                             metric_for_best_model="macro_f1", class_weights=[1.0, 3.0])
    run = Trainer(tiny_model(0), args, train, dev, tokenizer)
    assert run.model.class_weights == [1.0, 3.0]
    evaluation = run.train()[-1]
    assert {"eval_accuracy", "eval_macro_f1", "eval_f1", "eval_matthews_correlation", "eval_confusion_matrix",
            "eval_per_class"} <= set(evaluation)
    assert np.sum(evaluation["eval_confusion_matrix"]) == 20 and run.best_metric == evaluation["eval_macro_f1"]
    with pytest.raises(ValueError, match="class_weights has 3 weights, the model 2 classes"):
        Trainer(tiny_model(0), TrainingArguments(output_dir=str(tmp_path), class_weights=[1, 2, 3]), train)
    with pytest.raises(ValueError, match="class_weights must be >= 0 and not all 0"):
        TrainingArguments(output_dir=str(tmp_path), class_weights=[0, 0])
