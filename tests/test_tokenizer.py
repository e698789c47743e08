"""BertTokenizer: hand-checked ids on a tiny vocabulary, and the same ids as transformers'
BertTokenizerFast on awkward texts, from tokenizer.json and from vocab.txt."""
import json
import re
import shutil

import numpy as np
import pytest

from minillm.safetensors_io import CheckpointError
from minillm.tokenizer import BertTokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello", "world", "!", ",", "ca", "##fé", "##fe",
         "café", "北", "京", "play", "##ing", ".", "?"]
AWKWARD = ["Héllo, Wörld!!! Ça va? naïve café résumé Ångström", "北京欢迎你 東京 서울 ｆｕｌｌｗｉｄｔｈ",
           "emoji 🤗🎉👍🏽 and ZWJ 👨‍👩‍👧", "...!!!???---;;;", "", "   \t\n  ", "unaffable playing played",
           "control\x00chars\u200b and\u00a0nbsp", "word " * 300, "Mixed CASE and numbers 12,345.67"]
PAIRS = ["the second text", "", "a b c " * 200, "?", "北京", "x", "y", "   ", "z", "pair " * 20]
SHORT = ["x", "y z", "", "?!", "é", "北", "a", "b c", "d", "e"]
CALLS = [dict(), dict(max_length=16), dict(padding="max_length", max_length=24), dict(truncation=False)]


@pytest.fixture
def tiny_folder(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return tmp_path


def _settings(folder, **settings):
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


def test_ids_by_hand(tiny_folder):
    tok = BertTokenizer.from_pretrained(_settings(tiny_folder, do_lower_case=False))
    batch = tok(["Hello café playing!", "hello"], ["world", "?"])
    assert batch["input_ids"].tolist() == [[2, 5, 13, 16, 17, 8, 3, 7, 3], [2, 6, 3, 19, 3, 0, 0, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 9, [1] * 5 + [0] * 4]
    assert all(a.dtype == np.int64 for a in batch.values())
    assert tok.tokenize("Hello playing") == ["Hello", "play", "##ing"]
    assert tok.decode(batch["input_ids"][1]) == "hello?"


def test_normalization_settings(tiny_folder):
    uncased = BertTokenizer.from_pretrained(_settings(tiny_folder, do_lower_case=True))
    assert uncased.tokenize("HELLO Café") == ["hello", "ca", "##fe"]  # lower-casing strips accents too
    cased_stripped = BertTokenizer.from_pretrained(_settings(tiny_folder, do_lower_case=False, strip_accents=True))
    assert cased_stripped.tokenize("Hello café") == ["Hello", "ca", "##fe"]
    no_cjk = BertTokenizer.from_pretrained(_settings(tiny_folder, tokenize_chinese_chars=False))
    assert no_cjk.tokenize("北京") == ["[UNK]"] and uncased.tokenize("北京") == ["北", "京"]


def test_truncation_and_padding(tiny_folder):
    tok = BertTokenizer.from_pretrained(tiny_folder)
    long = " ".join(["hello"] * 50)
    assert tok([long], max_length=6)["input_ids"].tolist() == [[2, 6, 6, 6, 6, 3]]
    assert tok(["hello"], padding="max_length", max_length=5)["input_ids"].tolist() == [[2, 6, 3, 0, 0]]
    assert tok("hello world")["input_ids"].shape == (1, 4)  # one text is a batch of one
    assert tok([long], truncation=False)["input_ids"].shape == (1, 52)  # no model_max_length: no limit


def test_errors_name_the_argument(tiny_folder):
    tok = BertTokenizer.from_pretrained(tiny_folder)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got int"):
        tok(["a", 3])
    with pytest.raises(ValueError, match="text_pair has 1 texts but texts has 2"):
        tok(["a", "b"], ["c"])
    with pytest.raises(ValueError, match=r"different lengths \[3, 4\] and padding=False"):
        tok(["hello", "hello world"], padding=False)
    with pytest.raises(ValueError, match="padding='left'"):
        tok(["a"], padding="left")
    with pytest.raises(ValueError, match="Second sequence not provided"):
        tok(["hello world"], truncation="only_second", max_length=3)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or vocab.txt"):
        BertTokenizer.from_pretrained((tiny_folder / "vocab.txt").unlink() or tiny_folder)


def _assert_same(ours, theirs, texts, pairs=None, **kwargs):
    got = ours(texts, pairs, **kwargs)
    expected = theirs(texts, pairs, padding=kwargs.get("padding", True), truncation=kwargs.get("truncation", True),
                      max_length=kwargs.get("max_length"), return_tensors="np")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{key} {kwargs}")


def test_a_megabyte_is_truncated_alone_and_in_a_pair(tiny_folder):
    """The tokenizers library truncates a pair by pairing every overflowing piece of one text with
    every piece of the other: a pair of 20 KB texts took 6 GB and 15 s, a megabyte would never end.
    Each text is cut first to what truncation can keep of it (BertTokenizer._cut_pairs)."""
    tok = BertTokenizer.from_pretrained(tiny_folder)
    text, short = "hello world playing " * 50_000, "hello world playing " * 3  # a megabyte, and its start
    assert tok([text], max_length=8)["input_ids"].tolist() == [[2, 6, 7, 16, 17, 6, 7, 3]]
    assert tok([text], [text], max_length=8)["input_ids"].tolist() == tok([short], [short], max_length=8)["input_ids"].tolist()


def test_a_lone_surrogate_is_an_error_naming_the_text(tiny_folder):
    """The Rust side said only "TextEncodeInput must be Union[...]" (what the fuzzing met)."""
    tok = BertTokenizer.from_pretrained(tiny_folder)
    with pytest.raises(ValueError, match=r"text_pair\[1\] is not valid Unicode: '\\udc80' at character 2"):
        tok(["a", "b"], ["c", "ab\udc80"])


@pytest.mark.parametrize("first, second, max_length", [
    ("hello " * 40, "world " * 3, 12), ("hello " * 3, "x " * 50, 9), ("hello world " * 30, "playing " * 30, 16),
    ("hello " * 30, "world " * 30, 7), ("hello " * 31, "world " * 30, 7), ("hello " * 30, "world " * 6, 9),
    ("a", "b", 4)])  # equal lengths, one longer, one within the limit: longest-first splits each otherwise
def test_cut_pairs_truncate_as_the_library_does(tiny_folder, first, second, max_length):
    """The cut changes no token: the same ids as the tokenizers library's own truncation of the whole pair."""
    tok = BertTokenizer.from_pretrained(tiny_folder)
    ours = tok([first, second], [second, first], max_length=max_length)["input_ids"].tolist()
    tok._tokenizer.enable_truncation(max_length, strategy="longest_first")
    tok._tokenizer.enable_padding(pad_id=tok.pad_token_id)
    assert ours == [e.ids for e in tok._tokenizer.encode_batch([(first, second), (second, first)])]


def test_a_pipeline_that_loads_but_panics_at_its_first_encode_is_an_error_naming_the_file(tiny_folder):
    """The post-processor's template names [SEP], its special-token map holds it under another key:
    the tokenizers library reads the file and panics (a PanicException) at the first encode."""
    pipeline = json.loads(BertTokenizer.from_pretrained(tiny_folder)._tokenizer.to_str())
    specials = pipeline["post_processor"]["special_tokens"]
    specials["[SGP]"] = specials.pop("[SEP]")
    (tiny_folder / "tokenizer.json").write_text(json.dumps(pipeline))
    (tiny_folder / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match=re.escape(str(tiny_folder / "tokenizer.json")) +
                       r": the tokenizers library cannot read it \(.*no entry found for key"):
        BertTokenizer.from_pretrained(tiny_folder)


@pytest.mark.parametrize("name, content, message", [  # what the fuzzing found: each raised a bare Exception or TypeError
    ("tokenizer.json", "{not json", r"tokenizer.json: the tokenizers library cannot read it \(key must be a string"),
    ("vocab.txt", b"[PAD]\n\xff\xfe\n", r"vocab.txt: the tokenizers library cannot read it \(.*stream did not contain valid UTF-8"),
    ("tokenizer_config.json", json.dumps({"do_lower_case": "yes"}), r"tokenizer_config.json: do_lower_case='yes'"),
    ("tokenizer_config.json", json.dumps({"unk_token": 5}), r"tokenizer_config.json: unk_token=5 is not supported"),
    ("tokenizer_config.json", "[" * 100_000, r"tokenizer_config.json: not valid JSON \(maximum recursion"),
    ("tokenizer_config.json", b"\xff{}", r"tokenizer_config.json: not valid JSON"),
    ("special_tokens_map.json", "[1, 2]", r"special_tokens_map.json: expected a JSON object, got list"),
    ("tokenizer_config.json", json.dumps({"unk_token": "[NOPE]"}), r"vocab.txt: unk_token '\[NOPE\]' is not in"),
])
def test_broken_tokenizer_files_are_errors_naming_the_file(tiny_folder, name, content, message):
    (tiny_folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    if name == "tokenizer.json":
        (tiny_folder / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match=re.escape(str(tiny_folder)) + ".*" + message):
        BertTokenizer.from_pretrained(tiny_folder)


@pytest.mark.parametrize("kwargs", CALLS)
def test_minilm_tokenizer_matches_transformers(minilm_dir, transformers, kwargs):
    ours, theirs = BertTokenizer.from_pretrained(minilm_dir), transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    _assert_same(ours, theirs, AWKWARD, **kwargs)
    if kwargs.get("truncation") is not False:  # (a pair of long texts without truncation is too long for HF)
        _assert_same(ours, theirs, AWKWARD, PAIRS, **kwargs)


def test_pair_truncation_strategies_match_transformers(minilm_dir, transformers):
    ours, theirs = BertTokenizer.from_pretrained(minilm_dir), transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    _assert_same(ours, theirs, AWKWARD, SHORT, max_length=20, truncation="only_first")
    _assert_same(ours, theirs, SHORT, AWKWARD, max_length=20, truncation="only_second")


def test_vocab_txt_tokenizer_matches_transformers(minilm_dir, transformers, tmp_path):
    """Without tokenizer.json, the pipeline is built from vocab.txt + tokenizer_config.json."""
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(f"{minilm_dir}/{name}", tmp_path / name)
    ours, theirs = BertTokenizer.from_pretrained(tmp_path), transformers.BertTokenizerFast.from_pretrained(tmp_path)
    _assert_same(ours, theirs, AWKWARD, PAIRS, max_length=32)


@pytest.mark.parametrize("settings", [dict(do_lower_case=False), dict(do_lower_case=False, strip_accents=True),
                                      dict(do_lower_case=True, tokenize_chinese_chars=False)])
def test_settings_match_transformers(tiny_folder, transformers, settings):
    _settings(tiny_folder, **settings)
    ours = BertTokenizer.from_pretrained(tiny_folder)
    theirs = transformers.BertTokenizerFast.from_pretrained(tiny_folder)
    texts = ["Hello café 北京 playing!", "hello CAFÉ, world.", "HeLLo?"]
    _assert_same(ours, theirs, texts, ["world", "", "café café"])


def test_save_pretrained_loads_back_in_both(minilm_dir, transformers, tmp_path):
    ours = BertTokenizer.from_pretrained(minilm_dir)
    ours(AWKWARD, max_length=8)  # the last call's settings must not leak into the saved file
    ours.save_pretrained(tmp_path)
    expected = ours(AWKWARD, PAIRS)
    for again in (BertTokenizer.from_pretrained(tmp_path), transformers.BertTokenizerFast.from_pretrained(tmp_path)):
        got = again(AWKWARD, PAIRS, padding=True, truncation=True)
        np.testing.assert_array_equal(np.asarray(got["input_ids"]), expected["input_ids"])
    with open(f"{minilm_dir}/vocab.txt", encoding="utf-8") as f:
        assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines() == f.read().splitlines()


def test_max_id_counts_the_ids_the_post_processor_inserts(tiny_folder):
    """tokenizer.json keeps its post-processor's special-token ids apart from the vocabulary, so a
    [CLS] inserted as 40 by a 28-token vocabulary gives ids up to 40 (the model_files fuzz target
    found such a file accepted, then its id past the embedding table): TemplateProcessing,
    BertProcessing and a Sequence of processors."""
    from tokenizers import processors

    tokenizer = BertTokenizer.from_pretrained(tiny_folder)
    vocabulary_max = tokenizer.max_id
    assert vocabulary_max == max(tokenizer._tokenizer.get_vocab(with_added_tokens=True).values())
    template = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 40), ("[SEP]", 3)])
    sequence = processors.Sequence([processors.ByteLevel(), processors.BertProcessing(("[SEP]", 40), ("[CLS]", 2))])
    for processor in (template, processors.BertProcessing(("[SEP]", 3), ("[CLS]", 40)), sequence):
        tokenizer._tokenizer.post_processor = processor
        assert tokenizer.max_id == 40 > vocabulary_max
        assert tokenizer("a")["input_ids"].max() == 40  # what it said it could give, it gives
