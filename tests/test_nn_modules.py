"""MultiHeadAttention, TransformerEncoderLayer and TransformerEncoder: against a plain NumPy
reference, finite differences (float64), and the facts a padding mask must guarantee; the fused
attention op against the module's reference path (the equation in plain ops)."""
import numpy as np
import pytest

import minillm as mm
from minillm import nn
from minillm.nn.padding import Padding
from minillm.testing import gradcheck


def _double(module):
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    return module


def _reference_attention(mha, x, key_mask):
    """softmax(q k^T / sqrt(D) + mask) v per head, in NumPy, from the module's weights."""
    def project(linear):
        y = x @ linear.weight.numpy().T + linear.bias.numpy()
        return y.reshape(x.shape[0], x.shape[1], mha.num_heads, mha.head_dim).transpose(0, 2, 1, 3)

    q, k, v = project(mha.query), project(mha.key), project(mha.value)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(mha.head_dim)
    scores = np.where(key_mask[:, None, None, :], scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(x.shape), p


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 12))
    key_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    return x, key_mask


def test_attention_matches_reference(batch):
    x, key_mask = batch
    mm.manual_seed(0)
    mha = _double(nn.MultiHeadAttention(12, 3)).eval()
    out, probs = mha(mm.tensor(x), key_mask, output_attentions=True)
    expected, expected_probs = _reference_attention(mha, x, key_mask.astype(bool))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(probs.numpy(), expected_probs, atol=1e-10)
    assert probs.shape == (3, 3, 5, 5) and probs.requires_grad  # from the graph: a loss may use them
    assert np.all(probs.numpy()[1, :, :, 3:] == 0)  # padded keys get no attention
    fused, _ = mha(mm.tensor(x), key_mask)
    np.testing.assert_allclose(fused.numpy(), expected, atol=1e-10)


def test_fused_attention_is_the_reference_path():
    """The fused op (every call but output_attentions) against reference_attention, the equation in
    plain ops that defines it: context and the gradients of q, k and v, in float64, with padding
    keys and a query row whose keys are all padding (context 0 and no gradient, on both paths)."""
    rng = np.random.default_rng(4)
    mha = nn.MultiHeadAttention(12, 3).eval()
    q, k, v, g = (rng.standard_normal((3, 3, 5, 4)) for _ in range(4))  # (B, H, L, D)
    key_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool)
    results = []
    for output_attentions in (False, True):
        qt, kt, vt = (mm.tensor(t, requires_grad=True) for t in (q, k, v))
        context, probs = mha.attention(qt, kt, vt, key_mask, output_attentions)
        assert (probs is not None) == output_attentions
        context.backward(g)
        results.append([context.numpy(), qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()])
    for name, fused, reference in zip(("context", "dq", "dk", "dv"), *results):
        np.testing.assert_allclose(fused, reference, rtol=1e-12, atol=1e-12, err_msg=name)
        assert np.all(fused[2] == 0) and np.all(reference[2] == 0), name  # the row with no key
    assert np.all(results[0][2][1, :, 3:] == 0) and np.all(results[0][3][1, :, 3:] == 0)  # padding: no gradient


def test_reference_path_drops_with_the_module_dropout(batch):
    """In training the reference path drops probabilities with the module's nn.Dropout (p = 1: all
    dropped, context 0); the probabilities it returns are before dropout."""
    x, key_mask = batch
    mha = _double(nn.MultiHeadAttention(12, 3, dropout=1.0)).train()
    context, probs = mha(mm.tensor(x), key_mask, output_attentions=True)
    assert np.all(context.numpy() == 0)
    np.testing.assert_allclose(probs.numpy().sum(-1), 1, atol=1e-12)


def test_key_mask_accepts_bool_ints_and_tensors(batch):
    x, key_mask = batch
    mha = nn.MultiHeadAttention(12, 3).eval()
    xt = mm.tensor(x.astype(np.float32))
    results = [mha(xt, m)[0].numpy() for m in (key_mask, key_mask.astype(bool), mm.tensor(key_mask))]
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])
    assert not np.allclose(results[0], mha(xt)[0].numpy())  # the mask does something


def test_padding_does_not_change_real_tokens(batch):
    """What sits at padded positions has no influence on the outputs at real positions."""
    x, key_mask = batch
    layer = _double(nn.TransformerEncoderLayer(12, 3, 20)).eval()
    noisy = x.copy()
    noisy[key_mask == 0] = 100.0
    clean_out, _ = layer(mm.tensor(x), key_mask)
    noisy_out, _ = layer(mm.tensor(noisy), key_mask)
    real = key_mask == 1
    np.testing.assert_allclose(clean_out.numpy()[real], noisy_out.numpy()[real], atol=1e-12)


def test_attention_gradcheck(batch):
    x, key_mask = batch
    mha = _double(nn.MultiHeadAttention(12, 3)).eval()
    gradcheck(lambda t: mha(t, key_mask[:2, :4])[0], [x[:2, :4, :]])


@pytest.mark.parametrize("activation", ["gelu", "gelu_new", "relu"])
def test_encoder_layer_gradcheck(activation):
    rng = np.random.default_rng(1)
    mm.manual_seed(1)
    layer = _double(nn.TransformerEncoderLayer(6, 2, 8, activation=activation)).eval()
    for p in layer.parameters():  # move LayerNorm off 1/0 so its backward is exercised fully
        p.data += rng.standard_normal(p.shape) * 0.1
    key_mask = np.array([[1, 1, 1], [1, 1, 0]])
    gradcheck(lambda t: layer(t, key_mask)[0], [rng.standard_normal((2, 3, 6))])


def test_encoder_parameter_gradients_match_finite_differences():
    """Every parameter's gradient through a two-layer encoder, at a few random elements each."""
    rng = np.random.default_rng(2)
    mm.manual_seed(2)
    encoder = _double(nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 6), 2)).eval()
    for p in encoder.parameters():
        p.data += rng.standard_normal(p.shape) * 0.1
    x, key_mask, u = rng.standard_normal((2, 3, 4)), np.array([[1, 1, 1], [1, 0, 0]]), rng.standard_normal((2, 3, 4))

    def loss():
        return float((encoder(mm.tensor(x), key_mask)[0].numpy() * u).sum())

    (encoder(mm.tensor(x), key_mask)[0] * mm.tensor(u)).sum().backward()
    for name, p in encoder.named_parameters():
        for index in [tuple(rng.integers(0, n) for n in p.shape) for _ in range(3)]:
            original = p.data[index]
            p.data[index] = original + 1e-6
            plus = loss()
            p.data[index] = original - 1e-6
            minus = loss()
            p.data[index] = original
            assert abs(p.grad.numpy()[index] - (plus - minus) / 2e-6) < 1e-6 + 1e-5 * abs(plus - minus) / 2e-6, name


def test_attention_dropout_path():
    """Training with attention dropout runs separate ops: with p -> 0 it equals the fused kernel
    (value and gradient); with p = 1 every probability is dropped and the context is 0."""
    rng = np.random.default_rng(3)
    x, key_mask = rng.standard_normal((2, 4, 8)), np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    mha = _double(nn.MultiHeadAttention(8, 2, dropout=1e-12))
    outputs, grads = [], []
    for training in (True, False):
        mha.train(training)
        xt = mm.tensor(x, requires_grad=True)
        out, _ = mha(xt, key_mask)
        (out * mm.tensor(x)).sum().backward()
        outputs.append(out.numpy())
        grads.append(xt.grad.numpy())
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-9)
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-9)
    mha.dropout.p = 1.0
    mha.train()
    assert np.all(mha(mm.tensor(x), key_mask)[0].numpy() == 0)


def test_encoder_outputs_for_study():
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 3).eval()
    x = mm.randn(2, 4, 8)
    last, hidden, attentions = encoder(x, np.array([[1, 1, 1, 1], [1, 1, 1, 0]]), output_hidden_states=True,
                                       output_attentions=True)
    assert len(hidden) == 4 and hidden[0] is x and hidden[-1] is last
    assert len(attentions) == 3 and all(a.shape == (2, 2, 4, 4) for a in attentions)
    np.testing.assert_allclose(attentions[1].numpy().sum(-1), 1, atol=1e-6)
    assert encoder(x)[1:] == (None, None)


def test_encoder_layers_are_independent_copies_with_torch_names():
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2)
    names = [n for n, _ in encoder.named_parameters()]
    assert names[:4] == ["layers.0.self_attn.query.weight", "layers.0.self_attn.query.bias",
                         "layers.0.self_attn.key.weight", "layers.0.self_attn.key.bias"]
    assert {"layers.1.out_proj.weight", "layers.1.norm1.weight", "layers.1.linear1.weight",
            "layers.1.linear2.weight", "layers.1.norm2.bias"} <= set(names)
    first, second = encoder.layers[0].linear1.weight, encoder.layers[1].linear1.weight
    assert first is not second and first.data is not second.data
    first.data[...] = 0
    assert second.numpy().any()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="embed_dim 10 is not a multiple of num_heads 3"):
        nn.MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="activation 'swish' is not supported"):
        nn.TransformerEncoderLayer(8, 2, 16, activation="swish")
    mha = nn.MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"x must be \(B, L, 8\), got shape \(2, 3, 6\)"):
        mha(mm.randn(2, 3, 6))
    with pytest.raises(ValueError, match=r"key_mask must be \(B, L\) = \(2, 3\), got shape \(2, 4\)"):
        mha(mm.randn(2, 3, 8), np.ones((2, 4)))
    with pytest.raises(TypeError, match="key_mask must be boolean or 0/1 integers, got dtype float64"):
        mha(mm.randn(2, 3, 8), np.ones((2, 3)))
    padding = Padding.of(np.array([[True, True, False], [True, False, False]]))
    with pytest.raises(ValueError, match=r"x must be \(N, 8\) with N = 3, the rows its Padding keeps, got shape "
                                         r"\(2, 3, 8\)"):
        mha(mm.randn(2, 3, 8), padding)


def test_an_unpadded_batch_gives_the_padded_batchs_rows():
    """A Padding in place of the key mask: the layer on the (N, E) kept rows computes those rows of
    the (B, L, E) batch, gradients included (the padded rows' outputs feed nothing)."""
    layer = _double(nn.TransformerEncoderLayer(12, 3, 20)).eval()
    mask = np.array([[True, True, True, False, False], [True, True, False, False, False],
                     [True, False, True, True, True], [True, False, False, False, False],  # a hole; width 1
                     [False, False, True, True, False]])  # left padding: its first position kept, a query only
    padding = Padding.of(mask)
    kept = mask.copy()
    kept[:, 0] = True
    assert padding.cu_seqlens.tolist() == [0, 3, 5, 9, 10, 13]
    np.testing.assert_array_equal(padding.key_rows, mask[kept])
    x = np.random.default_rng(0).standard_normal((5, 5, 12))
    full, unpadded = mm.tensor(x, requires_grad=True), mm.tensor(x, requires_grad=True)
    y_full, _ = layer(full, mask)
    y_rows, _ = layer(padding.unpad(unpadded), padding)
    assert y_rows.shape == (int(kept.sum()), 12)
    np.testing.assert_allclose(y_rows.numpy(), y_full.numpy()[kept], atol=1e-12)
    weights = np.random.default_rng(1).standard_normal((int(kept.sum()), 12))
    (y_full[mm.tensor(kept)] * mm.tensor(weights)).sum().backward()
    (y_rows * mm.tensor(weights)).sum().backward()
    np.testing.assert_allclose(unpadded.grad.numpy(), full.grad.numpy(), atol=1e-12)


def test_unpadded_attention_gradcheck_with_dropout():
    """ops.unpadded_attention's backward, each sequence's dropout mask from its own seed, against finite
    differences (the seeds drawn anew from one manual seed at every call)."""
    padding = Padding.of(np.array([[True, True, True, False], [True, False, False, False], [True, True, False, False]]))
    assert padding.cu_seqlens.tolist() == [0, 3, 4, 6]
    rows = np.random.default_rng(2).standard_normal((3, len(padding.indices), 8))

    def attend(q, k, v):
        mm.manual_seed(0)
        return mm.ops.unpadded_attention(q, k, v, padding, heads=2, dropout_p=0.3)
    gradcheck(attend, list(rows))
    with pytest.raises(ValueError, match=r"q, k, v must be \(N, H \* D\) with N = 6"):
        mm.ops.unpadded_attention(*(mm.tensor(r[:5]) for r in rows), padding, heads=2)


def test_encoder_layer_computes_bert_layer():
    """nn.TransformerEncoderLayer (torch's names) and models.bert.BertLayer (Hugging Face's) are the
    same computation: with one's weights copied into the other, the same outputs and probabilities."""
    from minillm.models.bert import BertConfig, BertLayer

    torch_to_hf = {"self_attn.": "attention.self.", "out_proj.": "attention.output.dense.",
                   "norm1.": "attention.output.LayerNorm.", "linear1.": "intermediate.dense.",
                   "linear2.": "output.dense.", "norm2.": "output.LayerNorm."}
    config = BertConfig(vocab_size=10, hidden_size=12, num_hidden_layers=1, num_attention_heads=3,
                        intermediate_size=20, max_position_embeddings=8, type_vocab_size=1, hidden_act="gelu_new")
    bert_layer = _double(BertLayer(config)).eval()
    layer = _double(nn.TransformerEncoderLayer(12, 3, 20, activation="gelu_new")).eval()
    hf = dict(bert_layer.named_parameters())
    assert len(hf) == len(list(layer.parameters())) == 16
    for name, p in layer.named_parameters():
        prefix = next(k for k in torch_to_hf if name.startswith(k))
        p.data = hf[torch_to_hf[prefix] + name[len(prefix):]].data.copy()
    x, key_mask = np.random.default_rng(5).standard_normal((2, 5, 12)), np.array([[1] * 5, [1, 1, 1, 0, 0]])
    for output_attentions in (False, True):
        ours, probs = layer(mm.tensor(x), key_mask, output_attentions)
        theirs, bert_probs = bert_layer(mm.tensor(x), key_mask, output_attentions)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        assert probs is bert_probs is None or np.array_equal(probs.numpy(), bert_probs.numpy())
