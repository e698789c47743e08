"""minillm inspect: the report on the real MiniLM, the attention heatmaps, the command line."""
import io
import math
import re
import struct
import sys

import numpy as np
import pytest

from minillm import inspect

SENTENCE = "The movie was not good at all."
TOKENS = ["[CLS]", "the", "movie", "was", "not", "good", "at", "all", ".", "[SEP]"]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    model, tokenizer = inspect.load(minilm_dir)
    return model, tokenizer, inspect.run(model, tokenizer, SENTENCE, name="MiniLM")


def _entropy_lines(text):
    return [[float(e) for e in re.findall(r"h\d+=([0-9.]+)", line)] for line in text.splitlines()
            if line.strip().startswith("entropy")]


def test_report_shows_tokens_layers_and_entropies(minilm):
    model, tokenizer, ins = minilm
    assert type(model).__name__ == "BertModel" and ins.probabilities is None
    assert ins.tokens == TOKENS
    assert ins.ids.tolist() == tokenizer([SENTENCE])["input_ids"][0].tolist()
    text = inspect.report(ins)
    assert "tokens (L=10): [CLS](101) the(1996) movie(3185)" in text
    layer_lines = re.findall(r"^(embeddings|layer \d+) +hidden \(1, 10, 384\) +mean ([-+][0-9.]+) +std ([0-9.]+) "
                             r"+max\|h\| ([0-9.]+)$", text, re.M)
    assert [name for name, *_ in layer_lines] == ["embeddings"] + [f"layer {n}" for n in range(1, 7)]
    for (_, mean, std, top), h in zip(layer_lines, ins.hidden_states):  # the printed statistics are h's
        assert float(mean) == pytest.approx(h.mean(), abs=1e-4)
        assert float(std) == pytest.approx(h.std(), abs=1e-4)
        assert float(top) == pytest.approx(np.abs(h).max(), abs=1e-3)
    entropies = _entropy_lines(text)
    assert len(entropies) == 6 and all(len(row) == 12 for row in entropies)
    assert all(0 <= e <= math.log(10) + 0.005 for row in entropies for e in row)
    assert len(re.findall(r"strongest links: \S+ -> \S+ \(h\d+\) [0-9.]+", text)) == 6


def test_attention_rows_are_queries(minilm):
    """Layer 1, head 2 of MiniLM reads the previous token: the argmax of each word's row is its left
    neighbour. Transposed probabilities (columns as queries) would fail this."""
    *_, ins = minilm
    p = ins.attentions[0][2]
    assert np.allclose(p.sum(-1), 1, atol=1e-5)
    assert p[2:9].argmax(-1).tolist() == list(range(1, 8))
    links = inspect.strongest_links(ins.attentions[0], ins.tokens, top=3)
    assert {(ins.tokens[i], ins.tokens[j]) for _, _, i, j in links} <= {(TOKENS[n], TOKENS[n - 1]) for n in range(2, 9)}


def test_entropy_bounds_and_links():
    uniform, one_hot = np.full((1, 4, 4), 0.25), np.eye(4)[None]
    assert inspect.entropy(uniform) == pytest.approx([math.log(4)])
    assert inspect.entropy(one_hot) == pytest.approx([0.0])
    tokens = ["[CLS]", "a", "b", "[SEP]"]
    p = np.zeros((2, 4, 4))
    p[:, :, 0] = 1.0                    # everything parked on [CLS] ...
    p[1, 1] = [0.1, 0.2, 0.6, 0.1]      # ... but in head 1 "a" reads "b" at 0.6 (and itself at 0.2)
    p[0, 2] = [0.7, 0.3, 0.0, 0.0]      # and in head 0 "b" reads "a" at 0.3
    assert inspect.strongest_links(p, tokens, top=5) == [(0.6, 1, 1, 2), (0.3, 0, 2, 1)]
    assert inspect.special_share(p, tokens) == pytest.approx((3.7 + 3.2) / 8)


def test_plot_writes_a_png_grid(minilm, matplotlib, tmp_path):
    *_, ins = minilm
    path = tmp_path / "attn.png"
    inspect.plot(ins, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 1000 <= width <= 4000 and 500 <= height <= 2500 and width > height  # 12 heads across, 6 layers down
    assert len(data) > 50_000  # 72 heatmaps and their labels, not an empty canvas


def test_main_prints_and_plots(minilm_dir, matplotlib, tmp_path):
    out = io.StringIO()
    assert inspect.main(minilm_dir, "Good film.", tmp_path / "a.png", top=2, out=out) == 0
    text = out.getvalue()
    assert "tokens (L=5): [CLS](101) good(2204) film(2143) .(1012) [SEP](102)" in text
    assert "wrote the attention heatmaps (6 layers x 12 heads)" in text
    assert (tmp_path / "a.png").stat().st_size > 10_000


def test_plot_without_matplotlib_says_which_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert inspect.main("no-such-model", "x", tmp_path / "a.png") == 1  # refused before loading anything
    assert "pip install 'minillm[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()


def test_a_classifier_folder_shows_its_prediction(minilm, tmp_path):
    from minillm import manual_seed
    from minillm.models.bert import BertConfig, BertForSequenceClassification

    _, tokenizer, _ = minilm
    manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32, type_vocab_size=2,
                        id2label={0: "negative", 1: "positive"})
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, _ = inspect.load(tmp_path)
    assert isinstance(model, BertForSequenceClassification)
    ins = inspect.run(model, tokenizer, SENTENCE)
    assert set(ins.probabilities) == {"negative", "positive"}
    assert sum(ins.probabilities.values()) == pytest.approx(1)
    logits = model(tokenizer([SENTENCE])["input_ids"]).logits.numpy()[0]
    assert (ins.probabilities["positive"] > 0.5) == (logits[1] > logits[0])
    assert re.search(r"prediction: p\(negative\)=0\.\d{4}  p\(positive\)=0\.\d{4}", inspect.report(ins))
    assert len(ins.attentions) == 2 and ins.attentions[0].shape == (2, 10, 10)


def test_the_command_line(minilm_dir, matplotlib, tmp_path, capsys):
    from minillm.cli import main

    assert main(["inspect", "--model", str(minilm_dir), "--top", "1", "--plot", str(tmp_path / "attn.png"),
                 "Not bad."]) == 0
    text = capsys.readouterr().out
    assert "tokens (L=5): [CLS](101) not(2025) bad(2919) .(1012) [SEP](102)" in text
    assert len(re.findall(r"strongest links: \S+ -> \S+ \(h\d+\) [0-9.]+$", text, re.M)) == 6  # --top 1: one each
    assert (tmp_path / "attn.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["inspect", "--model", str(tmp_path / "nowhere"), "x"]) == 1
    assert "minillm inspect: error:" in capsys.readouterr().err
