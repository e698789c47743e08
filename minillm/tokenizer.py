"""BERT's WordPiece tokenizer, over the Rust `tokenizers` library (what Hugging Face's fast tokenizer runs).

    tok = BertTokenizer.from_pretrained("all-MiniLM-L6-v2")
    batch = tok(["a first sentence", "a second one"])         # padded to the longest
    batch["input_ids"]       (B, L) int64: [CLS] tokens [SEP] [PAD] ...
    batch["token_type_ids"]  (B, L) int64: 0 for the first text, 1 for the second of a pair
    batch["attention_mask"]  (B, L) int64: 1 for tokens, 0 for padding

The pipeline, as BERT defines it: normalize (clean control characters, put spaces around CJK
characters, lower-case and strip accents for uncased models), split on whitespace and punctuation,
split each word into the longest vocabulary pieces ("playing" -> "play", "##ing"), then add [CLS]
and [SEP]. A folder's tokenizer.json holds that pipeline; without one it is built from vocab.txt and
the settings of tokenizer_config.json, as Hugging Face converts a slow tokenizer.
"""
import json
import os

import numpy
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from . import safetensors_io

SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                  "mask_token": "[MASK]"}
PADDING = {True: "longest", "longest": "longest", "max_length": "max_length", False: None, "do_not_pad": None}
TRUNCATION = {True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
              "only_second": "only_second", False: None, "do_not_truncate": None}


def _inserted_ids(processor):
    """The token ids a post-processor of tokenizer.json inserts: TemplateProcessing's special_tokens
    ({"[CLS]": {"ids": [101], ...}}), BertProcessing's and RobertaProcessing's "cls" and "sep"
    ([token, id]), within a Sequence's "processors" too."""
    if not isinstance(processor, dict):
        return []
    ids = [i for token in (processor.get("special_tokens") or {}).values() for i in token.get("ids", [])]
    ids += [pair[1] for pair in (processor.get(key) for key in ("cls", "sep")) if isinstance(pair, list)]
    return ids + [i for inner in processor.get("processors") or [] for i in _inserted_ids(inner)]


class BertTokenizer:
    """Text -> input_ids, token_type_ids, attention_mask, as Hugging Face's BertTokenizerFast.

    tokenizer: a ``tokenizers.Tokenizer``; settings: tokenizer_config.json's values (do_lower_case,
    strip_accents, tokenize_chinese_chars, model_max_length, the special tokens).
    """

    def __init__(self, tokenizer, settings=None):
        self._tokenizer = tokenizer
        self.settings = dict(settings or {})
        self.special_tokens = {k: self.settings.get(k, v) for k, v in SPECIAL_TOKENS.items()}
        for key, token in self.special_tokens.items():
            if tokenizer.token_to_id(token) is None:
                raise ValueError(f"{key} {token!r} is not in the vocabulary")
        self.pad_token_id = tokenizer.token_to_id(self.special_tokens["pad_token"])
        self.model_max_length = self.settings.get("model_max_length")

    # ---- building ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path):
        """From a folder with tokenizer.json or vocab.txt (+ tokenizer_config.json), or a known model name.
        A file that cannot be used is a CheckpointError naming it."""
        from . import pretrained

        path = os.path.expanduser(os.fspath(name_or_path))
        folder = path if os.path.isdir(path) else pretrained.resolve(path)
        settings = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the second one wins, as in HF
            settings.update(_read_settings(os.path.join(folder, name)))
        pipeline, vocab = os.path.join(folder, "tokenizer.json"), os.path.join(folder, "vocab.txt")
        source = pipeline if os.path.isfile(pipeline) else vocab
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{folder}: no tokenizer.json or vocab.txt, so no tokenizer can be built")
        try:
            if source == pipeline:
                tokenizer = _rust_call(pipeline, tokenizers.Tokenizer.from_file, pipeline)
                _rust_call(pipeline, _encode_once, tokenizer)
                return cls(tokenizer, settings)
            return cls.from_vocab(vocab, **settings)
        except safetensors_io.CheckpointError:
            raise
        except ValueError as err:  # the special tokens are not in the vocabulary
            raise safetensors_io.CheckpointError(f"{source}: {err}") from None

    @classmethod
    def from_vocab(cls, vocab_file, do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True, **settings):
        """BERT's pipeline around a vocab.txt (one token per line, the line number is its id).
        strip_accents=None means: strip them when lower-casing, as BERT's uncased models do."""
        special = {k: settings.get(k, v) for k, v in SPECIAL_TOKENS.items()}
        wordpiece = _rust_call(vocab_file, models.WordPiece.from_file, os.fspath(vocab_file), unk_token=special["unk_token"])
        tok = tokenizers.Tokenizer(wordpiece)
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
                                                    strip_accents=strip_accents, lowercase=do_lower_case)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        cls_token, sep_token = special["cls_token"], special["sep_token"]
        cls_id, sep_id = tok.token_to_id(cls_token), tok.token_to_id(sep_token)
        if cls_id is None or sep_id is None:
            raise ValueError(f"{vocab_file}: the vocabulary lacks {cls_token!r} or {sep_token!r}")
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls_token}:0 $A:0 {sep_token}:0", pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
            special_tokens=[(cls_token, cls_id), (sep_token, sep_id)])
        tok.decoder = decoders.WordPiece(prefix="##")
        tok.add_special_tokens([t for t in special.values() if tok.token_to_id(t) is not None])
        settings = dict(settings, do_lower_case=do_lower_case, strip_accents=strip_accents,
                        tokenize_chinese_chars=tokenize_chinese_chars)
        return cls(tok, settings)

    # ---- encoding ---------------------------------------------------------------------------------
    def __call__(self, texts, text_pair=None, padding=True, truncation=True, max_length=None,
                 add_special_tokens=True):
        """Encode a text or a list of texts (and, for pairs, ``text_pair`` of the same length).

        padding: True / "longest" (to the longest in the batch), "max_length", or False.
        truncation: True / "longest_first" (trim the longer text of a pair first), "only_first",
        "only_second", or False; to max_length, default the model's model_max_length.
        Returns {"input_ids", "token_type_ids", "attention_mask"}: int64 arrays (B, L).
        """
        texts = _as_batch(texts, "texts")
        pairs = None if text_pair is None else _as_batch(text_pair, "text_pair")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"text_pair has {len(pairs)} texts but texts has {len(texts)}")
        for name, value, choices in (("padding", padding, PADDING), ("truncation", truncation, TRUNCATION)):
            if value not in choices:
                raise ValueError(f"{name}={value!r}: expected one of {list(choices)}")
        limit = max_length if max_length is not None else self.model_max_length
        if PADDING[padding] == "max_length" and limit is None:
            raise ValueError("padding='max_length' needs max_length (this tokenizer has no model_max_length)")
        specials = self._tokenizer.num_special_tokens_to_add(pairs is not None) if add_special_tokens else 0
        if TRUNCATION[truncation] is not None and limit is not None and limit < specials:  # the library ignores it
            raise ValueError(f"max_length={limit} is less than the {specials} special tokens of a "
                             f"{'pair of texts' if pairs is not None else 'text'}: nothing would be left to truncate")
        if pairs is not None and TRUNCATION[truncation] == "longest_first" and limit is not None:
            texts, pairs = self._cut_pairs(texts, pairs, limit)
        self._configure(PADDING[padding], TRUNCATION[truncation], limit)
        inputs = texts if pairs is None else list(zip(texts, pairs))
        encodings = self._encode(inputs, add_special_tokens)
        lengths = {len(e.ids) for e in encodings}
        if len(lengths) > 1:
            raise ValueError(f"the texts have different lengths {sorted(lengths)} and padding=False: "
                             "equal-length arrays need padding=True")
        return {key: numpy.array([getattr(e, attr) for e in encodings], dtype=numpy.int64).reshape(len(encodings), -1)
                for key, attr in (("input_ids", "ids"), ("token_type_ids", "type_ids"),
                                  ("attention_mask", "attention_mask"))}

    def _cut_pairs(self, texts, pairs, limit):
        """Each text of each pair cut to the tokens that truncating the pair to ``limit`` can keep,
        and no further. The tokenizers library truncates a pair by pairing every overflowing piece
        of one text with every piece of the other: two 20 KB texts make 10^5 pieces, 6 GB, in 15 s.
        Its longest-first rule reads a text's length n only as: n itself up to ``limit``; beyond,
        whether it is the longer of the two. So a text of n > limit tokens keeps limit + 1, and
        limit + 2 where both exceed limit and it is the longer: the library then truncates the same
        tokens from the cut pair, at once. Pairs of short texts are left to the library alone."""
        if all(len(a) + len(b) <= 4 * limit for a, b in zip(texts, pairs)):  # too short to blow up
            return texts, pairs
        self._configure(None, None, None)
        encoded = self._encode(list(texts) + list(pairs), add_special_tokens=False)
        cut_texts, cut_pairs = [], []
        for a, b, ea, eb in zip(texts, pairs, encoded[:len(texts)], encoded[len(texts):]):
            na, nb = len(ea.ids), len(eb.ids)
            cut_texts.append(_first_tokens(a, ea, na if na <= limit else limit + 1 + (na > nb > limit)))
            cut_pairs.append(_first_tokens(b, eb, nb if nb <= limit else limit + 1 + (nb > na > limit)))
        return cut_texts, cut_pairs

    def _encode(self, inputs, add_special_tokens):
        try:
            return self._tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens)
        except Exception as err:  # the Rust side raises plain Exceptions (e.g. max_length below the specials)
            raise ValueError(f"tokenizer: {err}") from None

    def _configure(self, padding, truncation, limit):
        """Set the backend's padding and truncation for one call (a tokenizer.json may carry its own)."""
        if truncation is not None and limit is not None:
            self._tokenizer.enable_truncation(limit, strategy=truncation)
        else:
            self._tokenizer.no_truncation()
        if padding is None:
            self._tokenizer.no_padding()
        else:
            self._tokenizer.enable_padding(pad_id=self.pad_token_id, pad_token=self.special_tokens["pad_token"],
                                           length=limit if padding == "max_length" else None)

    def tokenize(self, text):
        """The WordPiece tokens of ``text``, without [CLS] and [SEP]."""
        self._configure(None, None, None)
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def convert_ids_to_tokens(self, ids):
        return [self._tokenizer.id_to_token(int(i)) for i in ids]

    def decode(self, ids, skip_special_tokens=True):
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self):
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self):
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def max_id(self):
        """The largest id this tokenizer can give (vocabulary, added tokens, and the ids its
        post-processor inserts, which tokenizer.json writes apart from the vocabulary): a model's
        embedding table needs more rows than that."""
        processor = self._tokenizer.post_processor
        processor = json.loads(processor.__getstate__()) if processor is not None else None
        return max(list(self._tokenizer.get_vocab(with_added_tokens=True).values()) + _inserted_ids(processor),
                   default=-1)

    # ---- saving -----------------------------------------------------------------------------------
    def save_pretrained(self, folder):
        """tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json (atomically each),
        loadable by Hugging Face's AutoTokenizer / BertTokenizerFast and by from_pretrained."""
        self._configure(None, None, None)  # save the pipeline, not the last call's padding
        safetensors_io.atomic_write(os.path.join(folder, "tokenizer.json"), self._tokenizer.to_str(pretty=True))
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        by_id = sorted(vocab, key=vocab.get)
        safetensors_io.atomic_write(os.path.join(folder, "vocab.txt"), "".join(t + "\n" for t in by_id))
        config = {**self.settings, **self.special_tokens, "tokenizer_class": "BertTokenizer"}
        safetensors_io.atomic_write(os.path.join(folder, "tokenizer_config.json"), json.dumps(config, indent=2) + "\n")
        safetensors_io.atomic_write(os.path.join(folder, "special_tokens_map.json"),
                                json.dumps(self.special_tokens, indent=2) + "\n")


def _as_batch(texts, name):
    batch = [texts] if isinstance(texts, str) else list(texts)
    for i, t in enumerate(batch):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
        try:
            t.encode("utf-8")  # what the Rust side needs; its own error would name neither text nor character
        except UnicodeEncodeError as err:
            raise ValueError(f"{name}[{i}] is not valid Unicode: {t[err.start]!r} at character {err.start} "
                             "is a lone surrogate (half of a UTF-16 pair)") from None
    return batch


# tokenizer_config.json's settings that minillm uses, and the types they must have
SETTING_TYPES = {"do_lower_case": (bool,), "tokenize_chinese_chars": (bool,), "strip_accents": (bool, type(None)),
                 "model_max_length": (int, type(None)), **{name: (str,) for name in SPECIAL_TOKENS}}


def _first_tokens(text, encoding, n):
    """``text`` up to the end of its ``n``-th token (``encoding``: its tokens, with their offsets)."""
    return text if n >= len(encoding.offsets) else text[:encoding.offsets[n - 1][1]]


def _read_settings(path):
    """A tokenizer settings file (tokenizer_config.json, special_tokens_map.json) as a dict, {} when
    absent; each special token's {"content": ...} unwrapped; a CheckpointError naming the file
    when it is no JSON object or a setting minillm uses has the wrong type."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, nested too deep
        raise safetensors_io.CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(values, dict):
        raise safetensors_io.CheckpointError(f"{path}: expected a JSON object, got {type(values).__name__}")
    values = {k: (v["content"] if isinstance(v, dict) and "content" in v else v) for k, v in values.items()}
    for name, types in SETTING_TYPES.items():
        if name in values and type(values[name]) not in types:
            raise safetensors_io.CheckpointError(f"{path}: {name}={values[name]!r} is not supported: expected "
                                                 f"{' or '.join(t.__name__ for t in types)}")
    return values


def _rust_call(path, function, *args, **kwargs):
    """``function`` of the Rust tokenizers library on the file ``path``: its errors are plain
    Exceptions ("expected value at line 3"), and a panic of its Rust code is pyo3's PanicException,
    a BaseException; either is made a CheckpointError that names the file."""
    try:
        return function(*args, **kwargs)
    except BaseException as err:
        if not isinstance(err, Exception) and type(err).__name__ != "PanicException":
            raise  # KeyboardInterrupt, SystemExit
        raise safetensors_io.CheckpointError(f"{path}: the tokenizers library cannot read it ({err})") from None


def _encode_once(tokenizer):
    """Encode a text and a pair with the special tokens: a tokenizer.json whose post-processor names
    a token its own special-token map lacks loads, then panics at the first encode (seen by the
    fuzzer: a template's "[SEP]" mapped under "[SGP]")."""
    tokenizer.encode("a")
    tokenizer.encode("a", "b")
