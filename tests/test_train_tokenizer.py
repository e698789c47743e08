"""A WordPiece vocabulary of your own (minillm/tokenizer_training.py, ``minillm train-tokenizer``): the
folder it writes loads in minillm and in transformers' BertTokenizerFast with the same ids, on
awkward text (accents, CJK, emoji, punctuation, control characters, empty, long, pairs)."""
import json

import pytest

from minillm.cli import main
from minillm.tokenizer import BertTokenizer
from minillm.tokenizer_training import train_wordpiece

CORPUS = [
    "The film was great, wasn't it? I loved the acting!",
    "Café au lait, naïve façade, résumé: Ærøskøbing and Straße.",
    "日本語のテキストと中文的句子，还有한국어 문장.",
    "Emoji everywhere 😀🎉👍🏽 and symbols ©®™ № ½ ±.",
    "Numbers 3.14159, 1,000,000 and 42nd street; e-mail me@example.com.",
    "A boring, dull, lifeless movie... truly unbelievably bad!!!",
    "Tabs\tand   spaces, and a zero\u200bwidth space, and soft\u00adhyphens.",
    "ALL CAPS SHOUTING and MiXeD CaSe words",
] * 20
AWKWARD = [
    "", " ", "Héllo Wörld! CAFÉ", "日本語 中文 한국어", "😀🎉👍🏽 emoji", "...!!??;:--", "don't stop-me now",
    "\x00control\x07chars\t\u200b", "unseen xylophonic zygomorphism", "word " * 300, "Straße ß ẞ ﬁ ligature",
    "a [MASK] token and [CLS] in text",
]


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def trained(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocab")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    tokenizer = train_wordpiece([corpus], vocab_size=300, lowercase=request.param, min_frequency=1)
    tokenizer.save_pretrained(folder)
    return folder, request.param


def test_minillm_and_transformers_give_the_same_ids(trained, transformers):
    folder, _ = trained
    ours = BertTokenizer.from_pretrained(folder)
    theirs = transformers.BertTokenizerFast.from_pretrained(folder)
    for text in AWKWARD:
        got = ours([text], truncation=False)
        expected = theirs(text)
        n = int(got["attention_mask"].sum())
        assert got["input_ids"][0, :n].tolist() == expected["input_ids"], text
        assert got["token_type_ids"][0, :n].tolist() == expected["token_type_ids"], text
    pair = ours(["Café au lait", "日本語"], ["😀 ok", "emoji 😀"])
    expected = theirs(["Café au lait", "日本語"], ["😀 ok", "emoji 😀"], padding=True)
    assert pair["input_ids"].tolist() == expected["input_ids"]
    assert pair["token_type_ids"].tolist() == expected["token_type_ids"]


def test_the_vocabulary_is_bert_shaped(trained):
    folder, lowercase = trained
    tokens = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(tokens) <= 300 and len(set(tokens)) == len(tokens)
    assert any(t.startswith("##") for t in tokens)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is lowercase
    tokenizer = BertTokenizer.from_pretrained(folder)
    pieces = tokenizer.tokenize("The FILM")
    assert pieces[0] == ("the" if lowercase else "The")
    assert "[UNK]" not in tokenizer.tokenize("café Straße 中文 😀")  # every character seen is in the alphabet


def test_the_command_writes_a_folder_both_libraries_load(tmp_path, capsys, transformers):
    corpus = tmp_path / "a.txt"
    corpus.write_text("\n".join(CORPUS[:8]), encoding="utf-8")
    more = tmp_path / "b.txt"
    more.write_text("another file of text, with words of its own\n" * 5, encoding="utf-8")
    out = tmp_path / "vocab"
    assert main(["train-tokenizer", "--files", str(corpus), str(more), "--vocab-size", "200", "--out", str(out),
                 "--cased", "--min-frequency", "1"]) == 0
    assert "cased WordPiece vocabulary of" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"tokenizer.json", "vocab.txt", "tokenizer_config.json",
                                              "special_tokens_map.json"}
    text = "Another FILE of Café text"
    assert (BertTokenizer.from_pretrained(out)([text])["input_ids"][0].tolist()
            == transformers.BertTokenizerFast.from_pretrained(out)(text)["input_ids"])
    assert main(["train-tokenizer", "--files", str(corpus), "--out", str(out)]) == 1  # not empty: refused
    assert "--overwrite" in capsys.readouterr().err


def test_bad_requests_are_refused(tmp_path, capsys):
    assert main(["train-tokenizer", "--files", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 1
    assert "missing.txt: no such file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="vocab_size must leave room"):
        train_wordpiece([__file__], vocab_size=3)
