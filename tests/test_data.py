"""The data pipeline: the GLUE TSV reader's errors, tokenized datasets, and the loader's order."""
import logging

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from finetune_helpers import tiny_tokenizer, toy_texts
from minillm.data import DataError, DataLoader, Dataset, TextClassificationDataset, default_collate, pad_batch
from minillm.data import read_glue_tsv


# ---- the TSV reader ----------------------------------------------------------------------------

def write(tmp_path, text, name="train.tsv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_reads_rows_by_header_name(tmp_path):
    path = write(tmp_path, "idx\tlabel\tsentence\r\n0\t1\tit 's charming \r\n1\t0\tdull\r\n\r\n")
    texts, labels = read_glue_tsv(path)
    assert texts == ["it 's charming ", "dull"] and labels == [1, 0]


@pytest.mark.parametrize("content, message", [
    ("", r"train.tsv: empty file; expected a header line"),
    ("sentence\tlabel\n", r"train.tsv: the header is there but there are no rows"),
    ("text\tlabel\nfine\t1\n", r"train.tsv:1: the header \['text', 'label'\] has no 'sentence' column"),
    ("sentence\tlabel\nfine\t1\nno label here\n", r"train.tsv:3: expected 2 tab-separated columns .* found 1"),
    ("sentence\tlabel\nfine\t1\n\nworse\t2\n", r"train.tsv:4: label '2' is not one of the classes 0..1"),
    ("sentence\tlabel\nfine\t-1\n", r"train.tsv:2: label '-1' is not one of the classes 0..1"),
    ("sentence\tlabel\nfine\tpositive\n", r"train.tsv:2: label 'positive' is not one of the classes"),
    ("sentence\tlabel\n \t1\n", r"train.tsv:2: the 'sentence' column is empty"),
])
def test_bad_files_are_reported_by_file_and_line(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        read_glue_tsv(write(tmp_path, content))


@pytest.mark.parametrize("label", ["²", "١", "9" * 5000, "01", "1.0"])
def test_labels_the_fuzzing_found(tmp_path, label):
    """int() raised on '²' and on 5000 digits (a bare ValueError naming no file) and read '١' (Arabic-Indic
    one) as 1; a label is one of the strings '0'..'N-1', as GLUE's processors compare them."""
    with pytest.raises(DataError, match=r"train.tsv:3: label '.*' is not one of the classes 0..1"):
        read_glue_tsv(write(tmp_path, f"sentence\tlabel\nfine\t1\nfine\t{label}\n"))


def test_rows_end_where_csv_ends_them(tmp_path):
    """Lines end at \\n, \\r\\n or \\r (mixed in one file, too), as Python's csv module reads them;
    str.splitlines also cut at \\f, \\v, \\x85, U+2028 and U+2029, which then split a text in two.
    A byte-order mark is not part of the first column's name."""
    texts = ["page\x0cbreak", "next\u2028line", "vertical\x0btab", "nel\x85here", "plain"]
    content = "\ufeffsentence\tlabel\r\n" + "\r".join(f"{t}\t1" for t in texts[:3]) + "\n" + texts[3] + "\t0\r\n"
    path = tmp_path / "train.tsv"
    path.write_bytes((content + texts[4] + "\t1").encode())
    assert read_glue_tsv(path) == (texts, [1, 1, 1, 0, 1])


def test_a_nul_byte_is_an_error_naming_the_line(tmp_path):
    with pytest.raises(DataError, match=r"train.tsv:3: a NUL byte"):
        read_glue_tsv(write(tmp_path, "sentence\tlabel\nfine\t1\nbin\x00ary\t0\n"))


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.tsv does not exist"):
        read_glue_tsv(tmp_path / "nothing.tsv")
    path = tmp_path / "latin1.tsv"
    path.write_bytes("sentence\tlabel\ncaf\xe9\t1\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.tsv: not UTF-8"):
        read_glue_tsv(path)


def test_more_classes(tmp_path):
    path = write(tmp_path, "sentence\tlabel\na\t2\n")
    assert read_glue_tsv(path, num_labels=3).labels == [2]


def test_reads_the_real_sst2_dev_set(sst2_dir):
    texts, labels = read_glue_tsv(sst2_dir / "dev.tsv")
    assert len(texts) == 872 and set(labels) == {0, 1}
    assert texts[0].startswith("it 's a charming")


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
