"""The data pipeline: tokenized datasets (texts, pairs, float labels), batches, and the loader's order.
The readers and labels are tests/test_readers.py's."""
import logging

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from finetune_helpers import tiny_tokenizer, toy_texts
from minillm.data import DataLoader, Dataset, TextClassificationDataset, default_collate, pad_batch


# ---- tokenized datasets ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_dataset_matches_the_tokenizer_and_truncates_once(tokenizer, caplog):
    texts, labels = toy_texts(50, seed=0, max_words=14)
    with caplog.at_level(logging.WARNING, logger="minillm"):
        data = TextClassificationDataset(tokenizer, texts, labels, max_length=8, name="toy.tsv")
    expected = tokenizer(texts, padding=True, truncation=True, max_length=8)
    for i in range(len(texts)):
        n = expected["attention_mask"][i].sum()
        np.testing.assert_array_equal(data[i]["input_ids"], expected["input_ids"][i, :n])
        assert data[i]["labels"] == labels[i] and data.lengths[i] == n <= 8
    long = sum(len(tokenizer.tokenize(t)) + 2 > 8 for t in texts)
    assert long > 0 and data.truncated == long
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"toy.tsv: {long} of 50 texts are longer than max_length=8 tokens and were truncated to it"]
    assert data[int(np.argmax(data.lengths))]["input_ids"][-1] == tokenizer._tokenizer.token_to_id("[SEP]")


def test_dataset_checks_its_arguments(tokenizer):
    with pytest.raises(ValueError, match="toy: 2 texts but 1 labels"):
        TextClassificationDataset(tokenizer, ["a", "b"], [1], name="toy")
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        TextClassificationDataset(tokenizer, ["a"], [1], max_length=1)


# ---- batches -----------------------------------------------------------------------------------

def test_pad_batch_pads_to_the_longest():
    examples = [{"input_ids": np.array([2, 7, 3]), "token_type_ids": np.array([0, 0, 0]), "labels": 1},
                {"input_ids": np.array([2, 3]), "token_type_ids": np.array([0, 1]), "labels": 0}]
    batch = pad_batch(examples, pad_token_id=9)
    np.testing.assert_array_equal(batch["input_ids"], [[2, 7, 3], [2, 3, 9]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1], [1, 1, 0]])
    np.testing.assert_array_equal(batch["token_type_ids"], [[0, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(batch["labels"], [1, 0])
    assert all(v.dtype == np.int64 for v in batch.values())


def test_default_collate_stacks_fields():
    batch = default_collate([{"x": np.ones(2), "y": 1}, {"x": np.zeros(2), "y": 0}])
    assert batch["x"].shape == (2, 2) and batch["y"].tolist() == [1, 0]
    assert default_collate([(1, 2.0), (3, 4.0)])[0].tolist() == [1, 3]


class Lengths(Dataset):
    """Items are their own indices; lengths are given."""

    def __init__(self, lengths):
        self.lengths = np.asarray(lengths)

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        return i


@given(n=st.integers(1, 300), batch_size=st.integers(1, 40), drop_last=st.booleans(), shuffle=st.booleans(),
       bucket=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_every_pass_is_a_partition_into_batches(n, batch_size, drop_last, shuffle, bucket, seed):
    data = Lengths(np.random.default_rng(seed).integers(2, 60, n))
    loader = DataLoader(data, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, bucket=bucket)
    batches = [b.tolist() for b in loader]
    assert len(batches) == len(loader)
    assert all(len(b) == batch_size for b in batches[:-1] if not bucket or drop_last)
    sizes = sorted(len(b) for b in batches)
    assert sizes == sorted([batch_size] * (n // batch_size) + ([] if drop_last or n % batch_size == 0
                                                                else [n % batch_size]))
    seen = sorted(i for b in batches for i in b)
    assert len(set(seen)) == len(seen)  # no example twice
    if not drop_last:
        assert seen == list(range(n))
    if not shuffle and not bucket:
        assert seen == [i for b in batches for i in b]  # in order


def test_shuffle_is_seeded_per_epoch():
    loader = DataLoader(Lengths(np.ones(100)), 10, shuffle=True, seed=42)
    first, second = [b.tolist() for b in loader], [b.tolist() for b in loader]
    assert first != second  # a new order each pass
    again = DataLoader(Lengths(np.ones(100)), 10, shuffle=True, seed=42)
    assert [b.tolist() for b in again] == first  # the same seed, the same batches
    again.set_epoch(1)
    assert [b.tolist() for b in again] == second
    assert [b.tolist() for b in DataLoader(Lengths(np.ones(100)), 10, shuffle=True, seed=43)] != first


def test_bucketing_groups_similar_lengths():
    lengths = np.random.default_rng(0).integers(3, 60, 2000)
    plain = DataLoader(Lengths(lengths), 16, shuffle=True, seed=1)
    bucketed = DataLoader(Lengths(lengths), 16, shuffle=True, seed=1, bucket=True)
    width = lambda loader: np.mean([lengths[b].max() for b in loader.batches(0)])  # noqa: E731
    assert width(bucketed) < 0.6 * width(plain)
    assert bucketed.batches(0)[0].tolist() != bucketed.batches(1)[0].tolist()


def test_loader_arguments_are_checked():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        DataLoader(Lengths([1]), 0)
    with pytest.raises(ValueError, match="bucket=True needs a dataset with a `lengths`"):
        DataLoader([1, 2], 1, bucket=True)
    with pytest.raises(ValueError, match="the dataset is empty"):
        DataLoader([], 1)


def test_pairs_are_encoded_as_transformers_encodes_them(minilm_dir, transformers):
    """[CLS] a [SEP] b [SEP], token types 1 on b; pairs too long cut longest-first, as BertTokenizerFast
    cuts them (the dataset tokenizes whole, then re-tokenizes only the long pairs with truncation)."""
    from minillm.tokenizer import BertTokenizer
    rng = np.random.default_rng(0)
    words = "the premise of a story is not its hypothesis , but it entails something . Héllo wörld".split()
    texts, pairs = ([" ".join(rng.choice(words, rng.integers(1, 40))) for _ in range(60)] for _ in range(2))
    theirs = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    ours = BertTokenizer.from_pretrained(minilm_dir)
    for max_length in (512, 32, 9):
        data = TextClassificationDataset(ours, texts, np.zeros(60, np.int64), max_length, text_pairs=pairs)
        expected = theirs(texts, pairs, truncation="longest_first", max_length=max_length)
        for i in range(60):
            assert data[i]["input_ids"].tolist() == expected["input_ids"][i]
            assert data[i]["token_type_ids"].tolist() == expected["token_type_ids"][i]
        assert (data.truncated > 0) == (max_length < 512)


def test_float_labels_keep_their_dtype_through_the_batches(tokenizer):
    scores = TextClassificationDataset(tokenizer, ["good", "bad movie"], [0.5, 4.25])
    several = TextClassificationDataset(tokenizer, ["good", "bad movie"], np.eye(2, 3))
    assert pad_batch([scores[0], scores[1]])["labels"].tolist() == [0.5, 4.25]
    batch = pad_batch([several[0], several[1]])
    assert batch["labels"].dtype == np.float32 and batch["labels"].shape == (2, 3)
    assert pad_batch([scores[0]])["labels"].dtype == np.float32
    ids = TextClassificationDataset(tokenizer, ["good"], [1])
    assert pad_batch([ids[0]])["labels"].dtype == np.int64
    with pytest.raises(ValueError, match="toy: 2 texts but 1 second texts of pairs"):
        TextClassificationDataset(tokenizer, ["a", "b"], [1, 0], text_pairs=["c"], name="toy")
