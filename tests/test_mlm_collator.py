"""The masked-LM collator (minillm/data/language_modeling.py) and the pretraining corpora
(minillm/data/text_corpus.py): BERT's 15% / 80-10-10 recipe over many draws (within 5 sigma),
transformers' collator as the oracle for the exact draws, whole words, fixed held-out masks,
next-sentence pairs, and run_mlm.py's grouping."""
import itertools

import numpy as np
import pytest

import minillm as mm
from minillm.data import DataLoader
from minillm.data.language_modeling import DataCollatorForLanguageModeling, word_starts
from minillm.data.text_corpus import (GroupedTextDataset, LineByLineTextDataset, TextDatasetForNextSentencePrediction,
                                      group_texts, read_text_files, sentence_pairs)
from minillm.tokenizer import BertTokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
STARTS = ["the", "film", "play", "un", "good", "bad", ".", "a", "story", "act"]
PIECES = ["##ing", "##er", "##s", "##believ", "##able", "##ed"]
PAD, UNK, CLS, SEP, MASK = range(5)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + STARTS + PIECES) + "\n")
    return BertTokenizer.from_vocab(vocab)


def random_words(rng, words):
    """[CLS] + ``words`` words of a start piece and 0-3 "##" pieces + [SEP]; the ids and each word's span."""
    ids, spans = [CLS], []
    for _ in range(words):
        begin = len(ids)
        ids.append(5 + int(rng.integers(len(STARTS))))
        ids += list(5 + len(STARTS) + rng.integers(len(PIECES), size=int(rng.integers(4))))
        spans.append((begin, len(ids)))
    return np.array(ids + [SEP]), spans


def examples(n=300, seed=0, unk_every=7):
    """n examples of 5-30 words, some with an [UNK] (special: never chosen), of varied lengths (padding)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ids, _ = random_words(rng, int(rng.integers(5, 30)))
        if i % unk_every == 0:
            ids[1] = UNK
        out.append({"input_ids": ids})
    return out


def test_the_recipe_over_many_draws_is_15_percent_then_80_10_10(tokenizer):
    collator = DataCollatorForLanguageModeling(tokenizer, seed=1)
    data = examples()
    chosen = masked = kept = candidates = 0
    for _ in range(20):
        batch = collator(data)
        original = np.zeros_like(batch["input_ids"])
        for row, e in enumerate(data):
            original[row, :len(e["input_ids"])] = e["input_ids"]
        eligible = (batch["attention_mask"] == 1) & (original >= 5)
        picked = batch["labels"] != -100
        candidates += int(eligible.sum())
        chosen += int(picked.sum())
        masked += int((batch["input_ids"][picked] == MASK).sum())
        kept += int((batch["input_ids"][picked] == original[picked]).sum())
    within_5_sigma(chosen, candidates, 0.15)
    vocab = len(tokenizer)  # a random replacement may draw [MASK] or the token itself
    within_5_sigma(masked, chosen, 0.8 + 0.1 / vocab)
    within_5_sigma(kept, chosen, 0.1 + 0.1 / vocab)


def within_5_sigma(hits, trials, p):
    sigma = np.sqrt(trials * p * (1 - p))
    assert abs(hits - trials * p) < 5 * sigma, (hits, trials, p)


def test_labels_are_the_original_ids_exactly_where_chosen_and_specials_never_are(tokenizer):
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5, seed=2)
    data = examples(100)
    batch = collator(data)
    for row, e in enumerate(data):
        n = len(e["input_ids"])
        labels, inputs = batch["labels"][row], batch["input_ids"][row]
        picked = labels != -100
        assert (labels[picked] == e["input_ids"][picked[:n]]).all()
        assert (inputs[:n][~picked[:n]] == e["input_ids"][~picked[:n]]).all()  # untouched where not chosen
        assert not picked[n:].any() and (inputs[n:] == PAD).all()  # padding: never chosen, still padding
        assert not picked[:n][e["input_ids"] < 5].any()  # [CLS], [SEP], [UNK]: never chosen
    assert (batch["labels"] != -100).sum() > 0.4 * (batch["attention_mask"].sum() - 2 * len(data))


def test_the_same_seed_gives_the_same_masks_and_minillms_generator_seeds_them(tokenizer):
    data = examples(20)
    first, again = (DataCollatorForLanguageModeling(tokenizer, seed=5)(data) for _ in range(2))
    other = DataCollatorForLanguageModeling(tokenizer, seed=6)(data)
    assert all((first[k] == again[k]).all() for k in first)
    assert not (first["labels"] == other["labels"]).all()
    collator = DataCollatorForLanguageModeling(tokenizer)  # no seed: minillm's generator
    mm.manual_seed(7)
    a = collator(data)
    b = collator(data)
    mm.manual_seed(7)
    assert (collator(data)["labels"] == a["labels"]).all() and not (a["labels"] == b["labels"]).all()


def test_the_draws_are_transformers_draws(tokenizer, transformers, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    theirs = transformers.DataCollatorForLanguageModeling(transformers.BertTokenizerFast.from_pretrained(tmp_path),
                                                          return_tensors="np", seed=11)
    ours = DataCollatorForLanguageModeling(tokenizer, seed=11)
    data = examples(64, unk_every=5)
    for _ in range(3):  # one generator each, advancing the same way
        expected = theirs([{"input_ids": e["input_ids"].tolist()} for e in data])
        got = ours(data)
        for key in ("input_ids", "attention_mask", "labels"):
            np.testing.assert_array_equal(got[key], expected[key])


def test_whole_word_masking_masks_every_piece_of_a_chosen_word_and_no_other(tokenizer):
    collator = DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True, seed=3)
    rng = np.random.default_rng(4)
    rows = [random_words(rng, int(rng.integers(5, 30))) for _ in range(200)]
    words = chosen_words = 0
    for _ in range(10):
        batch = collator([{"input_ids": ids} for ids, _ in rows])
        picked = batch["labels"] != -100
        for row, (ids, spans) in enumerate(rows):
            covered = np.zeros(len(picked[row]), dtype=bool)
            for begin, end in spans:
                assert picked[row, begin:end].all() or not picked[row, begin:end].any(), (ids, picked[row])
                covered[begin:end] = True
                chosen_words += int(picked[row, begin])
            assert not picked[row][~covered].any()
            words += len(spans)
    within_5_sigma(chosen_words, words, 0.15)


def test_a_block_cut_mid_word_starts_a_word_at_its_first_piece():
    pieces = np.array([True, False, True, False, True, True])  # "##x" first, then after a special
    special = np.array([False, False, False, True, False, False])
    assert word_starts(pieces, special).tolist() == [True, True, False, False, True, False]


def test_fixed_masks_are_the_same_every_time_and_draw_nothing_from_the_run(tokenizer):
    collator = DataCollatorForLanguageModeling(tokenizer)
    held_out = collator.fixed_masks(examples(50), seed=0)
    mm.manual_seed(3)
    state = mm.random.get_state()
    reads = [[b["labels"] for b in DataLoader(held_out, batch_size, collate_fn=collator)] for batch_size in (8, 8, 50)]
    assert mm.random.get_state() == state
    np.testing.assert_array_equal(np.concatenate([x.ravel() for x in reads[0]]), np.concatenate([x.ravel() for x in reads[1]]))
    per_example = [row[row != -100] for batch in reads[0] for row in batch]
    assert [row[row != -100].tolist() for row in reads[2][0]] == [r.tolist() for r in per_example]
    assert sum(len(r) for r in per_example) > 0


def test_bad_probabilities_are_refused(tokenizer):
    with pytest.raises(ValueError, match="mlm_probability must be in"):
        DataCollatorForLanguageModeling(tokenizer, mlm_probability=1.5)
    with pytest.raises(ValueError, match="must not exceed 1"):
        DataCollatorForLanguageModeling(tokenizer, mask_replace_prob=0.8, random_replace_prob=0.3)


# ---- corpora ---------------------------------------------------------------------------------------


def run_mlm_group_texts(examples, max_seq_length):
    """transformers' examples/pytorch/language-modeling/run_mlm.py group_texts, as written there."""
    concatenated_examples = {k: list(itertools.chain(*examples[k])) for k in examples.keys()}
    total_length = len(concatenated_examples[list(examples.keys())[0]])
    if total_length >= max_seq_length:
        total_length = (total_length // max_seq_length) * max_seq_length
    return {k: [t[i: i + max_seq_length] for i in range(0, total_length, max_seq_length)]
            for k, t in concatenated_examples.items()}


@pytest.mark.parametrize("block", [1, 7, 32, 1000])
def test_group_texts_cuts_the_blocks_run_mlm_cuts(block):
    rng = np.random.default_rng(block)
    sequences = [rng.integers(0, 100, size=int(rng.integers(1, 20))) for _ in range(40)]
    expected = run_mlm_group_texts({"input_ids": [s.tolist() for s in sequences]}, block)["input_ids"]
    assert [b.tolist() for b in group_texts(sequences, block)] == expected


def test_the_grouped_dataset_runs_lines_together_with_their_specials(tokenizer):
    lines = ["the film", "", "a good story .", "bad acting"]
    grouped = GroupedTextDataset(tokenizer, lines, block_size=4)
    ids = np.concatenate([grouped[i]["input_ids"] for i in range(len(grouped))])
    run = tokenizer.convert_ids_to_tokens(ids)
    assert run[:4] == ["[CLS]", "the", "film", "[SEP]"] and run[4:7] == ["[CLS]", "a", "good"]
    assert all(len(grouped[i]["input_ids"]) == 4 for i in range(len(grouped)))
    line_by_line = LineByLineTextDataset(tokenizer, lines, max_length=4)
    assert len(line_by_line) == 3 and line_by_line.lengths.tolist() == [4, 4, 4]  # blank skipped, long cut
    with pytest.raises(ValueError, match="empty.txt: no examples"):
        GroupedTextDataset(tokenizer, ["", "  "], block_size=4, name="empty.txt")


def test_reading_names_the_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nbad \xff here\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: not UTF-8"):
        read_text_files([str(path)])
    (tmp_path / "ok.txt").write_text("one\r\ntwo\n")
    assert read_text_files(str(tmp_path / "ok.txt")) == ["one", "two"]


def test_next_sentence_pairs_are_half_random_and_the_others_true_continuations():
    # sentence j of document d is the one token 1000 d + j: a pair shows where its halves came from
    documents = [[[1000 * d + j] for j in range(500)] for d in range(20)]
    pairs = sentence_pairs(documents, max_tokens=13, rng=np.random.default_rng(0), short_seq_prob=0.0)
    labels = np.array([label for _, _, label in pairs])
    within_5_sigma(int(labels.sum()), len(labels), 0.5)
    for a, b, label in pairs:
        assert len(a) + len(b) <= 13 and a and b
        assert a == list(range(a[0], a[0] + len(a)))  # A: consecutive sentences of one document
        if label == 0:
            assert b == list(range(a[-1] + 1, a[-1] + 1 + len(b)))  # B: what follows A
        else:
            assert b[0] // 1000 != a[0] // 1000  # B: another document


def test_the_pair_dataset_builds_bert_inputs(tokenizer):
    lines = ["the film", "a good story .", "bad acting", "", "play ##ing", "un ##believ ##able", "the end ."]
    data = TextDatasetForNextSentencePrediction(tokenizer, lines, max_length=12, seed=0)
    for i in range(len(data)):
        item = data[i]
        tokens = tokenizer.convert_ids_to_tokens(item["input_ids"])
        first_sep = tokens.index("[SEP]")
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and len(tokens) <= 12
        assert item["token_type_ids"].tolist() == [0] * (first_sep + 1) + [1] * (len(tokens) - first_sep - 1)
        assert item["next_sentence_label"] in (0, 1)
    batch = DataCollatorForLanguageModeling(tokenizer, seed=0)([data[i] for i in range(len(data))])
    assert batch["next_sentence_label"].tolist() == data.labels.tolist()
    assert batch["labels"].shape == batch["input_ids"].shape
