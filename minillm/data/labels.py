"""Labels as the model takes them, for Hugging Face's three ``problem_type``s, and the names config.json keeps.

    single_label_classification  one class a row: ids (N,) int64. Labels that are all integers 0, 1, ...
                                 are the ids themselves (names LABEL_0, ...: Hugging Face's default);
                                 other labels are names ("positive"), numbered in sorted order unless
                                 ``names`` gives the order.
    multi_label_classification   any number of classes a row (a JSON list, or names joined by
                                 ``separator`` in a tsv/csv field): multi-hot rows (N, C) float32.
    regression                   one number a row: (N,) float32.

Training data decides the labels (``id2label`` None); evaluation data is read with the model's
``id2label``, and a label the model was never trained on is an error naming the file and line.
"""
import collections
import math
import re
import reprlib

import numpy

from .readers import DataError, shown

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
Labels = collections.namedtuple("Labels", ["values", "id2label"])  # values: the array; id2label: {id: name}


def default_names(num_labels):
    return {i: f"LABEL_{i}" for i in range(num_labels)}


def encode_labels(examples, problem_type="single_label_classification", id2label=None, names=None,
                  num_labels=None, separator=","):
    """Labels(values, id2label) of ``examples`` (minillm.data.read_examples).

    id2label: the model's classes (evaluation data), or None to infer them from these labels
    (training data): ``names`` (a list) fixes their order, ``num_labels`` the number of integer classes
    (default: the largest label + 1). For regression id2label is {0: "LABEL_0"}: one output."""
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"unknown problem_type {problem_type!r}: expected one of {', '.join(PROBLEM_TYPES)}")
    rows = list(zip(examples.lines, examples.labels))
    where = _Where(examples.path, examples.label_column)
    if problem_type == "regression":
        return Labels(numpy.array([where.number(line, y) for line, y in rows], numpy.float32), default_names(1))
    if problem_type == "multi_label_classification":
        return _multi_label(rows, where, id2label, names, separator)
    return _single_label(rows, where, id2label, names, num_labels)


def _single_label(rows, where, id2label, names, num_labels):
    for line, y in rows:
        where.scalar(line, y)
    if id2label is None and names is None and all(_is_class_id(y) for _, y in rows):
        ids = [int(str(y).strip()) for _, y in rows]  # strip() as _is_class_id: '\x1f1' is 1 to both
        n = max(ids) + 1 if num_labels is None else num_labels
        if num_labels is None and n > len(rows):  # 999999999 would make a billion classes (and no memory)
            line, y = rows[ids.index(n - 1)]
            raise DataError(f"{where.at(line)}: label {y!s} would make {n} classes (0..{n - 1}) for {len(rows)} "
                            "rows: integer labels are the class ids 0..N-1 (--num-labels N if some class has no row)")
        for (line, y), i in zip(rows, ids):
            if i >= n:
                raise DataError(f"{where.at(line)}: label {reprlib.repr(str(y))} is not one of the classes 0..{n - 1}")
        return Labels(numpy.array(ids, numpy.int64), default_names(n))
    known = "the classes the model was trained on" if id2label is not None else "the classes of --labels"
    if id2label is None:
        id2label = _numbered(names, [str(y) for _, y in rows], where)
    label2id = {name: i for i, name in id2label.items()}
    by_id = id2label == default_names(len(id2label))  # a model trained on integer labels takes them as ids
    ids = [where.class_id(line, str(y), label2id, by_id, known) for line, y in rows]
    return Labels(numpy.array(ids, numpy.int64), id2label)


def _multi_label(rows, where, id2label, names, separator):
    sets = [(line, where.label_set(line, y, separator)) for line, y in rows]
    known = "the classes the model was trained on" if id2label is not None else "the classes of --labels"
    if id2label is None:
        id2label = _numbered(names, [name for _, s in sets for name in s], where)
    label2id = {name: i for i, name in id2label.items()}
    values = numpy.zeros((len(sets), len(id2label)), numpy.float32)
    for row, (line, labels) in enumerate(sets):
        for name in labels:
            values[row, where.class_id(line, name, label2id, False, known)] = 1.0
    return Labels(values, id2label)


def _numbered(names, seen, where):
    """{id: name}: ``names`` in their order (every label seen must be one), else the labels seen, sorted
    (as numbers when every one is a number, so -1 < 0 < 1 < 10)."""
    if names is not None:
        if len(set(names)) != len(names):
            raise ValueError(f"--labels {','.join(names)}: a label is named twice")
        return dict(enumerate(names))
    unique = sorted(set(seen), key=lambda n: (float(n), n) if all(_is_number(s) for s in seen) else (0, n))
    if not unique:
        raise DataError(f"{where.path}: no labels")
    return dict(enumerate(unique))


CLASS_ID = re.compile(r"0|[1-9][0-9]{0,8}")  # '1', not '01', '١' (Arabic-Indic one), '²' or 5000 digits


def _is_class_id(value):
    return (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or (
        isinstance(value, str) and CLASS_ID.fullmatch(value.strip()) is not None)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


class _Where:
    """The checks of one label, each failing with file:line and the label column."""

    def __init__(self, path, column):
        self.path, self.column = path, column

    def at(self, line):
        return f"{self.path}:{line}"

    def scalar(self, line, y):
        if isinstance(y, (list, dict)) or y is None:
            hint = " (several labels: --problem-type multi_label_classification)" if isinstance(y, list) else ""
            raise DataError(f"{self.at(line)}: the '{self.column}' column holds {shown(y)}, expected one "
                            f"label{hint}")
        if isinstance(y, str) and not y.strip():
            raise DataError(f"{self.at(line)}: the '{self.column}' column is empty")

    def number(self, line, y):
        self.scalar(line, y)
        if isinstance(y, bool) or not isinstance(y, (int, float, str)) or not _is_number(y) or \
                not math.isfinite(float(y)):
            raise DataError(f"{self.at(line)}: the '{self.column}' column holds {shown(y)}, "
                            "expected a finite number (--problem-type regression)")
        return float(y)

    def label_set(self, line, y, separator):
        names = y if isinstance(y, list) else str(y).split(separator) if isinstance(y, (str, int)) else None
        if names is None or not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in names):
            raise DataError(f"{self.at(line)}: the '{self.column}' column holds {shown(y)}, expected a list "
                            f"of labels (or labels joined by {separator!r})")
        return [str(n).strip() for n in names if str(n).strip()]  # an empty list: a row of no class

    def class_id(self, line, name, label2id, by_id, known):
        """The id of label ``name``; ``known`` says where the classes came from, for the error."""
        name = name.strip()
        if name in label2id:
            return label2id[name]
        if by_id and CLASS_ID.fullmatch(name) and int(name) < len(label2id):  # name is stripped above
            return int(name)
        classes = f"0..{len(label2id) - 1}" if by_id else ", ".join(label2id)
        raise DataError(f"{self.at(line)}: label {reprlib.repr(name)} is not one of {known} ({classes})")
