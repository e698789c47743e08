"""minillm.explain against its oracles: Captum's LayerIntegratedGradients and torch's gradients on the same
checkpoint loaded in transformers; completeness; rollout, path weights and word grouping by hand."""
import io
import re

import numpy as np
import pytest

import minillm as mm
from conftest import optional
from finetune_helpers import tiny_model, tiny_tokenizer
from minillm import explain
from minillm.explain import render
from minillm.models.bert import BertForSequenceClassification
from minillm.tokenizer import BertTokenizer

RTOL = 1e-4  # per token, against Captum / torch (float32 on both sides)
TEXT, PAIR = "the acting was dull and the plot was great", "a fun movie"


@pytest.fixture(scope="session")
def captum(torch):
    return optional("captum.attr")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tokenizer, folder): a 3-class tiny BERT with every weight perturbed (no zero bias, no
    unit LayerNorm to hide a mix-up), saved by minillm."""
    folder = tmp_path_factory.mktemp("tiny-classifier")
    tokenizer = tiny_tokenizer(folder)
    model = tiny_model(3, num_labels=3)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] += rng.normal(0, 0.1, p.data.shape).astype(p.data.dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.eval(), tokenizer, folder


@pytest.fixture(scope="module")
def minilm(minilm_dir, tmp_path_factory):
    """(model, tokenizer, folder): the pretrained MiniLM with a seeded 2-class head, saved by minillm,
    then cast to float64: the seeded head's attributions are small, and in float32 the smallest (0.4%
    of the largest) differs from Captum's by rounding alone by 1.3e-4 of itself."""
    mm.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=2).eval()
    tokenizer = BertTokenizer.from_pretrained(minilm_dir)
    folder = tmp_path_factory.mktemp("minilm-classifier")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.to(dtype=np.float64), tokenizer, folder


def _hf(transformers, folder):
    return transformers.BertForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()


def _captum_ig(torch, captum, hf, tokenizer, text, text_pair, target, steps, method, output):
    """Captum's LayerIntegratedGradients on the word-embedding layer, from the "pad" baseline's ids:
    summed over the features, one per token; and Captum's convergence delta."""
    encoded = {k: torch.tensor(v) for k, v in tokenizer(text, text_pair).items()}
    ids = encoded["input_ids"]
    keep = torch.tensor([[t in ("[CLS]", "[SEP]") for t in tokenizer.convert_ids_to_tokens(ids[0])]])
    baseline = torch.where(keep, ids, tokenizer.pad_token_id)

    def forward(input_ids, attention_mask, token_type_ids):
        logits = hf(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        return logits if output == "logit" else logits.softmax(-1)

    lig = captum.LayerIntegratedGradients(forward, hf.bert.embeddings.word_embeddings)
    attributions, delta = lig.attribute(ids, baseline, target=target, n_steps=steps, method=method,
                                        additional_forward_args=(encoded["attention_mask"], encoded["token_type_ids"]),
                                        internal_batch_size=25, return_convergence_delta=True)
    return attributions.sum(-1)[0].detach().double().numpy(), float(delta)


def _close_per_token(ours, theirs, tokens):
    """Each token within RTOL of the oracle; [CLS] and [SEP] (equal to the baseline) exactly 0 on both sides."""
    special = np.array([t in ("[CLS]", "[SEP]") for t in tokens])
    assert np.all(ours[special] == 0) and np.all(theirs[special] == 0)
    relative = np.abs(ours - theirs)[~special] / np.abs(theirs)[~special]
    assert relative.max() < RTOL, (relative, ours, theirs)


@pytest.mark.parametrize("method, output, pair", [("gausslegendre", "logit", None),
                                                  ("riemann_middle", "probability", PAIR)])
def test_integrated_gradients_match_captum(tiny, torch, transformers, captum, method, output, pair):
    model, tokenizer, folder = tiny
    ours = explain.integrated_gradients(model, tokenizer, TEXT, pair, target=2, steps=50, method=method, output=output)
    theirs, delta = _captum_ig(torch, captum, _hf(transformers, folder), tokenizer, TEXT, pair, 2, 50, method, output)
    _close_per_token(ours.attributions, theirs, ours.tokens)
    assert ours.gap == pytest.approx(delta, abs=1e-5)  # Captum's delta: sum - (f(x) - f(baseline)), the same gap
    if pair is not None:
        assert ours.tokens.count("[SEP]") == 2


def test_integrated_gradients_match_captum_on_pretrained_minilm(minilm, torch, transformers, captum):
    """In float64 on both sides (the fixture says why)."""
    model, tokenizer, folder = minilm
    text = "an unwatchable, overlong mess"
    ours = explain.integrated_gradients(model, tokenizer, text, steps=50)
    theirs, _ = _captum_ig(torch, captum, _hf(transformers, folder).double(), tokenizer, text, None, ours.target, 50,
                           "gausslegendre", "logit")
    assert "##watch" in ours.tokens  # word pieces, grouped back for display
    _close_per_token(ours.attributions, theirs, ours.tokens)
    assert ours.relative_gap < 0.01


def test_gradient_x_input_matches_torch(tiny, torch, transformers):
    model, tokenizer, folder = tiny
    hf = _hf(transformers, folder)
    ours = explain.gradient_x_input(model, tokenizer, TEXT, PAIR, target=1)
    encoded = {k: torch.tensor(v) for k, v in tokenizer(TEXT, PAIR).items()}
    x = hf.bert.embeddings.word_embeddings(encoded.pop("input_ids")).detach().requires_grad_()
    hf(inputs_embeds=x, **encoded).logits[0, 1].backward()
    theirs = (x.grad * x).sum(-1)[0].detach().double().numpy()
    assert np.abs(ours.attributions - theirs).max() / np.abs(theirs).max() < RTOL
    assert np.all(np.abs(ours.attributions - theirs) <= RTOL * np.abs(theirs) + 1e-7)


def test_completeness_gap_shrinks_with_steps(tiny):
    """Gauss-Legendre at 50 steps closes the gap to rounding; a 4-step left Riemann sum leaves a visible one."""
    model, tokenizer, _ = tiny
    fine = explain.integrated_gradients(model, tokenizer, TEXT, steps=50)
    coarse = explain.integrated_gradients(model, tokenizer, TEXT, steps=4, method="riemann_left")
    assert fine.relative_gap < 1e-4
    assert coarse.relative_gap > 100 * fine.relative_gap
    assert fine.f_input == pytest.approx(coarse.f_input) and fine.f_baseline == pytest.approx(coarse.f_baseline)


def test_chunks_of_the_path_add_up_to_one_pass(tiny):
    model, tokenizer, _ = tiny
    whole = explain.integrated_gradients(model, tokenizer, TEXT, steps=12, batch_size=12)
    one_by_one = explain.integrated_gradients(model, tokenizer, TEXT, steps=12, batch_size=5)
    np.testing.assert_allclose(one_by_one.attributions, whole.attributions, rtol=1e-5, atol=1e-9)


def test_baselines_and_targets(tiny):
    model, tokenizer, _ = tiny
    pad = explain.integrated_gradients(model, tokenizer, TEXT, steps=8)
    ids = tokenizer(TEXT)["input_ids"][0]
    pad_ids = np.where(np.isin(pad.tokens, ["[CLS]", "[SEP]"]), ids, tokenizer.pad_token_id)
    assert pad.target == int(pad.probabilities.argmax())
    np.testing.assert_array_equal(explain.integrated_gradients(model, tokenizer, TEXT, baseline=pad_ids,
                                                               steps=8).attributions, pad.attributions)
    zero = explain.integrated_gradients(model, tokenizer, TEXT, baseline=np.zeros((len(ids), 16)), steps=8)
    assert zero.attributions[0] != 0  # a zero-embedding baseline differs at [CLS] too
    other = explain.integrated_gradients(model, tokenizer, TEXT, target=(pad.target + 1) % 3, steps=8)
    assert not np.allclose(other.attributions, pad.attributions)
    with pytest.raises(ValueError, match=r"baseline must be 'pad', token ids of shape \(11,\)"):
        explain.integrated_gradients(model, tokenizer, TEXT, baseline=np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match="target 3 is not a class of this model"):
        explain.gradient_x_input(model, tokenizer, TEXT, target=3)
    with pytest.raises(ValueError, match="method='simpson'"):
        explain.integrated_gradients(model, tokenizer, TEXT, method="simpson")
    with pytest.raises(TypeError, match="needs a classifier"):
        explain.gradient_x_input(model.bert, tokenizer, TEXT)


def test_the_model_keeps_no_gradients(tiny):
    model, tokenizer, _ = tiny
    explain.integrated_gradients(model, tokenizer, TEXT, steps=4)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_inputs_embeds_is_the_word_embeddings_path(tiny):
    model, tokenizer, _ = tiny
    batch = tokenizer([TEXT, "a dull film"])
    ids = batch.pop("input_ids")
    embeds = mm.Tensor(model.bert.embeddings.word_embeddings.weight.numpy()[ids])
    np.testing.assert_array_equal(model(inputs_embeds=embeds, **batch).logits.numpy(),
                                  model(ids, **batch).logits.numpy())
    with pytest.raises(ValueError, match="not both"):
        model(ids, inputs_embeds=embeds)
    with pytest.raises(ValueError, match=r"inputs_embeds must be a Tensor \(batch, sequence length, hidden_size=16\)"):
        model(inputs_embeds=embeds.numpy())
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(inputs_embeds=embeds, attention_mask=batch["attention_mask"][:, :3])


def test_path_weights_are_captums(captum):
    from captum.attr._utils.approximation_methods import approximation_parameters

    for method in explain.attributions.METHODS:
        step_sizes, alphas = approximation_parameters(method)
        ours_alphas, ours_weights = explain.path_weights(method, 7)
        np.testing.assert_allclose(ours_alphas, alphas(7), atol=1e-7)
        # Captum's trapezoid weights sum to 6/7 over 7 points (its slices are 1/7 wide, not 1/6): ours sum to 1
        expected = np.asarray(step_sizes(7)) * (7 / 6 if method == "riemann_trapezoid" else 1)
        np.testing.assert_allclose(ours_weights, expected, atol=1e-12)
        assert ours_weights.sum() == pytest.approx(1)


def test_rollout_by_hand():
    """One layer: the heads' mean, half kept for the residual. Two layers: the later one applied last
    (R = A2~ A1~, not A1~ A2~; the two differ for these matrices)."""
    heads = np.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])  # (H=2, L=2, L)
    np.testing.assert_allclose(explain.rollout(heads[None]), [[0.75, 0.25], [0.25, 0.75]])
    a1, a2 = np.array([[[0.9, 0.1], [0.2, 0.8]]]), np.array([[[0.3, 0.7], [0.6, 0.4]]])
    t1, t2 = (a1[0] + np.eye(2)) / 2, (a2[0] + np.eye(2)) / 2
    r = explain.rollout(np.stack([a1, a2]))
    np.testing.assert_allclose(r, t2 @ t1)
    assert not np.allclose(r, t1 @ t2)
    np.testing.assert_allclose(r.sum(-1), 1)


def test_attention_rollout_of_the_model(tiny):
    model, tokenizer, _ = tiny
    e = explain.attention_rollout(model, tokenizer, TEXT)
    out = model(**tokenizer(TEXT), output_attentions=True)
    expected = explain.rollout(np.stack([a.numpy()[0] for a in out.attentions]))[0]
    np.testing.assert_allclose(e.attributions, expected)
    assert e.attributions.sum() == pytest.approx(1) and e.gap is None


def test_word_pieces_grouped_into_words():
    tokens = ["[CLS]", "un", "##watch", "##able", ",", "mess", "[SEP]"]
    words = explain.group_words(tokens, [0, 0.5, -0.25, 1.0, 0.1, 2.0, 0])
    assert [(w, v) for w, v, _ in words] == [("[CLS]", 0), ("unwatchable", 1.25), (",", 0.1), ("mess", 2.0),
                                             ("[SEP]", 0)]
    assert words[1][2] == [("un", 0.5), ("##watch", -0.25), ("##able", 1.0)]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_colours_on_a_terminal_only(tiny, monkeypatch):
    _, _, folder = tiny
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal, plain = _Terminal(), io.StringIO()
    assert render.main(folder, TEXT, steps=4, out=terminal) == 0 and render.main(folder, TEXT, steps=4, out=plain) == 0
    assert "\033[48;2;" in terminal.getvalue() and "\033[" not in plain.getvalue()
    assert re.sub(r"\033\[[0-9;]*m", "", terminal.getvalue()) == plain.getvalue()  # the same text, painted
    monkeypatch.setenv("NO_COLOR", "1")
    terminal = _Terminal()
    render.main(folder, TEXT, steps=4, out=terminal)
    assert terminal.getvalue() == plain.getvalue()


def test_report_shows_pieces_and_the_gap():
    e = explain.Explanation("integrated gradients", ["[CLS]", "over", "##long", "[SEP]"], np.array([0, 0.25, 0.5, 0]),
                            np.array([0.2, 0.8]), 1, "positive", "logit", f_input=1.0, f_baseline=0.2, steps=50)
    text = render.report(e)
    assert "prediction: 1  p(0)=0.2000  p(1)=0.8000" in text
    assert "difference +0.800000; sum of attributions +0.750000; gap -5.00e-02 (6.250% of the difference)" in text
    assert re.search(r"^  overlong +\+0\.7500  = over \+0\.2500 ##long \+0\.5000$", text, re.M)


def test_each_method_leaves_the_model_in_the_mode_it_found(tiny):
    model, tokenizer, _ = tiny
    model.train()
    for method in (explain.integrated_gradients, explain.gradient_x_input, explain.attention_rollout):
        method(model, tokenizer, TEXT)
        assert model.training, method.__name__
    model.eval()


def test_relative_gap_where_the_baseline_scores_as_the_input():
    same = explain.Explanation("integrated gradients", ["[CLS]"], np.zeros(1), np.ones(1), 0, "LABEL_0",
                               "logit", f_input=1.5, f_baseline=1.5, steps=2)
    assert same.relative_gap == 0.0
    same.attributions = np.ones(1)
    assert same.relative_gap == float("inf")
