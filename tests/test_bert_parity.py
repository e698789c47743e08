"""minillm's BERT against transformers' (the oracle): outputs, gradients and checkpoints both ways.

Tiny random configs are built and saved by transformers itself (weights perturbed, so that biases
are not 0 and LayerNorm weights not 1, which would hide mix-ups), then loaded by minillm.
"""
import numpy as np
import pytest

import minillm as mm
from minillm import pretrained
from minillm.models.bert import BertForSequenceClassification, BertModel
from minillm.tokenizer import BertTokenizer

ATOL = 1e-4      # outputs, float32, eval mode
GRAD_RTOL = 1e-3  # per tensor: |g_minillm - g_torch| / |g_torch|

CONFIGS = {
    # name: (config fields, the transformers class that saves it, num_labels)
    "gelu-bert-prefix": (dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=37,
                              hidden_act="gelu", type_vocab_size=2), "BertForSequenceClassification", 3),
    "gelu_new-no-prefix": (dict(hidden_size=24, num_attention_heads=3, num_hidden_layers=3, intermediate_size=40,
                                hidden_act="gelu_new", type_vocab_size=1), "BertModel", 2),
    "relu-pretraining-heads": (dict(hidden_size=20, num_attention_heads=5, num_hidden_layers=1, intermediate_size=16,
                                    hidden_act="relu", type_vocab_size=2, pad_token_id=1, layer_norm_eps=1e-5),
                               "BertForPreTraining", 2),
    "one-label-regression": (dict(hidden_size=16, num_attention_heads=2, num_hidden_layers=2, intermediate_size=24,
                                  hidden_act="gelu", type_vocab_size=2, classifier_dropout=0.3),
                             "BertForSequenceClassification", 1),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def saved(request, torch, transformers, tmp_path_factory):
    """(name, folder, num_labels): a random tiny BERT saved by transformers' save_pretrained."""
    fields, class_name, num_labels = CONFIGS[request.param]
    torch.manual_seed(sorted(CONFIGS).index(request.param))
    config = transformers.BertConfig(vocab_size=50, max_position_embeddings=24, num_labels=num_labels, **fields)
    model = getattr(transformers, class_name)(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, folder, num_labels


def _batch(type_vocab_size, lengths=(9, 5, 1, 7), seed=0):
    """Token ids with padding masks of varied lengths (one sequence is only its first token)."""
    rng = np.random.default_rng(seed)
    length = max(lengths)
    ids = rng.integers(2, 50, (len(lengths), length))
    mask = (np.arange(length)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, 0)
    types = (np.arange(length)[None, :] >= length // 2).astype(np.int64) * mask if type_vocab_size > 1 else mask * 0
    return ids, mask, types


def _hf(transformers, cls_name, folder, **kwargs):
    return getattr(transformers, cls_name).from_pretrained(folder, attn_implementation="eager", **kwargs).eval()


def _max_diff(ours, theirs):
    return float(np.abs(ours.numpy() - theirs.detach().numpy()).max())


def _copy_classifier(ours, hf, torch):
    """A checkpoint without a classifier gets a random one on each side: give HF ours."""
    with torch.no_grad():
        hf.classifier.weight.copy_(torch.tensor(ours.classifier.weight.numpy()))
        hf.classifier.bias.copy_(torch.tensor(ours.classifier.bias.numpy()))


def test_forward_matches_transformers(saved, torch, transformers, device):
    name, folder, num_labels = saved
    ours = BertModel.from_pretrained(folder).to(device)
    theirs = _hf(transformers, "BertModel", folder)
    ids, mask, types = _batch(ours.config.type_vocab_size)
    out = ours(ids, mask, types, output_attentions=True, output_hidden_states=True)
    with torch.no_grad():
        ref = theirs(torch.tensor(ids), torch.tensor(mask), torch.tensor(types), output_attentions=True,
                     output_hidden_states=True)
    assert _max_diff(out.last_hidden_state, ref.last_hidden_state) < ATOL
    assert _max_diff(out.pooler_output, ref.pooler_output) < ATOL
    assert len(out.hidden_states) == len(ref.hidden_states) == ours.config.num_hidden_layers + 1
    assert max(_max_diff(a, b) for a, b in zip(out.hidden_states, ref.hidden_states)) < ATOL
    assert len(out.attentions) == len(ref.attentions)
    assert max(_max_diff(a, b) for a, b in zip(out.attentions, ref.attentions)) < ATOL


def test_skipping_the_padding_changes_no_computed_position(saved, torch, transformers):
    """BertModel(skip_padding=True) computes the real tokens and each first position only: there, and in
    pooler_output, transformers' numbers; 0 at the padding it skipped. (The task models skip it always:
    the gradient test below runs through the skipped padding.)"""
    name, folder, num_labels = saved
    ours = BertModel.from_pretrained(folder)
    theirs = _hf(transformers, "BertModel", folder)
    ids, mask, types = _batch(ours.config.type_vocab_size, lengths=(9, 5, 1, 7, 3), seed=3)
    mask[4, 0] = 0  # a sequence that starts with padding: its first position is computed all the same
    out = ours(ids, mask, types, skip_padding=True)
    with torch.no_grad():
        ref = theirs(torch.tensor(ids), torch.tensor(mask), torch.tensor(types))
    computed = mask == 1
    computed[:, 0] = True
    diff = np.abs(out.last_hidden_state.numpy() - ref.last_hidden_state.numpy())
    assert diff[computed].max() < ATOL
    assert not out.last_hidden_state.numpy()[~computed].any()
    assert _max_diff(out.pooler_output, ref.pooler_output) < ATOL


def test_logits_loss_and_gradients_match_transformers(saved, torch, transformers, device):
    name, folder, num_labels = saved
    ours, info = BertForSequenceClassification.from_pretrained(folder, num_labels=num_labels, output_loading_info=True)
    theirs = _hf(transformers, "BertForSequenceClassification", folder, num_labels=num_labels)
    if info["missing_keys"]:
        assert info["missing_keys"] == ["classifier.weight", "classifier.bias"]
        _copy_classifier(ours, theirs, torch)
    ours.to(device)
    ids, mask, types = _batch(ours.config.type_vocab_size, seed=1)
    labels = np.array([0, 1, 2, 1]) % num_labels if num_labels > 1 else np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    out = ours(ids, mask, types, labels=labels)
    ref = theirs(torch.tensor(ids), torch.tensor(mask), torch.tensor(types), labels=torch.tensor(labels))
    assert _max_diff(out.logits, ref.logits) < ATOL
    assert abs(out.loss.item() - ref.loss.item()) < ATOL
    out.loss.backward()
    ref.loss.backward()
    theirs_grads = dict(theirs.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert sorted(names) == sorted(theirs_grads)
    # The floor of 1e-7 is for the key biases, whose exact gradient is 0 (softmax ignores a constant added
    # to a whole row of scores, and q . b_k is one): both sides return rounding noise of ~1e-10 there.
    for n, p in ours.named_parameters():
        g = theirs_grads[n].grad.numpy()
        error = np.linalg.norm(p.grad.numpy() - g)
        assert error <= GRAD_RTOL * np.linalg.norm(g) + 1e-7, f"{n}: |diff| {error:.3g}, |grad| {np.linalg.norm(g):.3g}"


def test_minillm_save_loads_in_transformers(saved, torch, transformers, tmp_path):
    name, folder, num_labels = saved
    ours = BertForSequenceClassification.from_pretrained(folder, num_labels=num_labels)
    ours.save_pretrained(tmp_path)
    theirs, info = transformers.BertForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert theirs.config.num_labels == num_labels and theirs.config.hidden_act == ours.config.hidden_act
    ids, mask, types = _batch(ours.config.type_vocab_size, seed=2)
    with torch.no_grad():
        ref = theirs.eval()(torch.tensor(ids), torch.tensor(mask), torch.tensor(types))
    assert _max_diff(ours(ids, mask, types).logits, ref.logits) < ATOL


def test_bfloat16_and_float16_checkpoints_are_upcast(torch, transformers, tmp_path):
    """transformers saves a half-precision model; minillm reads it as float32 with the same values."""
    torch.manual_seed(5)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_attention_heads=2, num_hidden_layers=1,
                                     intermediate_size=20, max_position_embeddings=16)
    model = transformers.BertModel(config)
    for dtype in (torch.bfloat16, torch.float16):
        model.to(dtype).save_pretrained(tmp_path / str(dtype))
        ours = BertModel.from_pretrained(tmp_path / str(dtype))
        expected = model.embeddings.word_embeddings.weight.detach().float().numpy()
        got = ours.embeddings.word_embeddings.weight.numpy()
        assert got.dtype == np.float32 and np.array_equal(got, expected)


def test_minilm_matches_transformers(minilm_dir, torch, transformers, device):
    tok = BertTokenizer.from_pretrained(minilm_dir)
    batch = tok(["A man is playing a guitar.", "Hi!", "The quick brown fox jumps over the lazy dog, again."])
    ours = BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=2)
    theirs = _hf(transformers, "BertForSequenceClassification", minilm_dir, num_labels=2)
    _copy_classifier(ours, theirs, torch)
    ours.to(device)
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    out = ours.bert(*args)
    with torch.no_grad():
        ref = theirs.bert(*(torch.tensor(a) for a in args))
        ref_logits = theirs(*(torch.tensor(a) for a in args)).logits
    assert _max_diff(out.last_hidden_state, ref.last_hidden_state) < ATOL
    assert _max_diff(out.pooler_output, ref.pooler_output) < ATOL
    assert _max_diff(ours(*args).logits, ref_logits) < ATOL


def test_kernels_agree_on_minilm(minilm_dir):
    """The compiled kernels and their NumPy twins give the same MiniLM outputs."""
    tok = BertTokenizer.from_pretrained(minilm_dir)
    batch = tok(["Kernels, twice.", "Same answer"])
    model = BertModel.from_pretrained(minilm_dir)
    fast = model(batch["input_ids"], batch["attention_mask"]).last_hidden_state.numpy()
    with mm.kernels.use("numpy"):
        slow = model(batch["input_ids"], batch["attention_mask"]).last_hidden_state.numpy()
    assert np.abs(fast - slow).max() < ATOL


def _report():
    """python tests/test_bert_parity.py: the measured differences, for the README and reviews."""
    import tempfile

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    for name in sorted(CONFIGS):
        fields, class_name, num_labels = CONFIGS[name]
        torch.manual_seed(sorted(CONFIGS).index(name))
        model = getattr(transformers, class_name)(transformers.BertConfig(
            vocab_size=50, max_position_embeddings=24, num_labels=num_labels, **fields))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        folder = tempfile.mkdtemp()
        model.save_pretrained(folder)
        ours = BertForSequenceClassification.from_pretrained(folder, num_labels=num_labels)
        theirs = _hf(transformers, "BertForSequenceClassification", folder, num_labels=num_labels)
        _copy_classifier(ours, theirs, torch)
        ids, mask, types = _batch(ours.config.type_vocab_size, seed=1)
        labels = np.array([0, 1, 2, 1]) % num_labels if num_labels > 1 else np.array([0.5, -1, 2, 0], np.float32)
        out, base = ours(ids, mask, types, labels=labels), ours.bert(ids, mask, types)
        args = (torch.tensor(ids), torch.tensor(mask), torch.tensor(types))
        ref, ref_base = theirs(*args, labels=torch.tensor(labels)), theirs.bert(*args)
        out.loss.backward()
        ref.loss.backward()
        grads = dict(theirs.named_parameters())
        worst = max((np.linalg.norm(p.grad.numpy() - grads[n].grad.numpy()) / np.linalg.norm(grads[n].grad.numpy()),
                     n) for n, p in ours.named_parameters() if not n.endswith("key.bias"))
        print(f"{name:24} last_hidden_state {_max_diff(base.last_hidden_state, ref_base.last_hidden_state):.1e}  "
              f"pooler {_max_diff(base.pooler_output, ref_base.pooler_output):.1e}  "
              f"logits {_max_diff(out.logits, ref.logits):.1e}  worst gradient {worst[0]:.1e} ({worst[1]})")
    folder = pretrained.resolve("all-MiniLM-L6-v2")
    batch = BertTokenizer.from_pretrained(folder)(["A man is playing a guitar.", "Hi!",
                                                  "The quick brown fox jumps over the lazy dog, again."])
    out = BertModel.from_pretrained(folder)(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        ref = _hf(transformers, "BertModel", folder)(torch.tensor(batch["input_ids"]),
                                                      torch.tensor(batch["attention_mask"]))
    real = batch["attention_mask"] == 1
    diff = np.abs(out.last_hidden_state.numpy() - ref.last_hidden_state.numpy())
    print(f"all-MiniLM-L6-v2         last_hidden_state {diff.max():.1e} (real tokens {diff[real].max():.1e}, "
          f"padding {diff[~real].max():.1e})  pooler {_max_diff(out.pooler_output, ref.pooler_output):.1e}")


if __name__ == "__main__":
    _report()
