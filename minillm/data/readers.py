"""Read labeled text from .tsv, .csv and .jsonl files: rows of named columns, each with its line number.

    examples = read_examples("rte/train.tsv")            # sentence1, sentence2, label: found by name
    examples.texts, examples.text_pairs, examples.labels  # the raw labels: strings, or JSON values
    read_examples("reviews.csv", text_column="review", label_column="stars")

The formats, chosen by the file's extension or ``format=``:
    tsv    a header, then tab-separated rows, as GLUE ships them. Quotes are plain characters (GLUE's
           own reader, csv with quoting off): RTE's texts begin with quotation marks that are text.
    csv    a header, then comma-separated rows (the csv module: "quoted fields" may hold commas, tabs,
           doubled "" quotes and line breaks), as spreadsheets and pandas' to_csv write them.
    jsonl  one JSON object a line (JSON Lines), as Hugging Face datasets' to_json writes it: a label
           may be a number, a string or, for several labels, a list.
Every format is UTF-8, with or without a byte-order mark, with LF or CRLF line ends; blank lines
are not rows. A bad row fails with the file, the line and the column, because a silently dropped or
mislabeled row is a wrong result no one notices: ``rte/train.tsv:17: the 'sentence2' column is empty``.
"""
import collections
import csv
import json
import os
import re

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl"}
# the defaults cover GLUE's columns (as Hugging Face's datasets name them) and the common ones
TEXT_COLUMNS = ("sentence", "text")
PAIR_COLUMNS = (("sentence1", "sentence2"), ("question1", "question2"), ("premise", "hypothesis"),
                ("question", "sentence"), ("text", "text_pair"))
LABEL_COLUMNS = ("label", "labels", "target")

Row = collections.namedtuple("Row", ["line", "values"])  # values: column -> str (tsv, csv) or JSON value
Examples = collections.namedtuple("Examples", ["texts", "text_pairs", "labels", "lines", "path", "label_column"])


class DataError(ValueError):
    """A data file that cannot be used as it is; the message names the file and line."""


def file_format(path, format=None):
    """'tsv', 'csv' or 'jsonl': ``format`` if given, else the one the file's extension names."""
    if format is not None:
        if format not in FORMATS.values():
            raise ValueError(f"unknown data format {format!r}: expected one of {', '.join(FORMATS.values())}")
        return format
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension not in FORMATS:
        raise DataError(f"{path}: cannot tell the format from the extension {extension!r}: name the file "
                        f"{', '.join('*' + e for e in FORMATS)}, or pass --format")
    return FORMATS[extension]


def read_rows(path, format=None):
    """(columns, rows) of a data file: the header's column names (for jsonl, the first object's keys)
    and a Row(line, values) for every row that is not blank."""
    path = os.fspath(path)
    kind = file_format(path, format)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a byte-order mark is not text
            columns, rows = _read_jsonl(path, f) if kind == "jsonl" else _read_delimited(path, f, kind)
    except FileNotFoundError:
        raise FileNotFoundError(f"data file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not rows:
        raise DataError(f"{path}: the header is there but there are no rows")
    return columns, rows


def _read_delimited(path, f, kind):
    dialect = dict(delimiter="\t", quoting=csv.QUOTE_NONE) if kind == "tsv" else dict(delimiter=",")
    reader = csv.reader(f, strict=True, **dialect)
    try:
        header = next(reader, None)
    except csv.Error as err:  # e.g. a quote in the header never closed
        raise DataError(f"{path}:1: not valid {kind.upper()}: {err}") from None
    if not header or not any(h.strip() for h in header):
        raise DataError(f"{path}: empty file; expected a header line naming the columns, then one row per example")
    header = [h.strip() for h in header]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:  # which of two same-named columns is the text or the label? Not ours to guess
        raise DataError(f"{path}:1: the header names the column(s) {twice} more than once: {header}")
    rows, line = [], reader.line_num + 1  # a quoted field may span lines: a row starts after the last one read
    while True:
        try:
            fields = next(reader, None)
        except csv.Error as err:  # e.g. a quote never closed
            raise DataError(f"{path}:{line}: not valid {kind.upper()}: {err}") from None
        if fields is None:
            break
        if any(field.strip() for field in fields):
            if any("\0" in field for field in fields):
                raise DataError(f"{path}:{line}: a NUL byte: this is not a text file (or it is corrupt)")
            if len(fields) < len(header):
                sep = "tab" if kind == "tsv" else "comma"
                raise DataError(f"{path}:{line}: expected {len(header)} {sep}-separated columns {header}, "
                                f"found {len(fields)}: {(chr(9) if kind == 'tsv' else ',').join(fields)[:60]!r}")
            rows.append(Row(line, dict(zip(header, fields))))
        line = reader.line_num + 1
    return header, rows


def _read_jsonl(path, f):
    columns, rows = None, []
    # lines end at \n, \r\n or \r, as csv reads them (str.splitlines would also cut at \f, \x85, U+2028, ...,
    # which JSON strings may hold)
    for line, text in enumerate(re.split(r"\r\n|\r|\n", f.read()), start=1):
        if not text.strip():
            continue
        try:
            values = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{line}: not valid JSON ({err.msg} at column {err.colno})") from None
        if isinstance(values, _Twice):
            raise DataError(f"{path}:{line}: the object has the key {values.key!r} more than once")
        if not isinstance(values, dict):
            raise DataError(f"{path}:{line}: expected a JSON object (one example a line), got {type(values).__name__}")
        columns = list(values) if columns is None else columns
        rows.append(Row(line, values))
    if columns is None:
        raise DataError(f"{path}: empty file; expected one JSON object a line")
    return columns, rows


class _Twice:
    """What _unique_keys makes of a JSON object with a key twice (json.loads would keep the last)."""

    def __init__(self, key):
        self.key = key


def _unique_keys(pairs):
    keys = [key for key, _ in pairs]
    twice = next((key for key in keys if keys.count(key) > 1), None)
    return dict(pairs) if twice is None else _Twice(twice)


def choose_columns(path, columns, text_column=None, text_pair_column=None, label_column=None, labeled=True):
    """(text, pair or None, label or None): the columns asked for, or the first of the defaults the file has
    (a pair of GLUE's columns before a single text column)."""
    def present(name, option):
        if name not in columns:
            raise DataError(f"{path}:1: there is no column '{name}' ({option}); the columns are {columns}")
        return name

    if text_column is not None:
        text = present(text_column, "--text-column")
        pair = present(text_pair_column, "--text-pair-column") if text_pair_column else None
    elif text_pair_column is not None:
        raise ValueError("--text-pair-column needs --text-column (the pair's first text)")
    else:
        found = [p for p in PAIR_COLUMNS if set(p) <= set(columns)] + [(t, None) for t in TEXT_COLUMNS if t in columns]
        if not found:
            raise DataError(f"{path}:1: no text column: the columns are {columns}; expected one of {TEXT_COLUMNS} "
                            f"or a pair such as {PAIR_COLUMNS[0]}, or name it with --text-column")
        text, pair = found[0]
    label = None
    if label_column is not None:
        label = present(label_column, "--label-column")
    elif labeled:
        label = next((c for c in LABEL_COLUMNS if c in columns), None)
        if label is None:
            raise DataError(f"{path}:1: no label column: the columns are {columns}; expected one of {LABEL_COLUMNS}, "
                            "or name it with --label-column")
    return text, pair, label


def read_examples(path, text_column=None, text_pair_column=None, label_column=None, format=None, labeled=True,
                  limit=None):
    """The texts (and the pairs' second texts, else None) and the raw labels of a data file, checked row by
    row; ``limit``: only the first that many rows. labeled=False: no label column needed (labels None)."""
    path = os.fspath(path)
    columns, rows = read_rows(path, format)
    text_column, pair_column, label_column = choose_columns(path, columns, text_column, text_pair_column,
                                                            label_column, labeled)
    rows = rows[:limit] if limit is not None else rows
    texts = [_text(path, row, text_column) for row in rows]
    pairs = [_text(path, row, pair_column) for row in rows] if pair_column else None
    labels = [_value(path, row, label_column) for row in rows] if label_column else None
    return Examples(texts, pairs, labels, [row.line for row in rows], path, label_column)


def _value(path, row, column):
    if column not in row.values:
        raise DataError(f"{path}:{row.line}: the row has no '{column}' column")
    return row.values[column]


def _text(path, row, column):
    text = _value(path, row, column)
    if not isinstance(text, str):
        raise DataError(f"{path}:{row.line}: the '{column}' column holds {json.dumps(text)} "
                        f"({type(text).__name__}), expected a string of text")
    if not text.strip():
        raise DataError(f"{path}:{row.line}: the '{column}' column is empty")
    return text
