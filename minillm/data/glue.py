"""Read GLUE-style TSV files (SST-2's train.tsv, dev.tsv): a header naming the columns, then rows.

    sentence<TAB>label
    it 's a charming and often affecting journey . <TAB>1

Columns are found by name, so extra columns are fine. A bad file fails on its first bad row with
the file and line number, because a silently dropped or mislabeled row is a wrong result that no
one notices: ``sst2/train.tsv:17: label '2' is not one of the classes 0..1``.
"""
import collections
import os
import reprlib

LabeledTexts = collections.namedtuple("LabeledTexts", ["texts", "labels"])


class DataError(ValueError):
    """A data file that cannot be used as it is; the message names the file and line."""


def read_glue_tsv(path, num_labels=2, text_column="sentence", label_column="label"):
    """(texts, labels) from a TSV file with a header; labels are ints in 0..num_labels-1."""
    path = os.fspath(path)
    try:  # lines end at \n, \r\n or \r, as csv reads them (str.splitlines would also cut at \f, \x85, U+2028...)
        with open(path, encoding="utf-8-sig", newline=None) as f:
            lines = f.read().split("\n")
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
    classes = {str(i): i for i in range(num_labels)}  # a label is one of these strings, as in GLUE's processors
    texts, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue  # a blank line (often the last) is not a row
        if "\0" in line:
            raise DataError(f"{path}:{number}: a NUL byte: this is not a text file (or it is corrupt)")
        fields = line.split("\t")
        if len(fields) < len(header):
            raise DataError(f"{path}:{number}: expected {len(header)} tab-separated columns {header}, "
                            f"found {len(fields)}: {line[:60]!r}")
        text, label = fields[text_at], fields[label_at].strip()
        if not text.strip():
            raise DataError(f"{path}:{number}: the '{text_column}' column is empty")
        if label not in classes:
            raise DataError(f"{path}:{number}: label {reprlib.repr(label)} is not one of the classes "
                            f"0..{num_labels - 1}")
        texts.append(text)
        labels.append(classes[label])
    if not texts:
        raise DataError(f"{path}: the header is there but there are no rows")
    return LabeledTexts(texts, labels)
