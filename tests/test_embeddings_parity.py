"""SentenceEncoder against sentence-transformers on all-MiniLM-L6-v2 (the oracle: the parity extra):
awkward texts, each pooling mode, a plain Hugging Face folder, the contrastive loss and its gradients,
and a folder saved by minillm loaded by sentence-transformers. Models are loaded from local folders
only (HF_HUB_OFFLINE=1), never by a hub name."""
import json
import os

import numpy as np
import pytest

from conftest import optional
from minillm.embeddings import MultipleNegativesRankingLoss, PairDataset, SentenceEncoder
from minillm.training import Trainer, TrainingArguments

AWKWARD = ["", "   ", "A man is eating food.", "word " * 400, "I love pizza 🍕🔥!!", "我喜欢北京的秋天。",
           "Crème brûlée, naïve café, Ångström, Øresund", "ALL CAPS AND\ttabs\nand newlines", "a"]


@pytest.fixture(scope="session")
def st(torch):
    os.environ["HF_HUB_OFFLINE"] = "1"  # local folders only
    return optional("sentence_transformers")


def their_loss(model, scale):
    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    return MultipleNegativesRankingLoss(model, scale=scale)


def load_st(st, folder):
    return st.SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def assert_same_embeddings(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() > 0.99999, cosine
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def variant(tmp_path, minilm_dir, pooling=None, sentence_transformers_files=True):
    """A folder of links to the model's files, with another 1_Pooling/config.json, or without the
    sentence-transformers files (a plain Hugging Face folder)."""
    folder = tmp_path / "variant"
    (folder / "1_Pooling").mkdir(parents=True)
    for name in os.listdir(minilm_dir):
        if os.path.isfile(os.path.join(minilm_dir, name)):
            if sentence_transformers_files or name not in ("modules.json", "sentence_bert_config.json",
                                                           "config_sentence_transformers.json"):
                (folder / name).symlink_to(os.path.join(minilm_dir, name))
    config = {"word_embedding_dimension": 384, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
              "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False, **(pooling or {})}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    return folder


def test_awkward_texts_match(st, minilm_dir):
    ours = SentenceEncoder.from_pretrained(minilm_dir)
    assert ours.max_seq_length == 256 and ours.normalize is not None
    assert_same_embeddings(ours.encode(AWKWARD, batch_size=4), load_st(st, minilm_dir).encode(AWKWARD, batch_size=4))


@pytest.mark.parametrize("pooling", [{"pooling_mode_cls_token": True}, {"pooling_mode_max_tokens": True},
                                     {"pooling_mode_mean_sqrt_len_tokens": True},
                                     {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True,
                                      "pooling_mode_max_tokens": True}])
def test_each_pooling_mode_matches(st, minilm_dir, tmp_path, pooling):
    folder = variant(tmp_path, minilm_dir, pooling)
    assert_same_embeddings(SentenceEncoder.from_pretrained(folder).encode(AWKWARD), load_st(st, folder).encode(AWKWARD))


def test_a_plain_hugging_face_folder_matches(st, minilm_dir, tmp_path):
    folder = variant(tmp_path, minilm_dir, sentence_transformers_files=False)
    ours = SentenceEncoder.from_pretrained(folder)
    assert ours.pooling.modes == ("mean",) and ours.normalize is None
    assert_same_embeddings(ours.encode(AWKWARD), load_st(st, folder).encode(AWKWARD))


def test_the_contrastive_loss_and_its_gradients_match(st, torch, minilm_dir):
    rng = np.random.default_rng(0)
    words = "the a film movie plot was good bad very dull charming cat dog runs sleeps under over 🍕 café 北京".split()
    anchors = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(6)]
    positives = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(6)]
    encoder = SentenceEncoder.from_pretrained(minilm_dir)          # eval mode: no dropout, as theirs below
    pairs = PairDataset(encoder, anchors, positives)
    out = MultipleNegativesRankingLoss(encoder, scale=20.0)(**pairs.collate([pairs[i] for i in range(6)]))
    out.loss.backward()

    model = load_st(st, minilm_dir).eval()
    loss = their_loss(model, scale=20.0)
    theirs = loss([model.preprocess(anchors), model.preprocess(positives)], None)
    theirs.backward()
    assert abs(out.loss.item() - theirs.item()) < 1e-5, (out.loss.item(), theirs.item())
    ours = dict(encoder.bert.named_parameters())
    theirs = {name: p.grad for name, p in model[0].auto_model.named_parameters()}
    assert [n for n, g in theirs.items() if g is None] == [n for n, p in ours.items() if p.grad is None] == \
        ["pooler.dense.weight", "pooler.dense.bias"]                # the pooler: no path to the loss
    largest = max(float(g.abs().max()) for g in theirs.values() if g is not None)
    for name, grad in theirs.items():
        if grad is not None:  # rounding noise on gradients that are 0 in exact arithmetic (the key bias): vs largest
            expected, got = grad.numpy(), ours[name].grad.numpy()
            error = np.abs(got - expected).max()
            assert error <= 1e-4 * np.abs(expected).max() + 1e-6 * largest, (name, error, np.abs(expected).max())


def test_a_folder_trained_by_minillm_loads_in_sentence_transformers(st, minilm_dir, tmp_path):
    encoder = SentenceEncoder.from_pretrained(minilm_dir)
    pairs = PairDataset(encoder, ["A man is eating food.", "A cat sits.", "It rains.", "Music plays."],
                        ["Someone eats.", "A kitten rests.", "The weather is wet.", "A song is on."])
    args = TrainingArguments(output_dir=str(tmp_path / "trained"), batch_size=2, lr=1e-4, warmup_ratio=0,
                             progress=False)
    Trainer(MultipleNegativesRankingLoss(encoder), args, pairs, data_collator=pairs.collate).train()
    before = SentenceEncoder.from_pretrained(minilm_dir).encode(AWKWARD)
    after = encoder.encode(AWKWARD)
    assert np.abs(after - before).max() > 1e-3                     # training changed the embeddings
    assert_same_embeddings(after, load_st(st, tmp_path / "trained").encode(AWKWARD))
