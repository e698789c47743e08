"""Masked-language-model batches: BERT's masking recipe, as transformers' DataCollatorForLanguageModeling.

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    batch = collator([data[0], data[1]])     # input_ids with masks, labels -100 but where chosen
    held_out = collator.fixed_masks(dev)      # the same masks every time it is read (evaluation)

The recipe (Devlin et al. 2018; google-research/bert's create_pretraining_data.py): each token that
is not special (and not padding) is chosen with probability ``mlm_probability``. A chosen token's
label is its id, every other label is -100 (cross-entropy leaves those out), and its input is
[MASK] with probability 0.8, a random token with 0.1, and stays itself with the remaining 0.1: the
model cannot tell which tokens it will be asked about, so it must represent every one, and the
[MASK] it never sees in fine-tuning is only 80% of the signal.

The draws are those of transformers' numpy collator, in its order (a Bernoulli per token for the
choice, one for [MASK], one for random among the rest, then the random ids), so with the same seed
both give the same batch. Without a seed they come from minillm's generator (minillm.random), the
one the Trainer's checkpoints save and restore, so a resumed run masks its batches as the
uninterrupted run did.

Whole-word masking (``whole_word_mask=True``, Google's later BERT models): the words are chosen,
each with probability ``mlm_probability``, and all of a chosen word's pieces are masked together
(a WordPiece word is a piece and the "##" pieces after it: "play ##ing"), so the model cannot guess
"##ing" from "play"; each piece then gets the 80/10/10 treatment as google-research/bert gives it
(transformers 5 masks the whole word with [MASK] only, and finds words by character offsets).
"""
import numpy

from .. import random
from ..ops import IGNORE_INDEX
from .dataset import Dataset
from .loader import pad_batch

CONTINUATION = "##"  # a WordPiece piece that continues the word before it


class DataCollatorForLanguageModeling:
    """A list of tokenized examples -> a padded masked-LM batch.

    examples: dicts with "input_ids" (L_i,), optional "token_type_ids" (L_i,), and any scalar fields
    (e.g. "next_sentence_label", stacked as they are). An example that already carries "labels"
    (L_i,) (fixed_masks) is padded, not masked again.
    Returns pad_batch's "input_ids", "token_type_ids", "attention_mask" (B, L) int64, with the
    chosen tokens replaced, and "labels" (B, L) int64: the original id where chosen, -100 elsewhere.

    seed: None draws from minillm's generator (restored by the Trainer's resume); an int gives the
    collator its own numpy Generator, as transformers' ``seed=`` does.
    """

    def __init__(self, tokenizer, mlm_probability=0.15, mask_replace_prob=0.8, random_replace_prob=0.1,
                 whole_word_mask=False, seed=None):
        for name, p in (("mlm_probability", mlm_probability), ("mask_replace_prob", mask_replace_prob),
                        ("random_replace_prob", random_replace_prob)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {p!r}")
        if mask_replace_prob + random_replace_prob > 1:
            raise ValueError(f"mask_replace_prob + random_replace_prob must not exceed 1, got "
                             f"{mask_replace_prob} + {random_replace_prob}")
        self.mlm_probability, self.whole_word_mask = float(mlm_probability), whole_word_mask
        self.mask_replace_prob, self.random_replace_prob = float(mask_replace_prob), float(random_replace_prob)
        self.vocab_size = len(tokenizer)  # random replacements range over every id, as transformers'
        tokens = tokenizer.convert_ids_to_tokens(range(self.vocab_size))
        special = special_token_ids(tokenizer, tokens)
        self.pad_token_id, self.mask_token_id = special["pad_token"], special["mask_token"]
        self.is_special = numpy.zeros(self.vocab_size, dtype=bool)  # transformers' all_special_ids
        self.is_special[list(special.values())] = True
        self.is_continuation = numpy.array([t.startswith(CONTINUATION) for t in tokens])
        self._own_generator = None if seed is None else numpy.random.default_rng(seed)

    def __call__(self, examples):
        fixed = "labels" in examples[0]
        batch = pad_batch([{k: e[k] for k in ("input_ids", "token_type_ids") if k in e} for e in examples],
                          self.pad_token_id)
        for key in examples[0]:
            if key not in ("input_ids", "token_type_ids", "labels"):
                batch[key] = numpy.array([e[key] for e in examples], dtype=numpy.int64)
        if fixed:
            batch["labels"] = numpy.full_like(batch["input_ids"], IGNORE_INDEX)
            for row, e in enumerate(examples):
                batch["labels"][row, :len(e["labels"])] = e["labels"]
        else:
            never = batch["attention_mask"] == 0
            batch["input_ids"], batch["labels"] = self.mask_tokens(batch["input_ids"], never)
        return batch

    @property
    def generator(self):
        """The Generator the masks come from (minillm's is looked up at each use: manual_seed replaces it)."""
        return random.generator() if self._own_generator is None else self._own_generator

    def mask_tokens(self, input_ids, never=None, generator=None):
        """(masked input_ids, labels) for int ids of any shape (..., L); ``never``: a boolean array
        of that shape marking more tokens never to choose (padding). Special tokens are never chosen."""
        rng = self.generator if generator is None else generator
        inputs = numpy.array(input_ids, dtype=numpy.int64)
        special = self.is_special[inputs] if never is None else self.is_special[inputs] | never
        chosen = self._choose(inputs, special, rng)
        labels = numpy.where(chosen, inputs, IGNORE_INDEX)
        masked = rng.binomial(1, self.mask_replace_prob, size=inputs.shape).astype(bool) & chosen
        inputs[masked] = self.mask_token_id
        if self.mask_replace_prob == 1 or self.random_replace_prob == 0:
            return inputs, labels
        # random among the chosen tokens not masked: 0.1 / (1 - 0.8) = half of them
        share = self.random_replace_prob / (1 - self.mask_replace_prob)
        replaced = rng.binomial(1, share, size=inputs.shape).astype(bool) & chosen & ~masked
        inputs[replaced] = rng.integers(0, self.vocab_size, size=int(replaced.sum()), dtype=numpy.int64)
        return inputs, labels

    def _choose(self, inputs, special, rng):
        """The chosen tokens (boolean, inputs' shape): each non-special token, or with whole-word
        masking each word's first piece, with probability mlm_probability (then the word's pieces)."""
        starts = ~special if not self.whole_word_mask else word_starts(self.is_continuation[inputs], special)
        chosen = rng.binomial(1, numpy.where(starts, self.mlm_probability, 0.0), size=inputs.shape).astype(bool)
        if not self.whole_word_mask:
            return chosen
        # each piece takes the choice of the latest word start at or before it (specials end words)
        positions = numpy.broadcast_to(numpy.arange(inputs.shape[-1]), inputs.shape)
        latest = numpy.maximum.accumulate(numpy.where(starts | special, positions, -1), axis=-1)
        return numpy.take_along_axis(chosen, numpy.maximum(latest, 0), axis=-1) & (latest >= 0) & ~special

    def fixed_masks(self, dataset, seed=0):
        """``dataset`` masked once: item i drawn from a Generator seeded with (seed, i), so evaluation
        reads the same held-out masks every epoch, whatever the batching (and draws nothing from the
        training run's generator)."""
        return MaskedDataset(self, dataset, seed)


class MaskedDataset(Dataset):
    """A dataset's examples with their masks drawn once (DataCollatorForLanguageModeling.fixed_masks):
    item i adds "labels" (L_i,) and replaces "input_ids"; the collator pads such items as they are."""

    def __init__(self, collator, dataset, seed):
        self.items = []
        for i in range(len(dataset)):
            example = dict(dataset[i])
            example["input_ids"], example["labels"] = collator.mask_tokens(
                example["input_ids"], generator=numpy.random.default_rng([seed, i]))
            self.items.append(example)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def word_starts(is_continuation, special):
    """Where each WordPiece word begins: a piece that is not special and is not a "##" continuation,
    or is one right after a special token or at the start (a block cut mid-word starts a word)."""
    after_special = numpy.ones_like(special)
    after_special[..., 1:] = special[..., :-1]
    return ~special & (~is_continuation | after_special)


def special_token_ids(tokenizer, tokens=None):
    """{"cls_token": id, "sep_token": ..., "pad_token", "mask_token", "unk_token"} of ``tokenizer``
    (``tokens``: its tokens by id, if already listed)."""
    tokens = tokens or tokenizer.convert_ids_to_tokens(range(len(tokenizer)))
    return {key: tokens.index(token) for key, token in tokenizer.special_tokens.items()}
