"""A WordPiece vocabulary of your own, trained by the tokenizers library (Hugging Face's Rust trainer).

    tokenizer = train_wordpiece(["corpus.txt"], vocab_size=8000)     # a minillm BertTokenizer
    tokenizer.save_pretrained("my-tokenizer")   # tokenizer.json, vocab.txt, tokenizer_config.json, ...

The trainer starts from the characters of the (normalized, pre-tokenized) corpus, the
``limit_alphabet`` most frequent of them, and adds the merge of two pieces whose pair is most
frequent relative to the pieces' own frequencies, until the vocabulary has ``vocab_size`` entries;
pieces inside a word carry the "##" prefix. The pipeline around it is BERT's (tokenizer.py's
docstring): the same normalizer and pre-tokenizer at training and at use, [CLS] ... [SEP] added,
and the five special tokens first in the vocabulary ([PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4).
"""
import os
import tempfile

from tokenizers.implementations import BertWordPieceTokenizer

from .tokenizer import SPECIAL_TOKENS, BertTokenizer

ORDER = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")  # the ids BERT's vocabularies use


def train_wordpiece(files, vocab_size=8000, lowercase=True, min_frequency=2, limit_alphabet=1000,
                    show_progress=False):
    """A BertTokenizer whose WordPiece vocabulary is trained on the text ``files`` (paths).

    lowercase: an uncased vocabulary (lower-case, accents stripped, as bert-base-uncased) or a cased
    one (False: text as it is). min_frequency: pairs seen fewer times are never merged.
    """
    files = [os.fspath(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else files)]
    if not files:
        raise ValueError("train_wordpiece: no files to train on")
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file to train the vocabulary on")
    if vocab_size < len(ORDER) + 1:
        raise ValueError(f"vocab_size must leave room beyond the {len(ORDER)} special tokens, got {vocab_size}")
    trainer = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=None, clean_text=True,
                                     handle_chinese_chars=True)
    trainer.train(files, vocab_size=vocab_size, min_frequency=min_frequency, limit_alphabet=limit_alphabet,
                  special_tokens=[SPECIAL_TOKENS[key] for key in ORDER], show_progress=show_progress)
    with tempfile.TemporaryDirectory() as folder:  # BERT's pipeline around the vocabulary, as from a vocab.txt
        trainer.save_model(folder)
        return BertTokenizer.from_vocab(os.path.join(folder, "vocab.txt"), do_lower_case=lowercase)
