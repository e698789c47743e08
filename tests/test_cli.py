"""The command line on a tiny model: finetune, resume, predict, eval, and its refusals."""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, optional
from finetune_helpers import tiny_model, tiny_model_folder, tiny_tokenizer, toy_texts
from minillm.cli import main


def write_tsv(path, texts, labels):
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny pretrained-style model folder (config, weights, tokenizer) and a GLUE-style data folder."""
    folder = tiny_model_folder(tmp_path_factory.mktemp("tiny-model"))
    data = tmp_path_factory.mktemp("glue")
    write_tsv(data / "train.tsv", *toy_texts(48, seed=1))
    write_tsv(data / "dev.tsv", *toy_texts(16, seed=2))
    return folder, data


def finetune(base, out, *extra):
    folder, data = base
    return main(["finetune", "--model", str(folder), "--data", str(data), "--out", str(out), "--epochs", "2",
                 "--batch-size", "8", "--lr", "2e-3", "--seed", "1", "--no-progress", *extra])


def losses(out):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


def test_finetune_then_predict_and_eval(base, tmp_path, capsys):
    out = tmp_path / "out"
    assert finetune(base, out) == 0
    said = capsys.readouterr()
    assert "saved the best model (loss " in said.out and "epoch 2: eval loss" in said.err
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= {p.name for p in out.iterdir()}
    assert len(losses(out)) == 12

    assert main(["predict", "--model", str(out), "a good movie", "the plot was dull"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith("a good movie")
    p = [float(x.split("=")[1]) for x in lines[0].split() if x.startswith("p(")]
    assert len(p) == 2 and sum(p) == pytest.approx(1, abs=1e-3)

    assert main(["eval", "--model", str(out), "--data", str(base[1] / "dev.tsv")]) == 0
    assert capsys.readouterr().out.startswith("accuracy ")


def test_stop_and_resume_gives_the_same_losses(base, tmp_path):
    assert finetune(base, tmp_path / "straight") == 0
    assert finetune(base, tmp_path / "resumed", "--stop-after", "4") == 0
    assert not (tmp_path / "resumed" / "config.json").exists()
    assert finetune(base, tmp_path / "resumed", "--resume") == 0
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")


def test_refuses_a_used_output_folder_unless_told(base, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert finetune(base, out) == 1
    assert "exists and is not empty: pass --overwrite" in capsys.readouterr().err
    assert finetune(base, out, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite writes over files, it deletes nothing else
    assert finetune(base, out, "--overwrite", "--resume") == 1
    assert "pass one of them" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert finetune(base, tmp_path / "file") == 1
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("problem, message", [
    ("resume", "cannot resume: .*checkpoint.safetensors does not exist"),
    ("no data", "no such file or folder"),
    ("no train.tsv", "the folder has no train.tsv, train.csv or train.jsonl"),
    ("bad label", r"train.tsv:3: label '7' is not one of the classes 0..1"),
    ("bad model", "neither a model folder nor a known model name"),
    ("max length", "--max-length must be at least 2"),
    ("max length beyond positions", "--max-length 100 is more than the model's 24 position embeddings"),
    ("batch size 0", "batch_size must be a positive integer, got 0"),
    ("NaN learning rate", "lr must be >= 0, got nan"),
    ("negative learning rate", "lr must be >= 0, got -0.1"),
    ("empty training file", r"train.tsv: empty file"),
    ("config does not fit its weights", r"config.json does not fit the weights:\n.*'embeddings.word_embeddings."
                                        r"weight' \(30, 16\), but .*model.safetensors has \(28, 16\)"),
    ("vocabulary larger than the embedding table", "the tokenizer has ids up to 29 but .*config.json's vocab_size=28"),
    ("a special token beyond the embedding table", "the tokenizer has ids up to 40 but .*config.json's vocab_size=28"),
    ("out not writable", r"--out .*/file/out cannot be written \(Not a directory\)"),
])
def test_bad_input_gives_one_clear_line(base, tmp_path, capsys, problem, message):
    folder, data = base
    args = ["finetune", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "out"), "--no-progress"]
    if problem == "resume":
        args.append("--resume")
    elif problem == "no data":
        args[4] = str(tmp_path / "missing")
    elif problem == "no train.tsv":
        args[4] = str(tmp_path)
    elif problem == "bad label":
        args[4] = str(write_tsv(tmp_path / "train.tsv", ["good", "bad"], [1, 7]))
        args += ["--num-labels", "2"]  # else the classes are inferred: 0..7
    elif problem == "bad model":
        args[2] = str(tmp_path / "no-such-model")
    elif problem == "max length":
        args += ["--max-length", "1"]
    elif problem == "max length beyond positions":
        args += ["--max-length", "100"]
    elif problem == "batch size 0":
        args += ["--batch-size", "0"]
    elif problem.endswith("learning rate"):
        args += ["--lr", "nan" if problem.startswith("NaN") else "-0.1"]
    elif problem == "empty training file":
        (tmp_path / "train.tsv").write_text("")
        args[4] = str(tmp_path / "train.tsv")
    elif problem in ("config does not fit its weights", "vocabulary larger than the embedding table",
                     "a special token beyond the embedding table"):
        args[2] = str(edited_copy(folder, tmp_path / "model", problem))
    elif problem == "out not writable":
        (tmp_path / "file").write_text("x")
        args[6] = str(tmp_path / "file" / "out")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "minillm finetune: error: " in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1

    assert re.search(message, err), err


def edited_copy(folder, copy, problem):
    """The tiny model folder with config.json's vocab_size 2 too large (weights that do not fit it),
    a tokenizer.json that is not JSON, two more tokens in its tokenizer than its embedding table
    has rows, or a [CLS] that tokenizer.json's post-processor inserts as id 40, past the table (the
    fuzz target found it: the vocabulary alone said 27)."""
    shutil.copytree(folder, copy)
    if problem.startswith("config"):
        config = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] + 2}))
    elif problem.startswith("broken"):
        (copy / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    elif problem.startswith("a special token"):
        pipeline = json.loads((copy / "tokenizer.json").read_text())
        pipeline["post_processor"]["special_tokens"]["[CLS]"]["ids"] = [40]
        (copy / "tokenizer.json").write_text(json.dumps(pipeline))
    else:
        (copy / "tokenizer.json").unlink()
        (copy / "vocab.txt").write_text((copy / "vocab.txt").read_text() + "extra\nwords\n")
    return copy


# every command that loads a model (--model), with the rest of a command line that would run
READS_A_MODEL = {
    "finetune": ["--data", "{data}", "--out", "{tmp}/out", "--no-progress"],
    "eval": ["--data", "{data}/dev.tsv"],
    "predict": ["a good movie"],
    "explain": ["a good movie"],
    "inspect": ["a good movie"],
    "embed": ["{corpus}", "--out", "{tmp}/vectors.npy"],
    "search": ["--corpus", "{corpus}", "a good movie"],
    "train-embeddings": ["--data", "{corpus}", "--out", "{tmp}/encoder", "--no-progress"],
    "pretrain": ["--files", "{corpus}", "--out", "{tmp}/mlm", "--no-progress"],
    "fill-mask": ["the film was [MASK] ."],
}


@pytest.mark.parametrize("problem", ["broken tokenizer.json", "vocabulary larger than the embedding table"])
@pytest.mark.parametrize("command", list(READS_A_MODEL))
def test_every_command_reads_the_tokenizer_before_the_weights(base, tmp_path, capsys, command, problem):
    """A model folder whose tokenizer is broken and whose model.safetensors is garbage: every command
    fails on the tokenizer, naming its file, as it could not if it had read the weights first
    (PreTrainedModel.tokenizer_and_config; inspect, explain, embed, search, train-embeddings,
    pretrain and fill-mask read the weights first before)."""
    folder, data = base
    model = edited_copy(folder, tmp_path / "model", problem)
    (model / "model.safetensors").write_bytes(b"garbage, not a safetensors file\n" * 100)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a good movie\ta great film\nthe plot was dull\tthe story was boring\n")
    rest = [arg.format(data=data, tmp=tmp_path, corpus=corpus) for arg in READS_A_MODEL[command]]
    assert main([command, "--model", str(model), *rest]) == 1
    err = capsys.readouterr().err
    said = f"{model}/tokenizer.json: " if problem.startswith("broken") else \
        f"{model}: the tokenizer has ids up to 29 but {model}/config.json's vocab_size=28 gives the embedding table"
    assert f"minillm {command}: error: {said}" in err, err
    assert "model.safetensors" not in err and "Traceback" not in err


def test_pretrain_checks_another_tokenizer_against_the_model_before_its_weights(base, tmp_path, capsys):
    """pretrain --model M --tokenizer T: T's ids against M's config.json, before M's weights."""
    folder, _ = base
    model = shutil.copytree(folder, tmp_path / "model")
    (model / "model.safetensors").write_bytes(b"garbage, not a safetensors file\n" * 100)
    larger = edited_copy(folder, tmp_path / "larger", "vocabulary")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a good movie\n" * 20)
    assert main(["pretrain", "--model", str(model), "--tokenizer", str(larger), "--files", str(corpus),
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"error: {larger}: the tokenizer has ids up to 29 but {model}/config.json's vocab_size=28" in err, err


def test_long_texts_are_truncated_and_said_once(base, tmp_path, capsys):
    folder, _ = base
    data = tmp_path / "data"
    data.mkdir()
    write_tsv(data / "train.tsv", ["good " * 40, "bad " * 40, "good movie"], [1, 0, 1])
    assert main(["finetune", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "out"),
                 "--no-progress", "--max-length", "24", "--batch-size", "3"]) == 0
    err = capsys.readouterr().err
    assert err.count("were truncated") == 1 and "train.tsv: 2 of 3 texts are longer than max_length=24" in err


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "minillm", "--version"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and done.stdout.startswith("minillm ")


def test_output_folder_loads_in_transformers(base, tmp_path, transformers, torch):
    out = tmp_path / "out"
    assert finetune(base, out) == 0
    from minillm.models.bert import BertForSequenceClassification
    from minillm.tokenizer import BertTokenizer
    ours = BertForSequenceClassification.from_pretrained(out)
    texts = ["a good movie", "the plot was very dull ."]
    batch = BertTokenizer.from_pretrained(out)(texts)
    expected = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits.numpy()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_explain_prints_the_words_and_keeps_a_page_and_a_chart(base, tmp_path, capsys):
    folder, _ = base
    page, chart = tmp_path / "why.html", tmp_path / "why.png"
    assert main(["explain", "--model", str(folder), "--steps", "8", "--html", str(page), "a good movie"]) == 0
    out = capsys.readouterr().out
    assert "\033[" not in out  # not a terminal: plain text
    assert out.startswith("prediction: ") and "integrated gradients of the logit" in out
    total = float(re.search(r"sum of attributions ([-+][0-9.]+)", out).group(1))
    words = re.findall(r"^  (\S+) +([-+][0-9.]+)$", out, re.M)
    assert [w for w, _ in words] == ["[CLS]", "a", "good", "movie", "[SEP]"]
    assert sum(float(v) for _, v in words) == pytest.approx(total, abs=3e-4)
    assert page.read_text().startswith("<!DOCTYPE html>") and ">good</span>" in page.read_text()
    optional("matplotlib", "plot")
    assert main(["explain", "--model", str(folder), "--method", "rollout", "--plot", str(chart), "a good movie"]) == 0
    assert chart.read_bytes().startswith(b"\x89PNG") and "attention rollout" in capsys.readouterr().out


def test_explain_refuses_a_model_without_a_classifier(base, tmp_path, capsys):
    folder, _ = base
    bare = tmp_path / "bare"
    tiny_model(0).bert.save_pretrained(bare)
    tiny_tokenizer(tmp_path).save_pretrained(bare)
    assert main(["explain", "--model", str(bare), "a good movie"]) == 1
    assert "is not a classifier" in capsys.readouterr().err


def test_embed_search_and_train_embeddings(base, tmp_path, capsys):
    folder, _ = base
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a good movie\nthe plot was very dull .\nthe acting was charming\n")
    assert main(["embed", "--model", str(folder), str(corpus), "--out", str(tmp_path / "v.npy")]) == 0
    vectors = np.load(tmp_path / "v.npy")
    assert vectors.shape == (3, 16) and vectors.dtype == np.float32 and "wrote 3 embeddings" in capsys.readouterr().out
    query = ["search", "--model", str(folder), "--corpus", str(corpus), "--top-k", "2", "a good movie"]
    assert main(query) == 0
    first = capsys.readouterr()
    assert "embeddings computed" in first.err and "1. 1.0000  line 1: a good movie" in first.out
    assert main(query) == 0
    second = capsys.readouterr()
    assert "from the cache" in second.err and second.out == first.out
    (tmp_path / "pairs.tsv").write_text("a good movie\ta great film\nthe plot was dull\tthe story was boring\n")
    out = tmp_path / "encoder"
    assert main(["train-embeddings", "--model", str(folder), "--data", str(tmp_path / "pairs.tsv"), "--out", str(out),
                 "--batch-size", "2", "--no-progress"]) == 0
    assert (out / "modules.json").is_file() and (out / "1_Pooling" / "config.json").is_file()
    assert main(["search", "--model", str(out), "--corpus", str(corpus), "a good movie"]) == 0
    assert "embeddings computed" in capsys.readouterr().err  # another model: the cache is not reused
    assert main(["search", "--model", str(folder), "--corpus", str(corpus), "--top-k", "0", "x"]) == 1
    assert "--top-k must be at least 1" in capsys.readouterr().err
