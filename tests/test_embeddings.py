"""Sentence embeddings on a tiny model: pooling, normalization, encode's order and batching,
max_seq_length, the folder layout, the contrastive loss through the Trainer, and search's cache.
(Parity with sentence-transformers itself: test_embeddings_parity.py.)"""
import json

import numpy as np
import pytest

import minillm as mm
from finetune_helpers import POSITIVE, NEGATIVE, NEUTRAL, TINY, tiny_tokenizer
from minillm.embeddings import (MultipleNegativesRankingLoss, PairDataset, Pooling, SentenceEncoder, corpus_embeddings,
                                normalize, semantic_search)
from minillm.embeddings.search import CACHE_SUFFIX
from minillm.models.bert import BertConfig, BertModel
from minillm.testing import gradcheck
from minillm.training import Trainer, TrainingArguments

WORDS = POSITIVE + NEGATIVE + NEUTRAL


def tiny_encoder(tmp_path, modes=("mean",), normalize=True, dropout=0.0, seed=0):
    mm.manual_seed(seed)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        **TINY)
    return SentenceEncoder(BertModel(config), tiny_tokenizer(tmp_path), Pooling(TINY["hidden_size"], modes), normalize)


def texts(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(0, 12))) for _ in range(n)]


def test_pooling_modes_are_the_formulas_over_the_real_tokens():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    noisy = np.where(mask[:, :, None] == 1, h, 1e6).astype(np.float32)  # padding must not count
    pooled = Pooling(4, ("mean", "max", "cls", "mean_sqrt_len_tokens"))(mm.tensor(noisy), mask).numpy()
    n = mask.sum(1, keepdims=True)
    total = (h * mask[:, :, None]).sum(1)
    expected_max = np.stack([h[i, :n[i, 0]].max(0) for i in range(3)])
    expected = np.concatenate([h[:, 0], expected_max, total / n, total / np.sqrt(n)], axis=1)  # MODES' order
    np.testing.assert_allclose(pooled, expected, rtol=1e-6, atol=1e-6)


def test_pooling_and_normalize_gradients():
    rng = np.random.default_rng(1)
    h, mask = rng.normal(size=(2, 4, 3)), np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    for modes in (("mean",), ("max",), ("cls",), ("mean_sqrt_len_tokens",)):
        assert gradcheck(lambda x: Pooling(3, modes)(x, mask), [h])
    assert gradcheck(normalize, [rng.normal(size=(3, 5))])
    np.testing.assert_allclose(np.linalg.norm(normalize(mm.tensor(rng.normal(size=(3, 5)))).numpy(), axis=1), 1)


def test_encode_is_input_order_whatever_the_batches(tmp_path):
    encoder = tiny_encoder(tmp_path, dropout=0.1)
    encoder.train()
    sentences = texts(9) + [""]
    one_by_one = np.stack([encoder.encode(s) for s in sentences])            # (E,) each
    batched = encoder.encode(sentences, batch_size=4)
    assert batched.shape == (10, TINY["hidden_size"]) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, one_by_one, atol=2e-6)              # eval mode: no dropout
    assert encoder.training                                                  # and put back
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1, rtol=1e-6)
    raw = tiny_encoder(tmp_path, normalize=False).encode(sentences)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1)
    np.testing.assert_allclose(tiny_encoder(tmp_path, normalize=False).encode(sentences, normalize_embeddings=True),
                               batched, atol=2e-6)


def test_max_seq_length_cuts_long_texts(tmp_path):
    encoder = tiny_encoder(tmp_path)
    encoder.max_seq_length = 6                                              # [CLS] + 4 words + [SEP]
    words = "good film is very dull and the plot was flat".split()
    assert encoder.tokenize([" ".join(words)])["input_ids"].shape == (1, 6)
    np.testing.assert_allclose(encoder.encode(" ".join(words)), encoder.encode(" ".join(words[:4])), atol=1e-6)


def test_bad_inputs_name_the_argument(tmp_path):
    encoder = tiny_encoder(tmp_path)
    with pytest.raises(TypeError, match=r"sentences\[1\]"):
        encoder.encode(["fine", 3])
    with pytest.raises(ValueError, match="batch_size"):
        encoder.encode(["fine"], batch_size=0)


@pytest.mark.parametrize("modes, normalized", [(("mean",), True), (("cls", "max"), False)])
def test_a_saved_folder_loads_back(tmp_path, modes, normalized):
    encoder = tiny_encoder(tmp_path, modes, normalized)
    encoder.max_seq_length = 12
    encoder.save_pretrained(tmp_path / "out")
    modules = json.loads((tmp_path / "out" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling"] + ["Normalize"] * normalized
    assert (tmp_path / "out" / "2_Normalize").is_dir() == normalized
    assert json.loads((tmp_path / "out" / "sentence_bert_config.json").read_text())["max_seq_length"] == 12
    loaded = SentenceEncoder.from_pretrained(tmp_path / "out")
    assert loaded.pooling.modes == encoder.pooling.modes and loaded.max_seq_length == 12
    sentences = texts(5)
    np.testing.assert_allclose(loaded.encode(sentences), encoder.encode(sentences), atol=1e-6)


def test_a_plain_hugging_face_folder_gets_mean_pooling(tmp_path):
    encoder = tiny_encoder(tmp_path)
    encoder.bert.save_pretrained(tmp_path / "hf")
    encoder.tokenizer.save_pretrained(tmp_path / "hf")
    loaded = SentenceEncoder.from_pretrained(tmp_path / "hf")
    assert loaded.pooling.modes == ("mean",) and loaded.normalize is None
    assert loaded.max_seq_length == TINY["max_position_embeddings"]
    np.testing.assert_allclose(normalize(mm.tensor(loaded.encode(texts(3)))).numpy(), encoder.encode(texts(3)),
                               atol=1e-6)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.joinpath("modules.json").write_text(json.dumps(
        [{"path": "", "type": "sentence_transformers.models.Transformer"},
         {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
         {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}])), r"modules.json: modules .*Dense"),
    (lambda d: d.joinpath("1_Pooling", "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 16, "pooling_mode_lasttoken": True})), r"config.json: pooling .*lasttoken"),
    (lambda d: d.joinpath("1_Pooling", "config.json").write_text("{"), r"1_Pooling/config.json: not valid JSON"),
    (lambda d: d.joinpath("1_Pooling", "config.json").write_text("[]"), r"1_Pooling/config.json: expected a JSON"),
    (lambda d: d.joinpath("1_Pooling", "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})),
     r"config.json: word_embedding_dimension=32 but the model's hidden_size is 16"),
    (lambda d: d.joinpath("tokenizer.json").write_text("{"), r"out/tokenizer.json: "),
    (lambda d: d.joinpath("config.json").write_text(d.joinpath("config.json").read_text().replace(
        f'"vocab_size": {5 + len(WORDS)}', '"vocab_size": 20')), r"the tokenizer has ids up to 27 but .*vocab_size=20"),
])
def test_unsupported_folders_are_refused_by_name(tmp_path, change, message):
    """... before the weights are read: the tokenizer and config.json, then the modules' files (the
    weights here are garbage, which would be the error if they were read first)."""
    tiny_encoder(tmp_path).save_pretrained(tmp_path / "out")
    change(tmp_path / "out")
    (tmp_path / "out" / "model.safetensors").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match=message):
        SentenceEncoder.from_pretrained(tmp_path / "out")


def test_the_loss_is_cross_entropy_of_scaled_cosines_against_the_diagonal(tmp_path):
    encoder = tiny_encoder(tmp_path)
    pairs = PairDataset(encoder, texts(4, seed=1), texts(4, seed=2))
    batch = pairs.collate([pairs[i] for i in range(4)])
    out = MultipleNegativesRankingLoss(encoder, scale=20.0)(**batch)
    a = encoder(**batch["anchor"]).numpy().astype(np.float64)
    p = encoder(**batch["positive"]).numpy().astype(np.float64)
    scores = 20 * (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (p / np.linalg.norm(p, axis=1, keepdims=True)).T
    expected = np.mean(np.log(np.exp(scores).sum(1)) - np.diag(scores))
    np.testing.assert_allclose(out.scores.numpy(), scores, rtol=1e-5, atol=1e-5)
    assert abs(out.loss.item() - expected) < 1e-5


def test_training_through_the_trainer_lowers_the_loss_and_saves_a_folder(tmp_path):
    encoder = tiny_encoder(tmp_path, dropout=0.1)
    rng = np.random.default_rng(3)
    anchors = [" ".join(rng.choice(WORDS, 4)) for _ in range(16)]
    positives = [" ".join(reversed(a.split())) for a in anchors]             # a pair: the same words, reversed
    (tmp_path / "pairs.tsv").write_text("anchor\tpositive\n" + "".join(f"{a}\t{p}\n" for a, p in zip(anchors, positives)))
    pairs = PairDataset.from_tsv(encoder, tmp_path / "pairs.tsv")
    assert len(pairs) == 16
    model = MultipleNegativesRankingLoss(encoder)
    before = model(**pairs.collate([pairs[i] for i in range(16)])).loss.item()
    args = TrainingArguments(output_dir=str(tmp_path / "run"), epochs=6, batch_size=8, lr=3e-3, progress=False)
    history = Trainer(model, args, pairs, data_collator=pairs.collate).train()
    encoder.eval()
    after = model(**pairs.collate([pairs[i] for i in range(16)])).loss.item()
    assert len([h for h in history if "loss" in h]) == 12 and after < before - 0.2, (before, after)
    loaded = SentenceEncoder.from_pretrained(tmp_path / "run")
    np.testing.assert_allclose(loaded.encode(anchors), encoder.encode(anchors), atol=1e-6)


def test_a_bad_pairs_file_names_the_line(tmp_path):
    (tmp_path / "pairs.tsv").write_text("good film\ta good film\nonly one field\n")
    with pytest.raises(ValueError, match=r"pairs.tsv:2: expected anchor<TAB>positive"):
        PairDataset.from_tsv(tiny_encoder(tmp_path), tmp_path / "pairs.tsv")


def test_search_ranks_by_cosine_and_caches_the_corpus(tmp_path):
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("\n".join(texts(6)) + "\n")
    encoder = tiny_encoder(tmp_path)
    encoder.save_pretrained(tmp_path / "model")
    lines, vectors, cached = corpus_embeddings(encoder, tmp_path / "model", str(corpus_file))
    assert not cached and len(lines) == 6 and (tmp_path / ("corpus.txt" + CACHE_SUFFIX)).is_file()
    again, from_cache, cached = corpus_embeddings(encoder, tmp_path / "model", str(corpus_file))
    assert cached and np.array_equal(from_cache, vectors)
    corpus_file.write_text("\n".join(texts(7)) + "\n")                     # an edited corpus: embedded anew
    lines, vectors, cached = corpus_embeddings(encoder, tmp_path / "model", str(corpus_file))
    assert not cached and len(vectors) == 7
    hits = semantic_search(vectors[[4, 1]], vectors, top_k=3)
    assert [h[0]["corpus_id"] for h in hits] == [4, 1] and abs(hits[0][0]["score"] - 1) < 1e-5
    assert all(h[0]["score"] >= h[1]["score"] >= h[2]["score"] for h in hits)
