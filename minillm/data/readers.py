"""Read labeled text from .tsv, .csv and .jsonl files: rows of named columns, each with its line number.

    examples = read_examples("rte/train.tsv")            # sentence1, sentence2, label: found by name
    examples.texts, examples.text_pairs, examples.labels  # the raw labels: strings, or JSON values
    read_examples("reviews.csv", text_column="review", label_column="stars")

The formats, chosen by the file's extension or ``format=``:
    tsv    a header, then tab-separated rows, as GLUE ships them. Quotes are plain characters (GLUE's
           own reader, csv with quoting off): RTE's texts begin with quotation marks that are text.
    csv    a header, then comma-separated rows (the csv module: "quoted fields" may hold commas, tabs,
           doubled "" quotes and line breaks), as spreadsheets and pandas' to_csv write them.
    jsonl  one JSON object a line (JSON Lines: a line ends at \\n), as Hugging Face datasets' to_json
           writes it: a label may be a number, a string or, for several labels, a list.
Every format is UTF-8, with or without a byte-order mark, with LF or CRLF line ends; blank lines
are not rows. A bad row fails with the file, the line and the column, because a silently dropped or
mislabeled row is a wrong result no one notices: ``rte/train.tsv:17: the 'sentence2' column is empty``.
"""
import codecs
import collections
import csv
import io
import json
import os
import re
import reprlib

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl"}
# the defaults cover GLUE's columns (as Hugging Face's datasets name them) and the common ones
TEXT_COLUMNS = ("sentence", "text")
PAIR_COLUMNS = (("sentence1", "sentence2"), ("question1", "question2"), ("premise", "hypothesis"),
                ("question", "sentence"), ("text", "text_pair"))
LABEL_COLUMNS = ("label", "labels", "target")

Row = collections.namedtuple("Row", ["line", "values"])  # values: column -> str (tsv, csv) or JSON value
Examples = collections.namedtuple("Examples", ["texts", "text_pairs", "labels", "lines", "path", "label_column"])
# where lines end, to name the line of a byte that is not UTF-8: csv's ends, and JSON Lines' \n alone
LINE_ENDS = {"tsv": re.compile(rb"\r\n|\r|\n"), "csv": re.compile(rb"\r\n|\r|\n"), "jsonl": re.compile(rb"\n")}
JSON_WHITESPACE = " \t\r\n"  # RFC 8259's four; str.strip() would also take \f, \x1f, U+2028, ... which JSON refuses
SURROGATE = re.compile("[\ud800-\udfff]")  # JSON's \ud800 escape: half a UTF-16 pair, no character


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
    text = _read_text(path, kind)
    columns, rows = _read_jsonl(path, text) if kind == "jsonl" else _read_delimited(path, text, kind)
    if not rows:
        raise DataError(f"{path}: the header is there but there are no rows")
    return columns, rows


def _read_text(path, kind):
    """The file decoded as UTF-8, less a byte-order mark at its start (it is not text); a byte that
    is not UTF-8 is an error naming its line and its offset in the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"data file {path} does not exist") from None
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = start + err.start  # err.start counts from the slice decoded
        line = len(LINE_ENDS[kind].findall(data, 0, at)) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {at} of the file)") from None


def _read_delimited(path, text, kind):
    dialect = dict(delimiter="\t", quoting=csv.QUOTE_NONE) if kind == "tsv" else dict(delimiter=",")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, **dialect)
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
                raise _nul_byte(path, line)
            if len(fields) < len(header):
                sep = "tab" if kind == "tsv" else "comma"
                raise DataError(f"{path}:{line}: expected {len(header)} {sep}-separated columns {header}, "
                                f"found {len(fields)}: {(chr(9) if kind == 'tsv' else ',').join(fields)[:60]!r}")
            rows.append(Row(line, dict(zip(header, fields))))
        line = reader.line_num + 1
    return header, rows


def _read_jsonl(path, text):
    """JSON Lines (jsonlines.org): a JSON value a line, lines ending at \\n. A \\r before it is JSON's
    whitespace, so CRLF files read the same; a raw line break cannot be inside a JSON string, so no
    text is cut in two (str.splitlines would also cut at \\f, \\x85, U+2028, ..., which strings may hold)."""
    columns, rows = None, []
    for line, source in enumerate(text.split("\n"), start=1):
        if not source.strip(JSON_WHITESPACE):
            continue
        values = _json_object(path, line, source)
        columns = list(values) if columns is None else columns
        rows.append(Row(line, values))
    if columns is None:
        raise DataError(f"{path}: empty file; expected one JSON object a line")
    return columns, rows


def _json_object(path, line, source):
    """The JSON object on line ``line``, or a DataError saying what is wrong with it."""
    if "\0" in source:
        raise _nul_byte(path, line)
    if source.startswith("\ufeff"):  # where `cat a.jsonl b.jsonl` put the second file's mark
        raise DataError(f"{path}:{line}: a byte-order mark (U+FEFF) starts this line, not the file: "
                        "files joined together? Remove it")
    try:
        values = json.loads(source, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:  # its msg may end in ' at' ('Invalid control character at')
        reason = err.msg.removesuffix(" at")
        raise DataError(f"{path}:{line}: not valid JSON ({reason} at column {err.colno})") from None
    except _KeyTwice as err:
        raise DataError(f"{path}:{line}: an object has the key {err.key!r} more than once") from None
    except RecursionError:  # json recurses once a level: 1000 or so '[' are past Python's stack limit
        raise DataError(f"{path}:{line}: JSON nested too deeply to read") from None
    except ValueError as err:  # a number of more than 4300 digits, which int() refuses
        raise DataError(f"{path}:{line}: not valid JSON here ({str(err).split(':')[0]})") from None
    if not isinstance(values, dict):
        raise DataError(f"{path}:{line}: expected a JSON object (one example a line), got {shown(values)}")
    return values


class _KeyTwice(Exception):
    """An object, at any depth of a line, with a key twice (json.loads would keep the last)."""

    def __init__(self, key):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs):
    values = dict(pairs)
    if len(values) < len(pairs):  # a key twice: the first, by a set of those seen (a line may hold 10,000 keys)
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _KeyTwice(key)
            seen.add(key)
    return values


def _nul_byte(path, line):
    return DataError(f"{path}:{line}: a NUL byte: this is not a text file (or it is corrupt)")


def shown(value, limit=60):
    """A JSON value as an error message shows it: its JSON, cut to about ``limit`` characters (a
    megabyte of text, or lists nested 900 deep, which json.dumps cannot even write at the depth
    an error is raised, would make it no message at all)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except RecursionError:
        return reprlib.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def choose_columns(path, columns, text_column=None, text_pair_column=None, label_column=None, labeled=True,
                   line=1):
    """(text, pair or None, label or None): the columns asked for, or the first of the defaults the file has
    (a pair of GLUE's columns before a single text column). ``line``: where the columns are named (the
    header; in jsonl, the first object, after any blank lines)."""
    def present(name, option):
        if name not in columns:
            raise DataError(f"{path}:{line}: there is no column '{name}' ({option}); the columns are {columns}")
        return name

    if text_column is not None:
        text = present(text_column, "--text-column")
        pair = present(text_pair_column, "--text-pair-column") if text_pair_column else None
    elif text_pair_column is not None:
        raise ValueError("--text-pair-column needs --text-column (the pair's first text)")
    else:
        found = [p for p in PAIR_COLUMNS if set(p) <= set(columns)] + [(t, None) for t in TEXT_COLUMNS if t in columns]
        if not found:
            raise DataError(f"{path}:{line}: no text column: the columns are {columns}; expected one of {TEXT_COLUMNS} "
                            f"or a pair such as {PAIR_COLUMNS[0]}, or name it with --text-column")
        text, pair = found[0]
    label = None
    if label_column is not None:
        label = present(label_column, "--label-column")
    elif labeled:
        label = next((c for c in LABEL_COLUMNS if c in columns), None)
        if label is None:
            raise DataError(f"{path}:{line}: no label column: the columns are {columns}; expected one of "
                            f"{LABEL_COLUMNS}, or name it with --label-column")
    return text, pair, label


def read_examples(path, text_column=None, text_pair_column=None, label_column=None, format=None, labeled=True,
                  limit=None):
    """The texts (and the pairs' second texts, else None) and the raw labels of a data file, checked row by
    row; ``limit``: only the first that many rows. labeled=False: no label column needed (labels None)."""
    path = os.fspath(path)
    columns, rows = read_rows(path, format)
    named = rows[0].line if file_format(path, format) == "jsonl" else 1  # the header, or the first object
    text_column, pair_column, label_column = choose_columns(path, columns, text_column, text_pair_column,
                                                            label_column, labeled, named)
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
        raise DataError(f"{path}:{row.line}: the '{column}' column holds {shown(text)} "
                        f"({type(text).__name__}), expected a string of text")
    if not text.strip():
        raise DataError(f"{path}:{row.line}: the '{column}' column is empty")
    half = SURROGATE.search(text)
    if half:  # only JSON can hold one; the tokenizer would refuse the text with no line to name
        raise DataError(f"{path}:{row.line}: the '{column}' column holds a lone surrogate U+{ord(half[0]):04X} "
                        "(half of a UTF-16 pair, written as a \\u escape), which is no character")
    return text
