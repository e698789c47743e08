"""minillm's BERT on its own: the config, the names, the initialization, the forward API and its
errors. (Agreement with transformers is in test_bert_parity.py.)"""
import json

import numpy as np
import pytest

import minillm as mm
from minillm.safetensors_io import CheckpointError
from minillm.models.bert import BertConfig, BertForSequenceClassification, BertModel, check_inputs

TINY = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=24,
            max_position_embeddings=12, type_vocab_size=2)


def test_config_reads_hf_json_keeps_unknown_fields(tmp_path):
    fields = {**TINY, "model_type": "bert", "architectures": ["BertModel"], "use_cache": True,
              "gradient_checkpointing": False, "position_embedding_type": "absolute",
              "id2label": {"0": "neg", "1": "pos"}, "label2id": {"neg": 0, "pos": 1}}
    (tmp_path / "config.json").write_text(json.dumps(fields))
    config = BertConfig.from_pretrained(tmp_path)
    assert config.hidden_size == 16 and config.layer_norm_eps == 1e-12 and config.hidden_act == "gelu"
    assert config.num_labels == 2 and config.id2label == {0: "neg", 1: "pos"}
    config.save_pretrained(tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    for key, value in fields.items():
        assert written[key] == value, key
    assert BertConfig.from_pretrained(tmp_path, num_labels=3).id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}


@pytest.mark.parametrize("field, value, message", [
    ("hidden_act", "swish", r"hidden_act='swish' is not supported: minillm's BERT supports gelu, gelu_new, relu"),
    ("position_embedding_type", "relative_key", r"position_embedding_type='relative_key' is not supported"),
    ("is_decoder", True, r"is_decoder=True is not supported: minillm's BERT is an encoder only"),
    ("num_attention_heads", 5, r"hidden_size=16 is not supported: it must be a multiple of num_attention_heads=5"),
    ("hidden_dropout_prob", 1.5, r"hidden_dropout_prob=1.5 is not supported"),
    ("vocab_size", 0, r"vocab_size=0 is not supported: expected a positive integer"),
    ("model_type", "roberta", r"model_type='roberta' is not supported"),
])
def test_config_refuses_unsupported_values_by_name(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        BertConfig(**{**TINY, field: value})
    (tmp_path / "config.json").write_text(json.dumps({**TINY, field: value}))
    with pytest.raises(CheckpointError, match="config.json: " + message):
        BertConfig.from_pretrained(tmp_path / "config.json")


def test_weight_names_are_hugging_faces():
    names = [n for n, _ in BertForSequenceClassification(BertConfig(**TINY)).named_parameters()]
    layer = [f"bert.encoder.layer.1.{n}" for n in (
        "attention.self.query.weight", "attention.self.query.bias", "attention.self.key.weight",
        "attention.self.key.bias", "attention.self.value.weight", "attention.self.value.bias",
        "attention.output.dense.weight", "attention.output.dense.bias", "attention.output.LayerNorm.weight",
        "attention.output.LayerNorm.bias", "intermediate.dense.weight", "intermediate.dense.bias",
        "output.dense.weight", "output.dense.bias", "output.LayerNorm.weight", "output.LayerNorm.bias")]
    assert names[:5] == ["bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
                         "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.LayerNorm.weight",
                         "bert.embeddings.LayerNorm.bias"]
    assert names[-20:-4] == layer
    assert names[-4:] == ["bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"]


def test_initialization_as_hugging_face():
    mm.manual_seed(0)
    config = BertConfig(**{**TINY, "vocab_size": 500, "hidden_size": 64, "intermediate_size": 256,
                           "initializer_range": 0.05})
    model = BertForSequenceClassification(config)
    params = dict(model.named_parameters())
    for name in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.intermediate.dense.weight",
                 "classifier.weight"):
        values = params[name].numpy()[1:] if "word" in name else params[name].numpy()
        assert abs(values.std() - 0.05) < 0.01 and abs(values.mean()) < 0.01, name
    assert np.all(params["bert.embeddings.word_embeddings.weight"].numpy()[0] == 0)  # the padding row
    assert np.all(params["bert.encoder.layer.1.output.dense.bias"].numpy() == 0)
    assert np.all(params["bert.encoder.layer.1.output.LayerNorm.weight"].numpy() == 1)
    assert np.all(params["bert.embeddings.LayerNorm.bias"].numpy() == 0)
    layers = model.bert.encoder.layer
    assert not np.array_equal(layers[0].attention.self.query.weight.numpy(),
                              layers[1].attention.self.query.weight.numpy())


def test_forward_api_and_output_shapes():
    model = BertForSequenceClassification(BertConfig(num_labels=3, **TINY)).eval()
    ids = np.array([[2, 5, 7, 3, 0], [2, 9, 3, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    out = model(ids, attention_mask=mask, labels=np.array([0, 2]), output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (2, 3) and out.loss.shape == ()
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (2, 5, 16)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 5, 5)
    plain = model(ids, attention_mask=mask).logits.numpy()  # the fused path; output_attentions takes the reference
    np.testing.assert_allclose(out.logits.numpy(), plain, atol=1e-6)
    as_list = model(ids.tolist(), mask.tolist()).logits.numpy()
    as_tensor = model(mm.tensor(ids), mm.tensor(mask), mm.tensor(np.zeros_like(ids))).logits.numpy()
    np.testing.assert_array_equal(as_list, plain)
    np.testing.assert_array_equal(as_tensor, plain)
    base = model.bert(ids, mask)
    assert base.last_hidden_state.shape == (2, 5, 16) and base.pooler_output.shape == (2, 16)
    assert base.hidden_states is None and base.attentions is None


def test_padding_does_not_change_the_result():
    """A sequence gives the same logits alone and padded inside a batch with a longer one."""
    model = BertForSequenceClassification(BertConfig(**TINY)).eval()
    alone = model(np.array([[2, 5, 7, 3]])).logits.numpy()
    padded = model(np.array([[2, 5, 7, 3, 0, 0], [2, 8, 8, 8, 8, 3]]), np.array([[1, 1, 1, 1, 0, 0], [1] * 6])).logits
    np.testing.assert_allclose(padded.numpy()[0], alone[0], atol=1e-6)


def test_skip_padding_computes_the_kept_positions_only():
    """skip_padding: the real tokens, each first position and the asked-for ones, as the full forward
    computes them, and 0 elsewhere; output_hidden_states computes every position (for study)."""
    model = BertModel(BertConfig(**TINY)).eval()
    ids = np.array([[2, 5, 7, 3, 0, 0], [2, 8, 3, 0, 0, 0], [0, 2, 9, 3, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    full = model(ids, mask).last_hidden_state.numpy()
    keep = np.zeros(ids.shape, bool)
    keep[1, 4] = True
    for skip, extra in ((True, None), (keep, keep)):
        kept = mask == 1
        kept[:, 0] = True
        if extra is not None:
            kept |= extra
        out = model(ids, mask, skip_padding=skip).last_hidden_state.numpy()
        np.testing.assert_allclose(out[kept], full[kept], atol=1e-6)
        assert not out[~kept].any()
    studied = model(ids, mask, skip_padding=True, output_hidden_states=True)
    np.testing.assert_allclose(studied.last_hidden_state.numpy(), full, atol=1e-6)
    with pytest.raises(ValueError, match=r"skip_padding must be True, False or a \(3, 6\) bool array .* got "
                                         r"int64 of shape \(3, 6\)"):
        model(ids, mask, skip_padding=mask)
    np.testing.assert_array_equal(model(ids, mask, skip_padding=np.True_).last_hidden_state.numpy(),
                                  model(ids, mask, skip_padding=True).last_hidden_state.numpy())
    np.testing.assert_array_equal(model(ids, mask, skip_padding=None).last_hidden_state.numpy(), full)


def test_masked_lm_labels_do_not_speak_before_the_inputs():
    """With labels, the inputs' own checks come first: their errors name them, not the labels."""
    from minillm.models.bert import BertForMaskedLM
    model = BertForMaskedLM(BertConfig(**TINY))
    labels = np.full((1, 6), -100)
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, sequence length\), got shape \(6,\)"):
        model(np.ones(6, np.int64), labels=labels[0])
    with pytest.raises(ValueError, match=r"inputs_embeds must be a Tensor \(batch, sequence length, hidden_size=16\)"):
        model(inputs_embeds=[[0.0] * 16], labels=labels)
    with pytest.raises(ValueError, match=r"labels must be \(1, 5\), the shape of input_ids, got shape \(1, 6\)"):
        model(np.ones((1, 5), np.int64), labels=labels)


def test_padding_is_nothing_to_skip_without_padding():
    """Padding.of: None without a mask or when every position is kept; else the kept rows in order."""
    from minillm.nn.padding import Padding
    mask = np.array([[True, True, False], [False, True, True]])
    assert Padding.of(None) is None and Padding.of(np.ones((2, 3), bool)) is None
    assert Padding.of(np.zeros((2, 0), bool)) is None and Padding.of(np.zeros((0, 3), bool)) is None
    assert Padding.of(mask, keep=~mask) is None
    padding = Padding.of(mask)
    assert padding.indices.tolist() == [0, 1, 3, 4, 5] and padding.positions.tolist() == [0, 1, 0, 1, 2]
    x = mm.tensor(np.arange(5 * 2, dtype=np.float32).reshape(5, 2), requires_grad=True)
    padded = padding.pad(x)
    assert padded.shape == (2, 3, 2) and padded.numpy()[0, 2].tolist() == [0, 0]
    np.testing.assert_array_equal(padding.unpad(padded).numpy(), x.numpy())
    padding.unpad(padded).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((5, 2)))


def test_eval_is_deterministic_and_train_uses_dropout():
    model = BertForSequenceClassification(BertConfig(**TINY))
    ids = np.array([[2, 5, 7, 3]])
    model.eval()
    assert np.array_equal(model(ids).logits.numpy(), model(ids).logits.numpy())
    model.train()
    assert not np.array_equal(model(ids).logits.numpy(), model(ids).logits.numpy())


@pytest.mark.parametrize("labels, kind", [(np.array([1, 0]), "ce"), (np.array([[1.0, 0.0], [0.0, 1.0]]), "bce")])
def test_losses(labels, kind):
    model = BertForSequenceClassification(BertConfig(**TINY)).eval()
    ids = np.array([[2, 5, 7, 3], [2, 6, 3, 0]])
    out = model(ids, labels=labels)
    x = out.logits.numpy().astype(np.float64)
    if kind == "ce":
        expected = -np.mean((x - np.log(np.exp(x).sum(1, keepdims=True)))[np.arange(2), labels])
    else:
        expected = np.mean(-labels * np.log(1 / (1 + np.exp(-x))) - (1 - labels) * np.log(1 - 1 / (1 + np.exp(-x))))
    assert abs(out.loss.item() - expected) < 1e-6
    out.loss.backward()
    assert model.classifier.weight.grad is not None


def test_regression_loss():
    model = BertForSequenceClassification(BertConfig(num_labels=1, **TINY)).eval()
    out = model(np.array([[2, 5, 7, 3], [2, 6, 3, 0]]), labels=np.array([0.5, -1.0]))
    assert abs(out.loss.item() - np.mean((out.logits.numpy()[:, 0] - [0.5, -1.0]) ** 2)) < 1e-6


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(input_ids=np.ones((2, 3), np.float32)), TypeError, "input_ids must hold integers, got dtype float32"),
    (dict(input_ids=np.ones(3, np.int64)), ValueError,
     r"input_ids must be \(batch, sequence length\), got shape \(3,\)"),
    (dict(input_ids=np.ones((2, 0), np.int64)), ValueError,
     r"input_ids has shape \(2, 0\): no token per sequence, where each needs at least its \[CLS\]"),
    (dict(input_ids=np.ones((1, 13), np.int64)), ValueError,
     "13 tokens per sequence, more than max_position_embeddings=12"),
    (dict(input_ids=np.full((1, 3), 40)), ValueError, r"ids from 40 to 40; they must be in \[0, vocab_size=40\)"),
    (dict(input_ids=np.ones((1, 3), np.int64), attention_mask=np.ones((1, 4), np.int64)), ValueError,
     r"attention_mask must be \(1, 3\), the shape of input_ids"),
    (dict(input_ids=np.ones((1, 3), np.int64), token_type_ids=np.full((1, 3), 2)), ValueError,
     "token_type_ids holds 2 to 2; this model has type_vocab_size=2"),
])
def test_bad_inputs_name_the_argument(kwargs, error, message):
    model = BertModel(BertConfig(**TINY))
    with pytest.raises(error, match=message):
        model(**kwargs)
    with pytest.raises(error, match=message):  # the same check, without running the model
        model.check_batch(kwargs)


def test_check_inputs_returns_ids_mask_and_types():
    config = BertConfig(**TINY)
    ids, mask, types = check_inputs(config, [[2, 5, 0]], np.array([[1, 1, 0]], np.int32))
    assert ids.dtype == types.dtype == np.int64 and mask.dtype == bool
    assert ids.tolist() == [[2, 5, 0]] and mask.tolist() == [[True, True, False]] and types.tolist() == [[0, 0, 0]]
    assert check_inputs(config, np.ones((1, 3), np.int64))[1] is None


def test_check_batch_checks_what_forward_checks():
    """A batch dict: model(**batch) runs it, model.check_batch(batch) refuses what forward refuses."""
    model = BertForSequenceClassification(BertConfig(num_labels=3, **TINY)).eval()
    batch = {"input_ids": np.array([[2, 5, 7], [2, 9, 0]]), "attention_mask": np.array([[1, 1, 1], [1, 1, 0]]),
             "token_type_ids": np.zeros((2, 3), np.int64), "labels": np.array([0, 2])}
    model.check_batch(batch)
    assert model(**batch).loss.shape == ()
    for labels, message in ((np.array([0, 3]), "target 3 is out of bounds for 3 classes"),
                            (np.array([-1, 0]), "target -1 is out of bounds")):
        for check in (model.check_batch, lambda b: model(**b)):
            with pytest.raises(IndexError, match=message):
                check({**batch, "labels": labels})
    model.check_batch({**batch, "labels": np.eye(3, dtype=np.float32)[:2]})  # multi-label targets: no class ids
    with pytest.raises(ValueError, match="ids from 40 to 40"):
        model.check_batch({**batch, "input_ids": np.full((2, 3), 40)})
