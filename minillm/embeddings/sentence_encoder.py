"""SentenceEncoder: texts -> one vector each, as sentence-transformers' SentenceTransformer.encode.

    encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    vectors = encoder.encode(["A man is eating food.", "Someone is eating."])   # (2, 384) float32
    vectors @ vectors.T                                                           # cosine similarities

A sentence-transformers folder lists its modules in modules.json, run in that order:

    Transformer   (the folder itself)   the tokenizer, truncating at sentence_bert_config.json's
                                        max_seq_length, and BertModel: last_hidden_state (B, L, E)
    Pooling       (1_Pooling/)          (B, L, E) and the mask -> (B, E): mean, cls, max (pooling.py)
    Normalize     (2_Normalize/)        each vector to unit length, so a dot product is a cosine

A plain Hugging Face folder (no modules.json) gets what sentence-transformers gives it: mean
pooling, no normalization, max_seq_length the smaller of the model's positions and the tokenizer's
model_max_length. save_pretrained writes the sentence-transformers layout back.
"""
import json
import logging
import os

import numpy
from tqdm.auto import tqdm

from .. import __version__, pretrained
from ..models.bert import BertModel
from ..nn import Module
from ..safetensors_io import atomic_write
from ..tensor import Tensor, no_grad
from .pooling import Normalize, Pooling, normalize

logger = logging.getLogger("minillm")

MODULE_TYPES = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize"}  # type -> folder


class SentenceEncoder(Module):
    """BertModel (``bert``), Pooling (``pooling``) and, if the folder lists it, Normalize (``normalize``).

    forward(input_ids, attention_mask, token_type_ids) -> sentence embeddings (B, k E) as a Tensor
    with its graph (what a loss trains); encode(texts) -> a NumPy array, no graph.
    """

    def __init__(self, bert, tokenizer, pooling=None, normalize=True, max_seq_length=None, do_lower_case=False):
        super().__init__()
        self.bert = bert
        self.tokenizer = tokenizer
        self.pooling = pooling if pooling is not None else Pooling(bert.config.hidden_size)
        self.normalize = Normalize() if normalize else None
        positions = bert.config.max_position_embeddings
        self.max_seq_length = min(positions, max_seq_length or tokenizer.model_max_length or positions)
        self.do_lower_case = do_lower_case

    # ---- loading and saving -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path):
        """From a sentence-transformers folder (modules.json: Transformer, Pooling, optionally
        Normalize), a plain Hugging Face folder (mean pooling), or a known name (minillm.pretrained).
        Every small file is read and checked before the weights: the tokenizer and config.json
        (BertModel.tokenizer_and_config), then the modules' files."""
        folder = pretrained.resolve(name_or_path)
        tokenizer, config = BertModel.tokenizer_and_config(folder)
        pooling, normalized, settings = None, False, {}  # a plain folder: mean pooling (see __init__)
        if os.path.isfile(os.path.join(folder, "modules.json")):
            paths = _module_paths(os.path.join(folder, "modules.json"))
            pooling_file = os.path.join(folder, paths["Pooling"], "config.json")
            pooling = Pooling.from_config(_read_json(pooling_file, default=None), pooling_file, config.hidden_size)
            normalized = "Normalize" in paths
            settings = _read_json(os.path.join(folder, "sentence_bert_config.json"))
        return cls(BertModel.from_pretrained(folder, config=config), tokenizer, pooling, normalized,
                   max_seq_length=settings.get("max_seq_length"), do_lower_case=settings.get("do_lower_case", False))

    def save_pretrained(self, folder):
        """A sentence-transformers folder: config.json, model.safetensors and the tokenizer files
        (the Transformer), modules.json, sentence_bert_config.json, 1_Pooling/config.json,
        2_Normalize/ when it normalizes, config_sentence_transformers.json. Each file is written
        atomically; sentence-transformers and SentenceEncoder.from_pretrained both load it."""
        self.bert.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        kinds = ["Transformer", "Pooling"] + (["Normalize"] if self.normalize is not None else [])
        modules = [{"idx": i, "name": str(i), "path": MODULE_TYPES[kind], "type": f"sentence_transformers.models.{kind}"}
                   for i, kind in enumerate(kinds)]
        _write_json(os.path.join(folder, "modules.json"), modules)
        _write_json(os.path.join(folder, "sentence_bert_config.json"),
                    {"max_seq_length": self.max_seq_length, "do_lower_case": self.do_lower_case})
        _write_json(os.path.join(folder, "config_sentence_transformers.json"),
                    {"__version__": {"minillm": __version__}, "prompts": {}, "default_prompt_name": None,
                     "similarity_fn_name": "cosine"})
        self.pooling.save(os.path.join(folder, MODULE_TYPES["Pooling"]))
        if self.normalize is not None:
            os.makedirs(os.path.join(folder, MODULE_TYPES["Normalize"]), exist_ok=True)  # a module without files

    # ---- the model ----------------------------------------------------------------------------------
    def tokenize(self, texts):
        """The Transformer module's input: texts padded to the longest, cut at max_seq_length tokens."""
        texts = [t.lower() for t in texts] if self.do_lower_case else list(texts)
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        """(B, L) ids and mask -> sentence embeddings (B, k E): BertModel, Pooling, Normalize. The padding
        is skipped (BertModel's skip_padding): every pooling mode masks it."""
        token_embeddings = self.bert(input_ids, attention_mask, token_type_ids,
                                     skip_padding=True).last_hidden_state  # (B, L, E), 0 at the padding
        embeddings = self.pooling(token_embeddings, attention_mask)
        return self.normalize(embeddings) if self.normalize is not None else embeddings

    def get_sentence_embedding_dimension(self):
        return len(self.pooling.modes) * self.pooling.word_embedding_dimension

    @no_grad()
    def encode(self, sentences, batch_size=32, show_progress_bar=None, convert_to_numpy=True,
               normalize_embeddings=None):
        """The embeddings of ``sentences`` (a str, or a list of N str): (N, k E) float32, in input
        order ((k E,) for one str), computed in eval mode without a graph.

        As SentenceTransformer.encode: the texts are sorted longest first (by characters) and cut
        into batches of ``batch_size``, so each batch pads little; the rows are put back in input
        order. normalize_embeddings: None or False, the folder's modules decide (a Normalize module
        normalizes); True, normalized in any case. show_progress_bar: None shows one when the
        "minillm" logger logs INFO. convert_to_numpy=False returns a minillm Tensor instead.
        """
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"encode: sentences[{i}] must be a str, got {type(text).__name__}")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"encode: batch_size must be a positive integer, got {batch_size!r}")
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        order = numpy.argsort([-len(t) for t in texts], kind="stable")  # longest first
        out = numpy.empty((len(texts), self.get_sentence_embedding_dimension()), dtype=numpy.float32)
        with self.evaluating():
            for start in tqdm(range(0, len(texts), batch_size), desc="Batches", disable=not show_progress_bar):
                rows = order[start:start + batch_size]
                batch = self.tokenize([texts[i] for i in rows])
                embeddings = self(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                if normalize_embeddings:
                    embeddings = normalize(embeddings)
                out[rows] = embeddings.numpy()
        result = out[0] if single else out
        return result if convert_to_numpy else Tensor(result)


def _module_paths(path):
    """{type: folder} from modules.json, which must list Transformer, Pooling and optionally Normalize,
    in that order (the module types minillm implements)."""
    entries = _read_json(path, default=None)
    kinds = [str(entry.get("type", "")).rsplit(".", 1)[-1] for entry in entries or []]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ValueError(f"{path}: modules {kinds}; minillm reads Transformer, Pooling and optionally Normalize, "
                         "in that order")
    paths = {kind: entry.get("path", "") for kind, entry in zip(kinds, entries)}
    if paths["Transformer"] not in ("", "."):
        raise ValueError(f"{path}: the Transformer module is in {paths['Transformer']!r}; minillm reads it "
                         "from the folder itself")
    return paths


def _read_json(path, default=dict):
    if not os.path.isfile(path):
        if default is None:
            raise FileNotFoundError(path)
        return default()
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None


def _write_json(path, value):
    atomic_write(path, json.dumps(value, indent=2) + "\n")
