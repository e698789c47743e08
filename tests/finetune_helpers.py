"""A tiny tokenizer, a tiny BERT and a toy sentiment set, for fast fine-tuning tests."""
import numpy as np

import minillm as mm
from minillm.models.bert import BertConfig, BertForSequenceClassification
from minillm.tokenizer import BertTokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "fun", "charming", "moving"]
NEGATIVE = ["bad", "awful", "boring", "dull", "flat"]
NEUTRAL = ["the", "a", "movie", "film", "is", "was", "very", "plot", "and", "acting", "quite", "story", "."]
TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=24, type_vocab_size=2)


def tiny_tokenizer(folder):
    """An uncased WordPiece tokenizer over the toy vocabulary, saved in ``folder``."""
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + POSITIVE + NEGATIVE + NEUTRAL) + "\n")
    return BertTokenizer.from_vocab(vocab)


def tiny_model(seed=0, dropout=0.1, num_labels=2):
    mm.manual_seed(seed)
    config = BertConfig(vocab_size=len(SPECIALS + POSITIVE + NEGATIVE + NEUTRAL), num_labels=num_labels,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **TINY)
    return BertForSequenceClassification(config)


def tiny_model_folder(folder, head=True):
    """A tiny pretrained-style model folder (config, weights, tokenizer) in ``folder``; head=False: the
    encoder alone, as a pretrained checkpoint (all-MiniLM-L6-v2), so any number of labels fits."""
    tokenizer = tiny_tokenizer(folder)
    model = tiny_model(0)
    (model if head else model.bert).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def toy_splits(folder):
    """(tokenizer, train, dev): the toy task's 40 training and 20 dev texts, tokenized (the tokenizer in folder)."""
    from minillm.data import TextClassificationDataset
    tokenizer = tiny_tokenizer(folder)
    train = TextClassificationDataset(tokenizer, *toy_texts(40, seed=1), max_length=24)
    dev = TextClassificationDataset(tokenizer, *toy_texts(20, seed=2), max_length=24)
    return tokenizer, train, dev


def toy_texts(n, seed=0, max_words=9):
    """n sentences of neutral words and one sentiment word; label 1 when it is positive."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(NEUTRAL, rng.integers(1, max_words)))
        words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(POSITIVE if label else NEGATIVE)))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def poison_loss(monkeypatch, model, step):
    """Make the loss of ``model``'s ``step``-th forward call (1-based) NaN, as a diverged step's."""
    forward, calls = model.forward, []

    def poisoned(*args, **kwargs):
        out = forward(*args, **kwargs)
        calls.append(1)
        if len(calls) == step:
            out.loss.data = out.loss.data * np.float32("nan")
        return out

    monkeypatch.setattr(model, "forward", poisoned)
