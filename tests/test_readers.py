"""The data readers (.tsv, .csv, .jsonl) on awkward files, and labels: ids, names, several, numbers.
Every bad row is an error naming the file, the line and the column."""
import json

import numpy as np
import pytest

from minillm.data import DataError, encode_labels, read_examples, read_rows


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# ---- the three formats -------------------------------------------------------------------------

def test_tsv_by_header_name_with_crlf_bom_and_blank_lines(tmp_path):
    path = write(tmp_path, "train.tsv", "\ufeffidx\tlabel\tsentence\r\n0\t1\tit 's charming \r\n\r\n1\t0\tdull\r\n\r\n")
    examples = read_examples(path)
    assert examples.texts == ["it 's charming ", "dull"] and examples.labels == ["1", "0"]
    assert examples.lines == [2, 4] and examples.text_pairs is None and examples.label_column == "label"


def test_tsv_quotes_are_text_as_in_glue(tmp_path):
    """RTE's texts begin with quotation marks: a TSV field is never quoted (GLUE's own reader)."""
    path = write(tmp_path, "dev.tsv", 'sentence1\tsentence2\tlabel\n"Yes," he said.\tHe said "no\tentailment\n')
    examples = read_examples(path)
    assert examples.texts == ['"Yes," he said.'] and examples.text_pairs == ['He said "no']


def test_csv_quoted_fields_hold_commas_tabs_quotes_and_newlines(tmp_path):
    body = 'text,label\r\n"one, two\tthree",pos\r\n"a ""quoted""\nline break",neg\r\nplain,pos\r\n'
    examples = read_examples(write(tmp_path, "train.csv", "\ufeff" + body))
    assert examples.texts == ["one, two\tthree", 'a "quoted"\nline break', "plain"]
    assert examples.labels == ["pos", "neg", "pos"] and examples.lines == [2, 3, 5]  # a row starts where it starts


def test_jsonl_objects_a_line(tmp_path):
    rows = [{"premise": "a cat sat", "hypothesis": "a cat", "label": 1}, {"premise": "x", "hypothesis": "y",
                                                                          "label": 0}]
    path = write(tmp_path, "train.jsonl", "\ufeff" + "\r\n".join(json.dumps(r) for r in rows) + "\r\n\r\n")
    examples = read_examples(path)
    assert examples.texts == ["a cat sat", "x"] and examples.text_pairs == ["a cat", "y"] and examples.labels == [1, 0]


def test_format_from_the_extension_or_told(tmp_path):
    path = write(tmp_path, "data.txt", "text,label\nfine,1\n")
    with pytest.raises(DataError, match=r"data.txt: cannot tell the format from the extension '.txt'"):
        read_rows(path)
    assert read_examples(path, format="csv").texts == ["fine"]
    with pytest.raises(ValueError, match="unknown data format 'xml'"):
        read_rows(path, format="xml")


def test_columns_by_name_and_the_defaults(tmp_path):
    path = write(tmp_path, "t.csv", "review,stars,sentence\ngreat,5,unused\n")
    examples = read_examples(path, text_column="review", label_column="stars")
    assert examples.texts == ["great"] and examples.labels == ["5"]
    assert read_examples(path, label_column="stars").texts == ["unused"]  # 'sentence' is a default text column
    pairs = write(tmp_path, "p.tsv", "question\tsentence\tlabel\nwho?\tme.\t0\n")
    assert read_examples(pairs).text_pairs == ["me."]  # QNLI's pair before the single 'sentence'
    assert read_examples(pairs, text_column="sentence").text_pairs is None
    assert read_examples(pairs, labeled=False, label_column=None).labels is None


@pytest.mark.parametrize("name, content, message", [
    ("train.tsv", "", r"train.tsv: empty file; expected a header line"),
    ("train.tsv", "sentence\tlabel\n", r"train.tsv: the header is there but there are no rows"),
    ("train.tsv", "words\tlabel\nfine\t1\n", r"train.tsv:1: no text column: the columns are \['words', 'label'\]"),
    ("train.tsv", "sentence\tscore\nfine\t1\n", r"train.tsv:1: no label column: the columns are"),
    ("train.tsv", "sentence\tlabel\nfine\t1\nno label here\n", r"train.tsv:3: expected 2 tab-separated columns"),
    ("train.tsv", "sentence\tlabel\n \t1\n", r"train.tsv:2: the 'sentence' column is empty"),
    ("train.csv", 'text,label\n"never closed,1\n', r"train.csv:2: not valid CSV"),
    ("train.csv", "text,label\nfine\n", r"train.csv:2: expected 2 comma-separated columns"),
    ("train.csv", 'sentence1,sentence2,label\na,"",1\n', r"train.csv:2: the 'sentence2' column is empty"),
    ("train.jsonl", '{"text": "fine", "label": 1}\n{"text": 5, "label": 0}\n',
     r"train.jsonl:2: the 'text' column holds 5 \(int\), expected a string of text"),
    ("train.jsonl", '{"text": "fine", "label": 1}\n{"label": 0}\n', r"train.jsonl:2: the row has no 'text' column"),
    ("train.jsonl", '{"text": "fine", "label": 1}\n\n{"text": "x", label: 0}\n', r"train.jsonl:3: not valid JSON"),
    ("train.jsonl", '["fine", 1]\n', r"train.jsonl:1: expected a JSON object"),
])
def test_bad_files_name_the_file_the_line_and_the_column(tmp_path, name, content, message):
    with pytest.raises(DataError, match=message):
        read_examples(write(tmp_path, name, content))


def test_missing_named_columns_and_files(tmp_path):
    path = write(tmp_path, "t.tsv", "sentence\tlabel\nfine\t1\n")
    with pytest.raises(DataError, match=r"t.tsv:1: there is no column 'review' \(--text-column\); the columns are"):
        read_examples(path, text_column="review")
    with pytest.raises(DataError, match=r"there is no column 'b' \(--text-pair-column\)"):
        read_examples(path, text_column="sentence", text_pair_column="b")
    with pytest.raises(FileNotFoundError, match="nothing.tsv does not exist"):
        read_examples(tmp_path / "nothing.tsv")
    with pytest.raises(DataError, match=r"latin1.tsv:2: not UTF-8 text \(invalid continuation byte at byte 18 of the"):
        read_examples(write(tmp_path, "latin1.tsv", "sentence\tlabel\ncaf\xe9\t1\n", encoding="latin-1"))


def test_reads_the_real_glue_files(sst2_dir):
    examples = read_examples(sst2_dir / "dev.tsv")
    labels = encode_labels(examples)
    assert len(examples.texts) == 872 and set(labels.values) == {0, 1} and labels.id2label == {0: "LABEL_0",
                                                                                                1: "LABEL_1"}
    assert examples.texts[0].startswith("it 's a charming")
    rte = sst2_dir.parent / "rte"
    if rte.is_dir():  # SOURCE.md's counts
        train = read_examples(rte / "train.tsv")
        labels = encode_labels(train)
        assert len(train.texts) == 2490 and labels.id2label == {0: "entailment", 1: "not_entailment"}
        assert (labels.values == 0).sum() == 1249 and len(train.text_pairs) == 2490


# ---- labels ------------------------------------------------------------------------------------

def examples_of(tmp_path, labels, name="train.jsonl"):
    rows = "".join(json.dumps({"text": f"t{i}", "label": y}) + "\n" for i, y in enumerate(labels))
    return read_examples(write(tmp_path, name, rows))


def test_integer_labels_are_ids_and_their_number_is_inferred(tmp_path):
    labels = encode_labels(examples_of(tmp_path, [0, 2, "1", 2]))
    assert labels.values.tolist() == [0, 2, 1, 2] and labels.values.dtype == np.int64
    assert labels.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert len(encode_labels(examples_of(tmp_path, [0, 1]), num_labels=4).id2label) == 4
    with pytest.raises(DataError, match=r"train.jsonl:2: label '7' is not one of the classes 0..1"):
        encode_labels(examples_of(tmp_path, [0, 7]), num_labels=2)


def test_string_labels_are_sorted_names_or_in_the_order_given(tmp_path):
    train = examples_of(tmp_path, ["pos", "neg", "neutral", "pos"])
    labels = encode_labels(train)
    assert labels.id2label == {0: "neg", 1: "neutral", 2: "pos"} and labels.values.tolist() == [2, 0, 1, 2]
    ordered = encode_labels(train, names=["pos", "neutral", "neg"])
    assert ordered.values.tolist() == [0, 2, 1, 0]
    with pytest.raises(DataError, match=r"train.jsonl:3: label 'neutral' is not one of the classes of --labels"):
        encode_labels(train, names=["pos", "neg"])
    numbers = encode_labels(examples_of(tmp_path, [-1, 10, 0, 2]))  # not all ids: names, in numeric order
    assert list(numbers.id2label.values()) == ["-1", "0", "2", "10"]


def test_a_dev_label_never_seen_in_training_names_its_line(tmp_path):
    id2label = encode_labels(examples_of(tmp_path, ["pos", "neg"])).id2label
    dev = examples_of(tmp_path, ["neg", "pos", "meh"], name="dev.jsonl")
    with pytest.raises(DataError, match=r"dev.jsonl:3: label 'meh' is not one of the classes the model was "
                                        r"trained on \(neg, pos\)"):
        encode_labels(dev, id2label=id2label)
    assert encode_labels(examples_of(tmp_path, ["pos"], "ok.jsonl"), id2label=id2label).values.tolist() == [1]
    ids = examples_of(tmp_path, [1, 0], name="ints.jsonl")  # a model of integer labels takes them as ids
    assert encode_labels(ids, id2label={0: "LABEL_0", 1: "LABEL_1"}).values.tolist() == [1, 0]


def test_bad_labels(tmp_path):
    with pytest.raises(DataError, match=r"train.jsonl:2: the 'label' column is empty"):
        encode_labels(examples_of(tmp_path, ["pos", " "]))
    with pytest.raises(DataError, match=r"train.jsonl:1: the 'label' column holds \[1, 2\], expected one label "
                                        r"\(several labels: --problem-type multi_label_classification\)"):
        encode_labels(examples_of(tmp_path, [[1, 2]]))
    with pytest.raises(DataError, match=r"train.jsonl:2: the 'label' column holds \"high\", expected a finite number"):
        encode_labels(examples_of(tmp_path, [0.5, "high"]), "regression")
    with pytest.raises(DataError, match=r"train.jsonl:1: the 'label' column holds null"):
        encode_labels(examples_of(tmp_path, [None]))
    with pytest.raises(ValueError, match="unknown problem_type 'ranking'"):
        encode_labels(examples_of(tmp_path, [1]), "ranking")


def test_regression_and_multi_label(tmp_path):
    scores = encode_labels(examples_of(tmp_path, [0.5, "3.25", 5]), "regression")
    assert scores.values.dtype == np.float32 and scores.values.tolist() == [0.5, 3.25, 5.0]
    assert scores.id2label == {0: "LABEL_0"}
    several = encode_labels(examples_of(tmp_path, [["sports", "news"], [], ["tech"]]), "multi_label_classification")
    assert several.id2label == {0: "news", 1: "sports", 2: "tech"}
    np.testing.assert_array_equal(several.values, [[1, 1, 0], [0, 0, 0], [0, 0, 1]])
    path = write(tmp_path, "m.csv", 'text,label\na,"news, tech"\nb,tech\n')  # joined by the separator in a csv
    joined = encode_labels(read_examples(path), "multi_label_classification", id2label=several.id2label)
    np.testing.assert_array_equal(joined.values, [[1, 0, 1], [0, 0, 1]])
    semicolons = write(tmp_path, "s.tsv", "text\tlabel\na\tnews;sports\n")
    assert encode_labels(read_examples(semicolons), "multi_label_classification",
                         separator=";").id2label == {0: "news", 1: "sports"}


# ---- what the fuzzing found (bench/fuzz.py's data target; docs/reliability.md) ---------------------
@pytest.mark.parametrize("label", ["²", "١", "9" * 5000, "01"])
def test_labels_that_only_look_like_class_ids_are_names(tmp_path, label):
    """int() raised on '²' and on 5000 digits (a bare ValueError naming no file) and read '١'
    (Arabic-Indic one) as 1: a class id is written 0, 1, 2, ... in ASCII digits, else it is a name."""
    path = write(tmp_path, "train.tsv", f"sentence\tlabel\nfine\t1\nfine\t{label}\n")
    labels = encode_labels(read_examples(path))
    assert sorted(labels.id2label.values()) == sorted(["1", label])
    with pytest.raises(DataError, match=r"train.tsv:3: label '.*' is not one of the classes the model"):
        encode_labels(read_examples(path), id2label={0: "LABEL_0", 1: "LABEL_1"})


def test_a_regression_label_must_be_a_finite_number(tmp_path):
    path = write(tmp_path, "train.tsv", "sentence\tlabel\nfine\t1.5\nhuge\t" + "9" * 400 + "\n")
    with pytest.raises(DataError, match=r"train.tsv:3: the 'label' column holds .*, expected a finite number"):
        encode_labels(read_examples(path), "regression")


def test_rows_end_where_csv_ends_them(tmp_path):
    """Lines end at \\n, \\r\\n or \\r (mixed in one file, too), as Python's csv module reads them;
    str.splitlines would also cut at \\f, \\v, \\x85, U+2028 and U+2029 and split a text in two."""
    texts = ["page\x0cbreak", "next\u2028line", "vertical\x0btab", "nel\x85here", "plain"]
    content = "\ufeffsentence\tlabel\r\n" + "\r".join(f"{t}\t1" for t in texts[:3]) + "\n" + texts[3] + "\t0\r\n"
    assert read_examples(write(tmp_path, "train.tsv", content + texts[4] + "\t1")).texts == texts
    lines = "\r\n".join(json.dumps({"text": t, "label": 1}, ensure_ascii=False) for t in texts)
    assert read_examples(write(tmp_path, "train.jsonl", lines)).texts == texts


def test_jsonl_lines_end_at_a_line_feed_alone(tmp_path):
    """JSON Lines' spec (jsonlines.org): a line ends at \\n, and a \\r is JSON's whitespace, so CRLF
    reads as LF and an object may hold a \\r between its members; a lone \\r ends no line (the fuzzer
    found the reader cutting there, where the spec has one line, which json refuses), and a line of
    \\f or U+2028 is not blank (str.strip() took them for whitespace; JSON does not)."""
    path = write(tmp_path, "train.jsonl", '{"text": "a",\r"label": 1}\r\n \t\r\n{"text": "b", "label": 0}')
    assert read_examples(path).texts == ["a", "b"] and read_examples(path).lines == [1, 3]
    with pytest.raises(DataError, match=r"train.jsonl:1: not valid JSON \(Extra data at column 27\)"):
        read_examples(write(tmp_path, "train.jsonl", '{"text": "a", "label": 1}\r{"text": "b", "label": 0}\r'))
    for blank in ("\x0c", "\u2028"):
        with pytest.raises(DataError, match=r"train.jsonl:2: not valid JSON \(Expecting value at column 1\)"):
            read_examples(write(tmp_path, "train.jsonl", f'{{"text": "a", "label": 1}}\n{blank}\n'))


GOOD = '{"text": "fine", "label": 1}\n'


@pytest.mark.parametrize("content, message", [
    (GOOD + '{"text": "x", "label": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
     r"train.jsonl:2: JSON nested too deeply to read"),  # was a RecursionError
    (GOOD + '{"text": "x", "label": ' + "1" * 5000 + "}\n",
     r"train.jsonl:2: not valid JSON here \(Exceeds the limit \(4300 digits\) for integer string conversion\)$"),
    (GOOD + '{"text": "x", "label": 1, "meta": {"a": 1, "a": 2}}\n', r"train.jsonl:2: an object has the key 'a'"),
    (GOOD + '{"text": "bin\x00ary", "label": 1}\n', r"train.jsonl:2: a NUL byte"),
    (GOOD + '{"text": "tab\tinside", "label": 1}\n',
     r"train.jsonl:2: not valid JSON \(Invalid control character at column 14\)"),  # not '... at at column'
    (GOOD + "\ufeff" + GOOD, r"train.jsonl:2: a byte-order mark \(U\+FEFF\) starts this line, not the file"),
    (GOOD + '{"text": "half \\ud800 a pair", "label": 1}\n',
     r"train.jsonl:2: the 'text' column holds a lone surrogate U\+D800"),
    ("\n\n" + '{"sentence": "fine", "score": 1}\n', r"train.jsonl:3: no label column"),  # the first object's line
    ('[1, 2]\n', r"train.jsonl:1: expected a JSON object \(one example a line\), got \[1, 2\]$"),
    (GOOD + '{"text": "' + "x" * 10_000 + '", "label": 0}\n' + '"cut', r"train.jsonl:3: not valid JSON"),
])
def test_jsonl_faults_the_fuzzing_found(tmp_path, content, message):
    """Each names its line; the first four escaped as other exceptions or named no line."""
    with pytest.raises(DataError, match=message):
        read_examples(write(tmp_path, "train.jsonl", content))


def test_a_byte_that_is_not_utf8_names_its_line(tmp_path):
    """The error named the file alone, and its byte offset came from the decoder's chunk (csv reads
    8 KB at a time) and left out the byte-order mark; now: the line, and the offset in the file."""
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() * 2 + b'{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:3: not UTF-8 text \(invalid start byte at byte 71 of the file\)"):
        read_examples(path)
    path = tmp_path / "train.csv"  # csv's lines end at \r too
    path.write_bytes(b"\xef\xbb\xbfsentence,label\r\n" + b"fine,1\n" * 2000 + b"ok,1\rbad\xff,0\n")
    with pytest.raises(DataError, match=r"train.csv:2003: not UTF-8 text \(invalid start byte at byte 14027 of"):
        read_examples(path)


def test_a_label_nested_deep_is_shown_short(tmp_path):
    """A label 900 lists deep passes json (its limit is near 1000) but not json.dumps at the depth an
    error is raised: the message shows the value cut short either way."""
    path = write(tmp_path, "train.jsonl", '{"text": "x", "label": ' + "[" * 900 + "]" * 900 + "}\n")
    with pytest.raises(DataError, match=r"train.jsonl:1: the 'label' column holds \[\[\[") as caught:
        encode_labels(read_examples(path))
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("name", ["train.tsv", "train.csv"])
def test_a_nul_byte_is_an_error_naming_the_line(tmp_path, name):
    separator = "\t" if name.endswith("tsv") else ","
    path = write(tmp_path, name, f"sentence{separator}label\nfine{separator}1\nbin\x00ary{separator}0\n")
    with pytest.raises(DataError, match=rf"{name}:3: a NUL byte"):
        read_examples(path)


def test_a_bad_quote_in_the_header_names_line_1(tmp_path):
    """csv.Error escaped from the header's read (the fuzzer's first find in the csv reader)."""
    with pytest.raises(DataError, match=r"train.csv:1: not valid CSV: ',' expected after '\"'"):
        read_examples(write(tmp_path, "train.csv", '"sentence"x,label\nfine,1\n'))


def test_an_integer_label_that_would_make_more_classes_than_rows_is_refused(tmp_path):
    """'999999999' made a billion classes, and the fuzzer's worker ran out of memory building their names."""
    path = write(tmp_path, "train.tsv", "sentence\tlabel\nfine\t1\ndull\t999999999\n")
    with pytest.raises(DataError, match=r"train.tsv:3: label 999999999 would make 1000000000 classes .* for 2 rows"):
        encode_labels(read_examples(path))


def test_a_class_id_with_separator_characters_around_it(tmp_path):
    """'\x1f1' passed the class-id check (str.strip() removes \x1c-\x1f) but not int() (the fuzzer's find)."""
    path = write(tmp_path, "train.tsv", "sentence\tlabel\nfine\t\x1f1\ndull\t0\x1d\x1d\n")
    assert encode_labels(read_examples(path)).values.tolist() == [1, 0]


def test_a_column_named_twice_is_an_error(tmp_path):
    """'sentence, label, label': which label? The fuzzer found the reader taking the last and the csv
    oracle the first; neither is ours to guess."""
    with pytest.raises(DataError, match=r"train.tsv:1: the header names the column\(s\) \['label'\] more than once"):
        read_examples(write(tmp_path, "train.tsv", "sentence\tlabel\tlabel\nfine\t1\t0\n"))
    with pytest.raises(DataError, match=r"train.jsonl:2: an object has the key 'label' more than once"):
        read_examples(write(tmp_path, "train.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 1, "label": 0}\n'))
