"""Fill in the blanks: a masked-LM's guesses for each [MASK] of a text, as transformers' fill-mask
pipeline gives them.

    model = BertForMaskedLM.from_pretrained(folder)
    tok = BertTokenizer.from_pretrained(folder)
    fill_mask(model, tok, "the film was [MASK] .", top_k=3)
    # [{"score": 0.21, "token": 2204, "token_str": "good", "sequence": "the film was good."}, ...]

At each [MASK] the model's scores over the vocabulary go through a softmax, and the top_k tokens
come back best first, each with its probability (``score``), its id (``token``), its text
(``token_str``) and the input with that token in the blank (``sequence``). With several [MASK]s in
one text each blank is scored on its own (the probabilities are per blank, not joint), and the
sequence keeps the special tokens ([CLS], the other [MASK]s), as the pipeline does.
"""
import numpy

from . import backend
from .tensor import no_grad


def fill_mask(model, tokenizer, text_or_texts, top_k=5):
    """The top_k fillers of every [MASK] of ``text_or_texts`` under ``model`` (a BertForMaskedLM or
    BertForPreTraining), shaped as transformers' pipeline("fill-mask") returns them:

    one text with one [MASK]:  [{"score", "token", "token_str", "sequence"}, ...]  (top_k dicts)
    one text with n [MASK]s:   n such lists, one per blank, left to right
    a list of texts:           one of the above per text (a list of one text: that text's result,
                               as the pipeline does)

    The texts are run as one padded batch in eval mode (the model is put back in the mode it was in).
    A text without the tokenizer's mask token is a ValueError naming it.
    """
    texts = [text_or_texts] if isinstance(text_or_texts, str) else list(text_or_texts)
    if not texts:
        raise ValueError("fill_mask: no texts given")
    mask_token = tokenizer.special_tokens["mask_token"]
    mask_id = _token_id(tokenizer, mask_token)
    batch = tokenizer(texts)
    ids = batch["input_ids"]
    for i, row in enumerate(ids):
        if not (row == mask_id).any():
            raise ValueError(f"fill_mask: text {i} ({texts[i]!r}) has no {mask_token} token to fill")
    vocab = model.config.vocab_size
    if not 1 <= top_k <= vocab:
        raise ValueError(f"fill_mask: top_k must be in [1, vocab_size={vocab}], got {top_k}")
    probabilities = _mask_probabilities(model, batch, ids == mask_id)  # (number of blanks, V)
    results, blank = [], 0
    for row in ids:
        positions = numpy.flatnonzero(row == mask_id)
        tokens = row[row != tokenizer.pad_token_id]
        single = len(positions) == 1
        per_blank = []
        for position in positions:
            per_blank.append(_candidates(tokenizer, tokens, position, probabilities[blank], top_k, single))
            blank += 1
        results.append(per_blank[0] if single else per_blank)
    return results[0] if len(results) == 1 else results


def _mask_probabilities(model, batch, blanks):
    """softmax of the model's scores at the ``blanks`` (B, L) of the batch: (number of blanks, V),
    in row-major order, float32 as the pipeline computes them."""
    with model.evaluating(), no_grad():
        out = model(**batch)
    logits = out.logits if hasattr(out, "logits") else out.prediction_logits   # (B, L, V)
    scores = backend.to_host(logits.data)[blanks]
    scores = numpy.exp(scores - scores.max(axis=-1, keepdims=True))
    return scores / scores.sum(axis=-1, keepdims=True)


def _candidates(tokenizer, tokens, position, probabilities, top_k, skip_special_tokens):
    """The top_k tokens of one blank (at ``position`` of the unpadded ``tokens``), best first; a tie
    goes to the lower id."""
    best = numpy.argsort(-probabilities, kind="stable")[:top_k]
    rows = []
    for token in best:
        filled = tokens.copy()
        filled[position] = token
        rows.append({"score": float(probabilities[token]), "token": int(token),
                     "token_str": tokenizer.decode([token], skip_special_tokens=False),
                     "sequence": tokenizer.decode(filled, skip_special_tokens=skip_special_tokens)})
    return rows


def _token_id(tokenizer, token):
    """The id of a special ``token`` (it encodes to itself alone)."""
    ids = tokenizer(token, padding=False, add_special_tokens=False)["input_ids"][0]
    if len(ids) != 1:
        raise ValueError(f"fill_mask: the tokenizer splits its mask token {token!r} into {len(ids)} tokens")
    return int(ids[0])
