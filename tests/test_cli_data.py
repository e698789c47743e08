"""The command line on your own data: CSV with named labels (round-tripped through config.json and read
back by transformers' pipeline), JSON Lines pairs, regression, multi-label, class weights, the metrics
eval prints, log.jsonl and `minillm plot`."""
import json
import re

import numpy as np
import pytest

from finetune_helpers import tiny_model_folder, toy_texts
from minillm import safetensors_io
from minillm.cli import main

NAMES = {0: "negative", 1: "positive"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("tiny-encoder"), head=False)  # a head for any labels


def write_csv(path, texts, labels):
    import csv
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        writer.writerows(zip(texts, labels))
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def finetune(model, data, out, *extra):
    return main(["finetune", "--model", str(model), "--data", str(data), "--out", str(out), "--epochs", "2",
                 "--batch-size", "8", "--lr", "2e-3", "--seed", "1", "--no-progress", *extra])


@pytest.fixture(scope="module")
def named(model, tmp_path_factory):
    """A CSV folder with 'positive'/'negative' labels in the columns review, sentiment; and the run on it."""
    data = tmp_path_factory.mktemp("csv")
    for name, n, seed in (("train.csv", 48, 1), ("dev.csv", 16, 2)):
        texts, labels = toy_texts(n, seed=seed)
        write_csv(data / name, [t.replace(" a ", ', "a" ') for t in texts], [NAMES[y] for y in labels])
    out = tmp_path_factory.mktemp("run") / "out"
    assert finetune(model, data, out, "--text-column", "review", "--label-column", "sentiment",
                    "--metric", "accuracy") == 0
    return data, out


def test_named_labels_round_trip_through_config_json_and_transformers_pipeline(named, capsys, transformers):
    data, out = named
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["label2id"] == {"negative": 0,
                                                                                               "positive": 1}
    texts = ["a good movie", "the plot was dull", "charming and fun"]
    capsys.readouterr()
    assert main(["predict", "--model", str(out), *texts]) == 0
    ours = [line.split()[1].strip("()") for line in capsys.readouterr().out.strip().splitlines()]
    classify = transformers.pipeline("text-classification", model=str(out), tokenizer=str(out), device="cpu")
    assert [r["label"] for r in classify(texts)] == ours and set(ours) <= set(NAMES.values())


def test_eval_prints_the_metrics_per_class_and_the_confusion_matrix(named, capsys):
    data, out = named
    assert main(["eval", "--model", str(out), "--data", str(data / "dev.csv"), "--text-column", "review",
                 "--label-column", "sentiment"]) == 0
    printed = capsys.readouterr().out.splitlines()
    first = dict(re.findall(r"(\w+) (-?[0-9.]+)", printed[0]))
    assert {"accuracy", "loss", "macro_f1", "f1", "matthews_correlation"} <= set(first)
    assert printed[1].split() == ["class", "precision", "recall", "f1", "support"]
    assert printed[2].split()[0] == "negative" and printed[3].split()[0] == "positive"
    matrix = [[int(n) for n in line.split()[2:]] for line in printed[-2:]]
    assert np.sum(matrix) == 16 and printed[-2].split()[1] == "negative"
    state = json.loads((out / "trainer_state.json").read_text())
    best = [h for h in state["log_history"] if h.get("step") == state["best_global_step"] and "eval_accuracy" in h]
    assert best[0]["eval_accuracy"] == state["best_metric"] == max(
        h["eval_accuracy"] for h in state["log_history"] if "eval_accuracy" in h)


def test_log_jsonl_holds_every_step_and_evaluation_and_plot_draws_it(named, capsys, matplotlib):
    _, out = named
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert sum("loss" in r for r in log) == 12 and sum("eval_accuracy" in r for r in log) == 2
    assert main(["plot", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(out / "log.jsonl"), "--out", str(out / "curves.svg")]) == 0
    assert b"<svg" in (out / "curves.svg").read_bytes()[:500]
    (out / "broken.jsonl").write_text('{"step": 1, "loss": 0.7}\n{"step": 2, "loss"\n')
    assert main(["plot", str(out / "broken.jsonl")]) == 1
    assert "broken.jsonl:2: not valid JSON" in capsys.readouterr().err


def test_pairs_in_json_lines_and_an_unseen_dev_label(model, tmp_path, capsys):
    def rows(n, seed):
        texts, labels = toy_texts(n, seed=seed)
        return [{"premise": t, "hypothesis": t.split()[-1], "label": ["contradiction", "entailment"][y]}
                for t, y in zip(texts, labels)]

    data = tmp_path / "nli"
    data.mkdir()
    write_jsonl(data / "train.jsonl", rows(32, 1))
    write_jsonl(data / "dev.jsonl", rows(8, 2))
    out = tmp_path / "out"
    assert finetune(model, data, out, "--early-stopping-patience", "1") == 0
    said = capsys.readouterr()
    assert "on 32 pairs" in said.err and "saved the best model (loss" in said.out
    assert main(["predict", "--model", str(out), "--data", str(data / "dev.jsonl"), "--limit", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and " | " in lines[0] and lines[0].split()[1].strip("()") in ("contradiction", "entailment")
    write_jsonl(tmp_path / "odd.jsonl", rows(2, 3) + [{"premise": "a", "hypothesis": "b", "label": "neutral"}])
    assert main(["eval", "--model", str(out), "--data", str(tmp_path / "odd.jsonl")]) == 1
    assert "odd.jsonl:3: label 'neutral' is not one of the classes the model was trained on" in capsys.readouterr().err


def test_regression_on_scores(model, tmp_path, capsys):
    texts, labels = toy_texts(40, seed=1)
    scores = [f"{y * 4 + 0.25 * (i % 3):.2f}" for i, y in enumerate(labels)]
    (tmp_path / "train.tsv").write_text("text\tscore\n" + "".join(f"{t}\t{s}\n" for t, s in zip(texts, scores)))
    out = tmp_path / "out"
    assert finetune(model, tmp_path / "train.tsv", out, "--problem-type", "regression", "--label-column",
                    "score") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "regression" and len(config["id2label"]) == 1
    capsys.readouterr()
    assert main(["eval", "--model", str(out), "--data", str(tmp_path / "train.tsv"), "--label-column", "score"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("pearson ") and "spearmanr" in printed and "mse" in printed
    assert main(["predict", "--model", str(out), "good movie"]) == 0
    float(capsys.readouterr().out.split()[0])
    assert finetune(model, tmp_path / "train.tsv", tmp_path / "x", "--problem-type", "regression",
                    "--label-column", "score", "--class-weights", "balanced") == 1
    assert "--class-weights are for classification" in capsys.readouterr().err


def test_multi_label_rows(model, tmp_path, capsys):
    texts, labels = toy_texts(40, seed=1)
    rows = [{"text": t, "labels": (["positive"] if y else ["negative"]) + (["about film"] if "film" in t else [])}
            for t, y in zip(texts, labels)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "out"
    assert finetune(model, tmp_path / "train.jsonl", out, "--problem-type", "multi_label_classification") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "about film", "1": "negative", "2": "positive"}
    capsys.readouterr()
    assert main(["eval", "--model", str(out), "--data", str(tmp_path / "train.jsonl")]) == 0
    assert "micro_f1" in capsys.readouterr().out
    assert main(["predict", "--model", str(out), "a good film"]) == 0
    assert "p(about film)=" in capsys.readouterr().out


def test_class_weights(model, named, tmp_path, capsys, sklearn):
    data, _ = named
    columns = ["--text-column", "review", "--label-column", "sentiment"]
    out = tmp_path / "out"
    assert finetune(model, data / "train.csv", out, *columns, "--class-weights", "balanced", "--stop-after", "1") == 0
    recipe = json.loads(safetensors_io.read_safetensors(out / "checkpoint.safetensors")[1][
        "minillm_training_state"])["recipe"]
    from sklearn.utils.class_weight import compute_class_weight
    import csv
    with open(data / "train.csv", newline="") as f:
        y = [row["sentiment"] for row in csv.DictReader(f)]
    np.testing.assert_allclose(recipe["class_weights"], compute_class_weight("balanced", classes=np.array(
        ["negative", "positive"]), y=np.array(y)))
    assert finetune(model, data / "train.csv", tmp_path / "explicit", *columns, "--class-weights", "1,2.5",
                    "--stop-after", "1") == 0
    assert finetune(model, data / "train.csv", tmp_path / "bad", *columns, "--class-weights", "1,2,3") == 1
    assert "--class-weights 1,2,3: 3 weights for 2 classes (negative, positive)" in capsys.readouterr().err


def test_data_folders_of_each_format_and_their_refusals(model, tmp_path, capsys):
    texts, labels = toy_texts(16, seed=1)
    write_jsonl(tmp_path / "train.jsonl", [{"text": t, "label": y} for t, y in zip(texts, labels)])
    (tmp_path / "train.csv").write_text("text,label\nfine,1\n")
    assert finetune(model, tmp_path, tmp_path / "out") == 1
    assert "there are 2 train files" in capsys.readouterr().err
    (tmp_path / "train.csv").unlink()
    assert finetune(model, tmp_path, tmp_path / "out", "--epochs", "1") == 0
    assert "saved the fine-tuned model" in capsys.readouterr().out  # no dev file: the last model
    assert main(["predict", "--model", str(tmp_path / "out")]) == 1
    assert "give the texts to predict, or --data FILE" in capsys.readouterr().err
    assert finetune(model, tmp_path, tmp_path / "other", "--metric", "pearson") == 1
    assert ("--metric pearson: the evaluation of single_label_classification with 2 classes reports loss, accuracy, "
            "macro_f1, f1, matthews_correlation") in capsys.readouterr().err
