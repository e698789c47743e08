"""fill_mask against transformers' fill-mask pipeline (the oracle) on the same checkpoint: the same
tokens in the same order, the same probabilities, strings and nesting."""
import pathlib
import shutil

import pytest

from finetune_helpers import tiny_tokenizer
from minillm.fill_mask import fill_mask
from minillm.models.bert import BertForMaskedLM, BertForPreTraining
from minillm.tokenizer import BertTokenizer

SCORE_ATOL = 1e-5


def _random_mlm(transformers, torch, folder, vocab_size, seed=0):
    """A random transformers BertForMaskedLM, perturbed so that its guesses are far from uniform."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    model = transformers.BertForMaskedLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_folder(torch, transformers, tmp_path_factory):
    """The tests' tiny WordPiece vocabulary (finetune_helpers) and a random masked-LM over it."""
    folder = tmp_path_factory.mktemp("fill-mask-tiny")
    tok = tiny_tokenizer(folder)
    tok.save_pretrained(folder)
    _random_mlm(transformers, torch, folder, len(tok))
    return folder


@pytest.fixture(scope="module")
def minilm_vocab_folder(torch, transformers, minilm_dir, tmp_path_factory):
    """all-MiniLM-L6-v2's tokenizer (30522 tokens) and a random masked-LM over it (MiniLM's own
    checkpoint has no masked-LM head)."""
    folder = tmp_path_factory.mktemp("fill-mask-minilm")
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (pathlib.Path(minilm_dir) / name).is_file():
            shutil.copy(pathlib.Path(minilm_dir) / name, folder / name)
    _random_mlm(transformers, torch, folder, 30522, seed=1)
    return folder


def _assert_same(ours, theirs):
    """The same nesting, tokens, strings and sequences; scores within SCORE_ATOL."""
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs) == {"score", "token", "token_str", "sequence"}
        assert (ours["token"], ours["token_str"], ours["sequence"]) == \
            (theirs["token"], theirs["token_str"], theirs["sequence"])
        assert isinstance(ours["score"], float) and abs(ours["score"] - theirs["score"]) < SCORE_ATOL
        return
    assert isinstance(ours, list) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        _assert_same(a, b)


INPUTS = [
    "the film was [MASK] .",                                          # one text, one blank
    "a [MASK] movie and a [MASK] plot",                               # one text, two blanks
    ["the [MASK] is good", "very [MASK] acting and a dull [MASK] story ."],  # texts of different lengths
    ["only [MASK]"],                                                  # a list of one text
]


@pytest.mark.parametrize("inputs", INPUTS, ids=["one-mask", "two-masks", "two-texts", "list-of-one"])
@pytest.mark.parametrize("top_k", [1, 5])
def test_tiny_vocabulary_matches_the_pipeline(tiny_folder, transformers, inputs, top_k):
    pipe = transformers.pipeline("fill-mask", model=str(tiny_folder), tokenizer=str(tiny_folder))
    model, tok = BertForMaskedLM.from_pretrained(tiny_folder), BertTokenizer.from_pretrained(tiny_folder)
    _assert_same(fill_mask(model, tok, inputs, top_k=top_k), pipe(inputs, top_k=top_k))


@pytest.mark.parametrize("inputs", INPUTS[:3], ids=["one-mask", "two-masks", "two-texts"])
def test_minilm_vocabulary_matches_the_pipeline(minilm_vocab_folder, transformers, inputs):
    pipe = transformers.pipeline("fill-mask", model=str(minilm_vocab_folder), tokenizer=str(minilm_vocab_folder))
    model = BertForMaskedLM.from_pretrained(minilm_vocab_folder)
    tok = BertTokenizer.from_pretrained(minilm_vocab_folder)
    ours = fill_mask(model, tok, inputs, top_k=4)
    _assert_same(ours, pipe(inputs, top_k=4))
    first = ours[0] if isinstance(inputs, str) and inputs.count("[MASK]") == 1 else ours[0][0]
    assert first["score"] > 2 / 30522  # far from uniform: the comparison means something


def test_pretraining_model_and_the_mode(tiny_folder, transformers, torch, tmp_path):
    """BertForPreTraining's prediction head fills blanks as well; the model comes back in train mode."""
    model = BertForMaskedLM.from_pretrained(tiny_folder)
    model.save_pretrained(tmp_path)
    pre = BertForPreTraining.from_pretrained(tmp_path)  # the pooler and seq_relationship are new
    tok = BertTokenizer.from_pretrained(tiny_folder)
    pre.train()
    ours = fill_mask(pre, tok, "the film was [MASK] .")
    assert pre.training
    _assert_same(ours, fill_mask(model, tok, "the film was [MASK] ."))
    scores = [r["score"] for r in ours]
    assert scores == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-6


def test_bad_inputs_are_refused(tiny_folder):
    model, tok = BertForMaskedLM.from_pretrained(tiny_folder), BertTokenizer.from_pretrained(tiny_folder)
    with pytest.raises(ValueError, match=r"text 1 \('no blank here'\) has no \[MASK\]"):
        fill_mask(model, tok, ["a [MASK]", "no blank here"])
    with pytest.raises(ValueError, match="top_k must be in"):
        fill_mask(model, tok, "a [MASK]", top_k=0)
    with pytest.raises(ValueError, match="no texts"):
        fill_mask(model, tok, [])
