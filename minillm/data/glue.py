"""Read GLUE-style TSV files (SST-2's train.tsv, dev.tsv): a header naming the columns, then rows.

    sentence<TAB>label
    it 's a charming and often affecting journey . <TAB>1

Columns are found by name, so extra columns are fine. A bad file fails on its first bad row with
the file and line number, because a silently dropped or mislabeled row is a wrong result that no
one notices: ``sst2/train.tsv:17: label '2' is not one of the classes 0..1``.
"""
import collections
import os

LabeledTexts = collections.namedtuple("LabeledTexts", ["texts", "labels"])


class DataError(ValueError):
    """A data file that cannot be used as it is; the message names the file and line."""


def read_glue_tsv(path, num_labels=2, text_column="sentence", label_column="label"):
    """(texts, labels) from a TSV file with a header; labels are ints in 0..num_labels-1."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"data file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not lines or not lines[0].strip():
        raise DataError(f"{path}: empty file; expected a header line '{text_column}\\t{label_column}' "
                        "and one row per example")
    header = lines[0].split("\t")
    for column in (text_column, label_column):
        if column not in header:
            raise DataError(f"{path}:1: the header {header} has no '{column}' column "
                            f"(expected e.g. '{text_column}\\t{label_column}')")
    text_at, label_at = header.index(text_column), header.index(label_column)
    texts, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue  # a blank line (often the last) is not a row
        fields = line.split("\t")
        if len(fields) < len(header):
            raise DataError(f"{path}:{number}: expected {len(header)} tab-separated columns {header}, "
                            f"found {len(fields)}: {line[:60]!r}")
        text, label = fields[text_at], fields[label_at].strip()
        if not text.strip():
            raise DataError(f"{path}:{number}: the '{text_column}' column is empty")
        if not (label.isdigit() and int(label) < num_labels):
            raise DataError(f"{path}:{number}: label {label!r} is not one of the classes 0..{num_labels - 1}")
        texts.append(text)
        labels.append(int(label))
    if not texts:
        raise DataError(f"{path}: the header is there but there are no rows")
    return LabeledTexts(texts, labels)
