"""minillm's masked-LM heads (BertForMaskedLM, BertForPreTraining) against transformers' (the oracle):
logits, losses, every gradient by name, the tie, checkpoints both ways and what loading lists.

Tiny random configs, tied and untied, with and without token types, are built and saved by
transformers itself (weights perturbed, so that biases are not 0 and LayerNorm weights not 1).
"""
import json

import numpy as np
import pytest
from safetensors import safe_open

import minillm as mm
from minillm.models.bert import (BertConfig, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification,
                                 BertModel)

ATOL = 1e-4       # outputs, float32, eval mode
GRAD_RTOL = 1e-3  # per tensor: |g_minillm - g_torch| / |g_torch|
VOCAB = 60
CONFIGS = {  # name: config fields
    "tied-token-types": dict(hidden_size=24, num_attention_heads=3, num_hidden_layers=2, intermediate_size=40,
                             hidden_act="gelu", type_vocab_size=2),
    "untied-token-types": dict(hidden_size=20, num_attention_heads=2, num_hidden_layers=1, intermediate_size=36,
                               hidden_act="gelu_new", type_vocab_size=2, tie_word_embeddings=False),
    "tied-one-type": dict(hidden_size=16, num_attention_heads=4, num_hidden_layers=2, intermediate_size=24,
                          hidden_act="relu", type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5),
    "untied-one-type": dict(hidden_size=16, num_attention_heads=2, num_hidden_layers=1, intermediate_size=20,
                            hidden_act="gelu", type_vocab_size=1, tie_word_embeddings=False),
}
HEADS = {"BertForMaskedLM": BertForMaskedLM, "BertForPreTraining": BertForPreTraining}


def _save_hf(transformers, torch, class_name, fields, folder, seed=0):
    """A random transformers model of ``class_name``, perturbed, saved in ``folder``; returns folder."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=VOCAB, max_position_embeddings=24, **fields)
    model = getattr(transformers, class_name)(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=[(c, h) for c in sorted(CONFIGS) for h in sorted(HEADS)],
                ids=lambda p: f"{p[0]}-{p[1]}")
def saved(request, torch, transformers, tmp_path_factory):
    """(config name, class name, folder): a random tiny model saved by transformers."""
    name, class_name = request.param
    folder = tmp_path_factory.mktemp(f"{name}-{class_name}")
    _save_hf(transformers, torch, class_name, CONFIGS[name], folder, seed=sorted(CONFIGS).index(name))
    return name, class_name, folder


def _batch(config, seed=0, lengths=(9, 5, 1, 7)):
    """ids, mask, types, labels (15%-ish of the real tokens, at least one) and next-sentence labels."""
    rng = np.random.default_rng(seed)
    length = max(lengths)
    mask = (np.arange(length)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(2, VOCAB, (len(lengths), length)), config.pad_token_id)
    types = (np.arange(length)[None, :] >= length // 2) * mask if config.type_vocab_size > 1 else 0 * mask
    chosen = (rng.random(ids.shape) < 0.3) & (mask == 1)
    chosen[0, 1] = True
    labels = np.where(chosen, rng.integers(0, VOCAB, ids.shape), -100)
    return ids, mask, types.astype(np.int64), labels, np.array([0, 1, 1, 0])


def _hf(transformers, class_name, folder):
    return getattr(transformers, class_name).from_pretrained(folder, attn_implementation="eager").eval()


def _call(model, torch, batch, with_labels, **kwargs):
    """model (ours or transformers') on the batch: (scores over the vocabulary, next-sentence logits or None, loss)."""
    ids, mask, types, labels, nsp = batch
    is_hf = torch is not None
    args = [torch.tensor(a) for a in (ids, mask, types)] if is_hf else [ids, mask, types]
    extra = {}
    if with_labels:
        extra["labels"] = torch.tensor(labels) if is_hf else labels
        if type(model).__name__ == "BertForPreTraining":
            extra["next_sentence_label"] = torch.tensor(nsp) if is_hf else nsp
    out = model(input_ids=args[0], attention_mask=args[1], token_type_ids=args[2], **extra, **kwargs)
    scores = out.logits if hasattr(out, "logits") else out.prediction_logits
    return scores, getattr(out, "seq_relationship_logits", None), out.loss


def _np(t):
    return t.detach().numpy() if hasattr(t, "detach") else t.numpy()


def test_logits_and_losses_match_transformers(saved, torch, transformers, device):
    name, class_name, folder = saved
    ours = HEADS[class_name].from_pretrained(folder).to(device)
    theirs = _hf(transformers, class_name, folder)
    batch = _batch(ours.config)
    labelled = batch[3] != -100
    with torch.no_grad():
        ref_scores, ref_nsp, ref_loss = _call(theirs, torch, batch, with_labels=True)
    # without labels: every position, (B, L, V), as transformers
    scores, nsp, loss = _call(ours, None, batch, with_labels=False)
    assert scores.shape == tuple(ref_scores.shape) and loss is None
    assert np.abs(_np(scores) - _np(ref_scores)).max() < ATOL
    # with labels: the labelled rows only, (M, V) in row-major order, and the same loss
    scores, nsp, loss = _call(ours, None, batch, with_labels=True)
    assert scores.shape == (labelled.sum(), VOCAB)
    assert np.abs(_np(scores) - _np(ref_scores)[labelled]).max() < ATOL
    assert abs(loss.item() - ref_loss.item()) < ATOL
    if class_name == "BertForPreTraining":
        assert np.abs(_np(nsp) - _np(ref_nsp)).max() < ATOL
    # full_logits=True: transformers' (B, L, V) with labels too, and still the same loss
    scores, _, loss = _call(ours, None, batch, with_labels=True, full_logits=True)
    assert np.abs(_np(scores) - _np(ref_scores)).max() < ATOL
    assert abs(loss.item() - ref_loss.item()) < ATOL


@pytest.mark.parametrize("full_logits", [False, True])
def test_every_gradient_matches_transformers(saved, torch, transformers, device, full_logits):
    """The tied weight's gradient is the sum of the embedding's and the decoder's (checked against
    transformers' own sum); untied, cls.predictions.bias feeds nothing and has no gradient on either side."""
    name, class_name, folder = saved
    ours = HEADS[class_name].from_pretrained(folder).to(device)
    theirs = _hf(transformers, class_name, folder)
    batch = _batch(ours.config, seed=1)
    _call(ours, None, batch, with_labels=True, full_logits=full_logits)[2].backward()
    _call(theirs, torch, batch, with_labels=True)[2].backward()
    _assert_gradients_match(ours, theirs)


def test_a_label_on_padding_is_scored_as_transformers_scores_it(saved, torch, transformers):
    """Hand-made labels may name a padded position (collators label real tokens only). The masked-LM
    heads skip the padding but keep every labelled position (BertModel's skip_padding), so that row is
    computed as transformers computes it: the same scores, loss and gradients."""
    name, class_name, folder = saved
    ours = HEADS[class_name].from_pretrained(folder)
    theirs = _hf(transformers, class_name, folder)
    ids, mask, types, labels, nsp = _batch(ours.config, seed=2)
    labels[1, 7] = 11
    assert mask[1, 7] == 0
    batch = ids, mask, types, labels, nsp
    scores, _, loss = _call(ours, None, batch, with_labels=True)
    ref_scores, _, ref_loss = _call(theirs, torch, batch, with_labels=True)
    assert np.abs(_np(scores) - _np(ref_scores)[labels != -100]).max() < ATOL
    assert abs(loss.item() - ref_loss.item()) < ATOL
    loss.backward()
    ref_loss.backward()
    _assert_gradients_match(ours, theirs)


def _assert_gradients_match(ours, theirs):
    theirs_params = dict(theirs.named_parameters())
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(theirs_params)
    for n, p in ours.named_parameters():
        ref = theirs_params[n].grad
        if ref is None:  # transformers 5's untied cls.predictions.bias: read by nothing
            assert n == "cls.predictions.bias" and not ours.config.tie_word_embeddings and p.grad is None
            continue
        g = ref.numpy()
        error = np.linalg.norm(p.grad.numpy() - g)
        # the floor is for the key biases, whose exact gradient is 0 (softmax ignores a constant per row)
        assert error <= GRAD_RTOL * np.linalg.norm(g) + 1e-7, f"{n}: |diff| {error:.3g}, |grad| {np.linalg.norm(g):.3g}"


def test_the_tie(saved, torch, transformers):
    """Tied, the decoder is the word embeddings: a change to one shows in the other and in the logits,
    as in transformers; untied, it does not."""
    name, class_name, folder = saved
    ours = HEADS[class_name].from_pretrained(folder)
    theirs = _hf(transformers, class_name, folder)
    tied = ours.config.tie_word_embeddings
    assert tied == theirs.config.tie_word_embeddings == name.startswith("tied")
    decoder, embeddings = ours.cls.predictions.decoder, ours.bert.embeddings.word_embeddings
    assert (decoder.weight is embeddings.weight) == tied
    assert (decoder.bias is ours.cls.predictions.bias) == tied
    before = decoder.weight.numpy().copy()
    embeddings.weight.data[7] += 0.5
    with torch.no_grad():
        theirs.bert.embeddings.word_embeddings.weight[7] += 0.5
    assert np.array_equal(decoder.weight.numpy()[7], before[7] + 0.5) == tied
    batch = _batch(ours.config, seed=2)
    with torch.no_grad():
        ref = _call(theirs, torch, batch, with_labels=False)[0]
    assert np.abs(_np(_call(ours, None, batch, with_labels=False)[0]) - _np(ref)).max() < ATOL


def test_save_loads_in_transformers_with_its_keys(saved, torch, transformers, tmp_path):
    """minillm's folder: the same tensor names as transformers writes (the tied copy left out), loaded
    by transformers as the same class with no missing or unexpected keys, and the same outputs."""
    name, class_name, folder = saved
    ours = HEADS[class_name].from_pretrained(folder)
    ours.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "np") as f, safe_open(str(folder / "model.safetensors"),
                                                                              "np") as g:
        assert sorted(f.keys()) == sorted(g.keys())
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] == ours.config.tie_word_embeddings
    theirs, info = getattr(transformers, class_name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert type(theirs).__name__ == class_name
    assert theirs.config.tie_word_embeddings == ours.config.tie_word_embeddings
    batch = _batch(ours.config, seed=3)
    with torch.no_grad():
        ref_scores, ref_nsp, ref_loss = _call(theirs.eval(), torch, batch, with_labels=True)
    scores, nsp, loss = _call(ours, None, batch, with_labels=True, full_logits=True)
    assert np.abs(_np(scores) - _np(ref_scores)).max() < ATOL and abs(loss.item() - ref_loss.item()) < ATOL


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("head", sorted(HEADS))
def test_random_init_saves_for_transformers(head, tie, torch, transformers, tmp_path):
    """A model built from a BertConfig (HF's initialization: head bias 0, LayerNorm 1/0, weights
    N(0, 0.02)) saves a folder transformers loads as the same class, missing and unexpected nothing."""
    mm.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, max_position_embeddings=24, tie_word_embeddings=tie,
                        **{k: v for k, v in CONFIGS["tied-token-types"].items() if k != "tie_word_embeddings"})
    ours = HEADS[head](config)
    predictions = ours.cls.predictions
    assert not predictions.bias.numpy().any() and (predictions.transform.LayerNorm.weight.numpy() == 1).all()
    assert abs(predictions.transform.dense.weight.numpy().std() - 0.02) < 0.005
    assert abs(predictions.decoder.weight.numpy().std() - 0.02) < 0.005
    ours.save_pretrained(tmp_path)
    theirs, info = getattr(transformers, head).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    batch = _batch(config, seed=4)
    with torch.no_grad():
        ref = _call(theirs.eval(), torch, batch, with_labels=False)[0]
    assert np.abs(_np(_call(ours.eval(), None, batch, with_labels=False)[0]) - _np(ref)).max() < ATOL


@pytest.mark.parametrize("head", sorted(HEADS))
def test_a_bare_checkpoint_gets_new_heads_listed(head, torch, transformers, tmp_path):
    """A BertModel checkpoint (no cls.*) into a masked-LM class: its heads are initialized and listed
    as missing, as transformers lists them (BertForMaskedLM also skips the pooler, and lists it)."""
    _save_hf(transformers, torch, "BertModel", CONFIGS["tied-token-types"], tmp_path)
    ours, info = HEADS[head].from_pretrained(tmp_path, output_loading_info=True)
    _, ref = getattr(transformers, head).from_pretrained(tmp_path, output_loading_info=True)
    tied_copies = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    assert set(info["missing_keys"]) == set(ref["missing_keys"]) - tied_copies
    assert set(info["unexpected_keys"]) == set(ref["unexpected_keys"])
    assert "cls.predictions.transform.dense.weight" in info["missing_keys"]
    assert ("pooler.dense.weight" in info["unexpected_keys"]) == (head == "BertForMaskedLM")
    dense = ours.cls.predictions.transform.dense
    assert not dense.bias.numpy().any() and abs(dense.weight.numpy().std() - 0.02) < 0.005  # HF's init
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight


def test_checkpoints_cross_between_the_heads(torch, transformers, tmp_path):
    """Pretraining heads into BertForMaskedLM (seq_relationship and pooler ignored, listed); a masked-LM
    checkpoint into BertForPreTraining (pooler and seq_relationship new) and into the classifier (cls
    ignored, the pooler and classifier new); each with transformers' lists and the shared outputs."""
    pre, mlm = tmp_path / "pre", tmp_path / "mlm"
    _save_hf(transformers, torch, "BertForPreTraining", CONFIGS["untied-token-types"], pre)
    _save_hf(transformers, torch, "BertForMaskedLM", CONFIGS["untied-token-types"], mlm)
    for folder, ours_class, class_name in ((pre, BertForMaskedLM, "BertForMaskedLM"),
                                           (mlm, BertForPreTraining, "BertForPreTraining"),
                                           (mlm, BertForSequenceClassification, "BertForSequenceClassification")):
        ours, info = ours_class.from_pretrained(folder, output_loading_info=True)
        theirs, ref = getattr(transformers, class_name).from_pretrained(folder, output_loading_info=True)
        assert set(info["missing_keys"]) == set(ref["missing_keys"]), class_name
        assert set(info["unexpected_keys"]) == set(ref["unexpected_keys"]), class_name
        batch = _batch(ours.config, seed=5)
        with torch.no_grad():
            ref_hidden = theirs.bert(*(torch.tensor(a) for a in batch[:3])).last_hidden_state
        assert np.abs(ours.bert(*batch[:3]).last_hidden_state.numpy() - ref_hidden.numpy()).max() < ATOL
    scores = BertForMaskedLM.from_pretrained(pre)(*batch[:3]).logits
    with torch.no_grad():
        ref_scores = _hf(transformers, "BertForMaskedLM", pre)(*(torch.tensor(a) for a in batch[:3])).logits
    assert np.abs(scores.numpy() - ref_scores.numpy()).max() < ATOL


def test_no_labelled_token_gives_nan_and_zero_gradients(torch, transformers, tmp_path):
    """A batch where masking chose nothing: the loss is NaN (the mean of nothing), as torch's, and
    backward leaves zero gradients on the head, not an error."""
    _save_hf(transformers, torch, "BertForMaskedLM", CONFIGS["tied-token-types"], tmp_path)
    ours, theirs = BertForMaskedLM.from_pretrained(tmp_path), _hf(transformers, "BertForMaskedLM", tmp_path)
    ids, mask, types, labels, _ = _batch(ours.config)
    labels = np.full_like(labels, -100)
    out = ours(ids, mask, types, labels=labels)
    ref = theirs(torch.tensor(ids), torch.tensor(mask), torch.tensor(types), labels=torch.tensor(labels))
    assert out.logits.shape == (0, VOCAB)
    assert np.isnan(out.loss.item()) and np.isnan(ref.loss.item())
    out.loss.backward()
    assert not ours.cls.predictions.transform.dense.weight.grad.numpy().any()


def test_bad_labels_are_refused_by_name(tmp_path):
    mm.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=VOCAB, max_position_embeddings=24,
                                          **CONFIGS["tied-token-types"]))
    ids = np.ones((2, 5), np.int64)
    with pytest.raises(ValueError, match=r"labels must be \(2, 5\)"):
        model(ids, labels=np.zeros((2, 4), np.int64))
    with pytest.raises(TypeError, match="labels must hold integers"):
        model(ids, labels=np.zeros((2, 5), np.float32))
    with pytest.raises(IndexError, match=f"target {VOCAB} is out of bounds for {VOCAB} classes"):
        model(ids, labels=np.full((2, 5), VOCAB))
    with pytest.raises(IndexError, match="target 2 is out of bounds for 2 classes"):
        model.check_batch({"input_ids": ids, "next_sentence_label": np.array([0, 2])})
    with pytest.raises(IndexError, match="out of bounds"):
        model.check_batch({"input_ids": ids, "labels": np.full((2, 5), -1)})
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        BertConfig(vocab_size=VOCAB, tie_word_embeddings="yes")


def test_bert_model_loads_a_masked_lm_checkpoint(torch, transformers, tmp_path):
    """BertModel from a BertForMaskedLM folder (which has no pooler): the pooler is new, and listed."""
    _save_hf(transformers, torch, "BertForMaskedLM", CONFIGS["tied-one-type"], tmp_path)
    ours, info = BertModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == ["pooler.dense.weight", "pooler.dense.bias"]
    assert "cls.predictions.bias" in info["unexpected_keys"]


def test_a_tied_copy_in_the_checkpoint_is_skipped(torch, transformers, tmp_path):
    """Older checkpoints (transformers 4, TF conversions) also hold cls.predictions.decoder.weight and
    .bias, copies of the tied weights: loading skips them silently, as transformers does."""
    from safetensors.numpy import load_file, save_file

    _save_hf(transformers, torch, "BertForMaskedLM", CONFIGS["tied-token-types"], tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ours, info = BertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    _, ref = transformers.BertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": []}
    assert not ref["missing_keys"] and not ref["unexpected_keys"]
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
