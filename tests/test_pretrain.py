"""``minillm pretrain`` and ``fill-mask`` on a tiny BERT: the held-out masked-LM loss falls, a stopped
and resumed run is bit-identical to an uninterrupted one, the output folder loads in transformers as
BertForMaskedLM, and the evaluation's metrics are what they say (minillm/training/evaluate_mlm.py)."""
import json
import math

import numpy as np
import pytest

from minillm.cli import main
from minillm.data import DataLoader
from minillm.data.language_modeling import DataCollatorForLanguageModeling
from minillm.data.text_corpus import LineByLineTextDataset
from minillm.models import BertForMaskedLM, BertForPreTraining
from minillm.safetensors_io import read_safetensors
from minillm.tokenizer import BertTokenizer
from minillm.training.evaluate_mlm import evaluate_mlm
from minillm.training.pretraining import pretraining_config

SUBJECTS = ["the film", "this movie", "the story", "the cast", "a comedy"]
VERBS = ["was", "is", "seemed", "felt"]
ADJECTIVES = ["good", "bad", "dull", "great", "fun", "long"]
CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
              max_position_embeddings=64, type_vocab_size=2, vocab_size=1)  # vocab_size: the tokenizer's


def sentences(n, seed):
    rng = np.random.default_rng(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} very {rng.choice(ADJECTIVES)} ." for _ in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A text file of templated sentences, its vocabulary (minillm train-tokenizer: whole words, as
    200 entries allow) and a config.json."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "train.txt").write_text("\n".join(sentences(240, 0)) + "\n")
    (folder / "dev.txt").write_text("\n".join(sentences(40, 1)) + "\n")
    assert main(["train-tokenizer", "--files", str(folder / "train.txt"), "--vocab-size", "200",
                 "--out", str(folder / "vocab"), "--min-frequency", "1"]) == 0
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder


def pretrain(corpus, out, *extra):
    return main(["pretrain", "--config", str(corpus / "config.json"), "--tokenizer", str(corpus / "vocab"),
                 "--files", str(corpus / "train.txt"), "--validation-files", str(corpus / "dev.txt"),
                 "--out", str(out), "--max-length", "16", "--epochs", "3", "--batch-size", "8", "--lr", "1e-2",
                 "--seed", "3", "--no-progress", *extra])


def history(out):
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def test_the_held_out_masked_lm_loss_falls(corpus, tmp_path, capsys):
    out = tmp_path / "bert"
    assert pretrain(corpus, out) == 0
    said = capsys.readouterr()
    assert "saved the best model (loss " in said.out and "epoch 3: eval loss" in said.err
    evals = [h for h in history(out) if "eval_loss" in h]
    assert len(evals) == 3
    vocab = len(BertTokenizer.from_pretrained(corpus / "vocab"))
    assert evals[0]["eval_loss"] < math.log(vocab)  # better than a uniform guess
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 0.2
    assert evals[-1]["eval_accuracy"] > 10 / vocab  # far above chance
    for e in evals:
        assert e["eval_perplexity"] == pytest.approx(math.exp(e["eval_loss"]), rel=1e-9)
    assert all(e["eval_examples"] == evals[0]["eval_examples"] for e in evals)  # the same held-out masks


def test_stop_and_resume_is_bit_identical(corpus, tmp_path):
    assert pretrain(corpus, tmp_path / "straight", "--line-by-line", "--whole-word-mask") == 0
    assert pretrain(corpus, tmp_path / "resumed", "--line-by-line", "--whole-word-mask", "--stop-after", "7") == 0
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    assert pretrain(corpus, tmp_path / "resumed", "--line-by-line", "--whole-word-mask", "--resume") == 0
    assert history(tmp_path / "resumed") == history(tmp_path / "straight")
    straight, _ = read_safetensors(tmp_path / "straight" / "model.safetensors")
    resumed, _ = read_safetensors(tmp_path / "resumed" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)


def test_the_result_loads_in_transformers_and_fills_masks(corpus, tmp_path, capsys, transformers, torch):
    out = tmp_path / "bert"
    assert pretrain(corpus, out, "--epochs", "1") == 0
    theirs = transformers.BertForMaskedLM.from_pretrained(out, output_loading_info=True)
    model, info = theirs
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    ours = BertForMaskedLM.from_pretrained(out)
    tokenizer = BertTokenizer.from_pretrained(out)
    batch = tokenizer(["the film was very [MASK] ."])
    model.eval()
    with torch.no_grad():
        expected = model(**{k: torch.tensor(v) for k, v in batch.items()}).logits.numpy()
    np.testing.assert_allclose(ours.eval()(**batch).logits.numpy(), expected, atol=1e-4)
    capsys.readouterr()
    assert main(["fill-mask", "--model", str(out), "--top-k", "3", "the film was very [MASK] ."]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "the film was very [MASK] ." and len(lines) == 4
    scores = [float(line.split()[2]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001


def test_next_sentence_pretraining_reports_both_heads(corpus, tmp_path, capsys):
    text = corpus / "documents.txt"  # documents of three sentences, separated by blank lines
    text.write_text("\n\n".join("\n".join(sentences(3, seed)) for seed in range(60)) + "\n")
    out = tmp_path / "nsp"
    assert main(["pretrain", "--config", str(corpus / "config.json"), "--tokenizer", str(corpus / "vocab"),
                 "--files", str(text), "--out", str(out), "--max-length", "32", "--nsp", "--epochs", "1",
                 "--validation-split-percentage", "20", "--no-progress"]) == 0
    assert "nsp_accuracy" in capsys.readouterr().err
    assert set(BertForPreTraining.from_pretrained(out).state_dict()) >= {"cls.seq_relationship.weight"}


def test_evaluate_mlm_counts_masked_tokens_and_scores_them(corpus):
    tokenizer = BertTokenizer.from_pretrained(corpus / "vocab")
    model = BertForMaskedLM(pretraining_config(corpus / "config.json", tokenizer))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)
    held_out = collator.fixed_masks(LineByLineTextDataset(tokenizer, sentences(30, 2), 16), seed=1)
    metrics = evaluate_mlm(model, DataLoader(held_out, 7, collate_fn=collator))
    full = collator([held_out[i] for i in range(len(held_out))])  # one batch, the full (B, L, V) logits
    logits = model.eval()(**{k: v for k, v in full.items() if k != "labels"}).logits.numpy()
    picked = full["labels"] != -100
    rows, targets = logits[picked].astype(np.float64), full["labels"][picked]
    log_p = rows - rows.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    assert metrics["examples"] == picked.sum()
    assert metrics["loss"] == pytest.approx(-log_p[np.arange(len(targets)), targets].mean(), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx((rows.argmax(-1) == targets).mean())


def test_refusals_say_what_is_wrong(corpus, tmp_path, capsys):
    assert main(["pretrain", "--config", "mini", "--files", str(corpus / "train.txt"), "--out",
                 str(tmp_path / "a")]) == 1
    assert "needs --tokenizer" in capsys.readouterr().err
    assert main(["pretrain", "--config", "huge", "--tokenizer", str(corpus / "vocab"), "--files",
                 str(corpus / "train.txt"), "--out", str(tmp_path / "b")]) == 1
    assert "unknown model size 'huge'" in capsys.readouterr().err
    assert main(["fill-mask", "--model", str(corpus / "vocab"), "no blank here"]) == 1


def test_continued_pretraining_starts_from_a_checkpoint_and_its_tokenizer(minilm_dir, tmp_path, capsys):
    text = tmp_path / "domain.txt"
    text.write_text("\n".join(sentences(24, 5)) + "\n")
    out = tmp_path / "minilm-domain"
    assert main(["pretrain", "--model", str(minilm_dir), "--files", str(text), "--out", str(out), "--max-length",
                 "16", "--batch-size", "8", "--validation-split-percentage", "25", "--no-progress"]) == 0
    said = capsys.readouterr().err
    assert "epoch 1: eval loss" in said and "newly initialized" in said  # the bare encoder's new MLM head
    before = BertForMaskedLM.from_pretrained(minilm_dir).state_dict()
    after = BertForMaskedLM.from_pretrained(out).state_dict()
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not np.array_equal(before[name], after[name])  # trained, from the checkpoint's weights:
    assert np.abs(after[name] - before[name]).max() < 0.01  # a few steps at lr 1e-4 move them little
    assert BertTokenizer.from_pretrained(out).vocab_size == BertTokenizer.from_pretrained(minilm_dir).vocab_size
