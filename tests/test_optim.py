"""Optimizers, schedules and gradient clipping: against their formulas and against torch."""
import copy
import math

import numpy as np
import pytest

import minillm as mm
from minillm import kernels
from minillm.kernels.adamw import adamw_step
from minillm.nn import Parameter
from minillm.nn.utils import clip_grad_norm_
from minillm.optim import SGD, AdamW, LambdaLR, get_linear_schedule_with_warmup
from minillm.optim.adamw import adamw_update, update

SHAPES = [(40, 30), (30,), (70_000,)]  # the last is big enough for the kernel's threaded path
MODES = ["compiled", "numpy"]


def arrays(rng, dtype=np.float32, scale=1.0):
    return [(rng.standard_normal(s) * scale).astype(dtype) for s in SHAPES]


def grad_steps(seed, n, dtype=np.float32):
    """n lists of gradients; the second parameter has no gradient at step 2 (it must be skipped)."""
    rng = np.random.default_rng(seed)
    steps = [arrays(rng, dtype) for _ in range(n)]
    steps[2][1] = None
    return steps


def run_minillm(optimizer_fn, init, steps, mode):
    params = [Parameter(a.copy()) for a in init]
    optimizer = optimizer_fn(params)
    with kernels.use(mode):
        for grads in steps:
            for p, g in zip(params, grads):
                p.grad = None if g is None else mm.Tensor(g.copy())
            optimizer.step()
    return [p.data for p in params]


def run_torch(torch, optimizer_fn, init, steps):
    params = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    optimizer = optimizer_fn(params)
    for grads in steps:
        for p, g in zip(params, grads):
            p.grad = None if g is None else torch.tensor(g)
        optimizer.step()
    return [p.detach().numpy() for p in params]


def groups(params, **second):
    """The BERT recipe's shape: decay on the first two tensors, a different setting on the last."""
    return [{"params": params[:2]}, {"params": params[2:], **second}]


# ---- AdamW -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_adamw_matches_torch_over_steps_and_groups(torch, mode):
    init = arrays(np.random.default_rng(0))
    steps = grad_steps(1, 6)
    options = dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    ours = run_minillm(lambda ps: AdamW(groups(ps, weight_decay=0.0, lr=1e-2), **options), init, steps, mode)
    theirs = run_torch(torch, lambda ps: torch.optim.AdamW(groups(ps, weight_decay=0.0, lr=1e-2), **options),
                       init, steps)
    for a, b, before in zip(ours, theirs, init):
        assert not np.allclose(a, before)  # the update did something
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def adamw_formula(p, grads, lr, beta1, beta2, eps, wd):
    """The paper's AdamW, written out plainly in float64 (no folded scalars, no in-place tricks)."""
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p = p - lr * wd * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize("mode", MODES)
def test_adamw_matches_its_formula_in_float64(mode):
    rng = np.random.default_rng(2)
    init = arrays(rng, np.float64)
    steps = [arrays(rng, np.float64) for _ in range(5)]
    ours = run_minillm(lambda ps: AdamW(ps, lr=0.05, betas=(0.9, 0.95), eps=1e-3, weight_decay=0.2),
                       init, steps, mode)
    for i, a in enumerate(ours):
        expected = adamw_formula(init[i], [s[i] for s in steps], 0.05, 0.9, 0.95, 1e-3, 0.2)
        np.testing.assert_allclose(a, expected, rtol=1e-12, atol=1e-13)


def test_adamw_fused_kernel_equals_the_python_update():
    """kernels.adamw_step (csrc/adamw.pyx) against adamw_update, the update as optim/adamw.py writes it."""
    assert kernels.load("adamw") is not None, "the compiled AdamW kernel (csrc/adamw.pyx) is not built"
    rng = np.random.default_rng(3)
    start = [rng.standard_normal(100_003).astype(np.float32) for _ in range(2)] + [
        rng.random(100_003).astype(np.float32) for _ in range(2)]  # p, g, m, v (v >= 0)
    scalars = dict(decay=0.999, beta1=0.9, beta2=0.999, step_size=1e-2, bias_correction2_sqrt=0.3, eps=1e-8)
    fused, python = ([a.copy() for a in start] for _ in range(2))
    adamw_step(*fused, **scalars)
    adamw_update(*python, **scalars)
    for i in (0, 2, 3):  # p, m, v
        assert not np.array_equal(fused[i], start[i])
        np.testing.assert_allclose(fused[i], python[i], rtol=2e-6, atol=1e-7)


def test_adamw_runs_the_python_update_in_numpy_mode(monkeypatch):
    """The optimizer's update is the fused kernel in compiled mode and adamw_update in numpy mode;
    kernels.adamw_step alone has no NumPy twin."""
    calls = []
    monkeypatch.setattr(update, "numpy", lambda *args: calls.append(args) or adamw_update(*args))
    p = Parameter(np.ones(5, np.float32))
    p.grad = mm.Tensor(np.ones(5, np.float32))
    optimizer = AdamW([p])
    optimizer.step()
    assert not calls
    with kernels.use("numpy"):
        optimizer.step()
        assert len(calls) == 1
        with pytest.raises(TypeError, match="adamw_step: no fused twin"):
            adamw_step(p.data, p.grad.data, p.data.copy(), p.data.copy(), decay=1.0, beta1=0.9, beta2=0.999,
                       step_size=1e-3, bias_correction2_sqrt=1.0, eps=1e-8)


def test_adamw_zero_lr_and_zero_grad_leave_weights_alone():
    p = Parameter(np.ones(5, np.float32))
    p.grad = mm.Tensor(np.zeros(5, np.float32))
    AdamW([p], lr=0.0).step()
    np.testing.assert_array_equal(p.data, 1)
    AdamW([p], lr=0.1, weight_decay=0.0).step()  # m = 0, so only eps-sized 0/eps updates: none
    np.testing.assert_array_equal(p.data, 1)


@pytest.mark.parametrize("mode", MODES)
def test_adamw_state_dict_resumes_exactly(mode):
    init = arrays(np.random.default_rng(4))
    steps = grad_steps(5, 6)
    make = lambda ps: AdamW(groups(ps, weight_decay=0.0), lr=1e-2)  # noqa: E731
    straight = run_minillm(make, init, steps, mode)

    params = [Parameter(a.copy()) for a in init]
    first = make(params)
    with kernels.use(mode):
        for grads in steps[:3]:
            for p, g in zip(params, grads):
                p.grad = None if g is None else mm.Tensor(g.copy())
            first.step()
    saved = copy.deepcopy(first.state_dict())
    assert saved["param_groups"][1]["params"] == [2] and saved["state"][0]["step"] == 3
    resumed = [Parameter(p.data.copy()) for p in params]
    second = make(resumed)
    second.load_state_dict(saved)
    with kernels.use(mode):
        for grads in steps[3:]:
            for p, g in zip(resumed, grads):
                p.grad = mm.Tensor(g.copy())
            second.step()
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b.data)


def test_load_state_dict_rejects_a_different_model():
    params = [Parameter(np.ones((2, 3), np.float32))]
    optimizer = AdamW(params)
    params[0].grad = mm.Tensor(np.ones((2, 3), np.float32))
    optimizer.step()
    state = optimizer.state_dict()
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*\(3, 2\)"):
        AdamW([Parameter(np.ones((3, 2), np.float32))]).load_state_dict(state)
    with pytest.raises(ValueError, match="saved state has 1 parameter groups, this optimizer has 2"):
        AdamW([{"params": [Parameter(np.ones(1, np.float32))]}, {"params": params}]).load_state_dict(state)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        optimizer.load_state_dict({"state": {}})


def test_optimizer_arguments_are_checked():
    p = Parameter(np.ones(2, np.float32))
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([])
    with pytest.raises(ValueError, match="learning rate -1"):
        AdamW([p], lr=-1)
    with pytest.raises(ValueError, match="betas"):
        AdamW([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="more than one parameter group"):
        AdamW([{"params": [p]}, {"params": [p]}])
    with pytest.raises(TypeError, match="only optimize Tensors"):
        AdamW([np.ones(2)])
    with pytest.raises(ValueError, match="unknown options.*momentum"):
        AdamW([{"params": [p], "momentum": 0.9}])
    with pytest.raises(ValueError, match="non-leaf"):
        AdamW([p * 2])
    with pytest.raises(TypeError, match="single Tensor"):
        AdamW(p)


def test_zero_grad():
    p = Parameter(np.ones(2, np.float32))
    optimizer = SGD([p], lr=0.1)
    p.grad = mm.Tensor(np.ones(2, np.float32))
    optimizer.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.data, 0)
    optimizer.zero_grad()
    assert p.grad is None


def test_adamw_kernel_rejects_bad_arrays():
    p, g = np.zeros(4, np.float32), np.zeros(4, np.float32)
    scalars = dict(decay=1.0, beta1=0.9, beta2=0.999, step_size=1e-3, bias_correction2_sqrt=1.0, eps=1e-8)
    with pytest.raises(ValueError, match=r"grad is float32 \(5,\)"):
        adamw_step(p, np.zeros(5, np.float32), p.copy(), p.copy(), **scalars)
    with pytest.raises(ValueError, match="exp_avg is float64"):
        adamw_step(p, g, np.zeros(4), p.copy(), **scalars)
    with pytest.raises(TypeError, match="float32 or float64, got int64"):
        adamw_step(np.zeros(4, np.int64), g, p, p, **scalars)
    strided = np.zeros(8, np.float32)[::2]
    with pytest.raises(ValueError, match="param must be a writable C-contiguous"):
        adamw_step(strided, g, p.copy(), p.copy(), **scalars)


# ---- SGD ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [dict(momentum=0.9), dict(momentum=0.9, dampening=0.3, weight_decay=0.01),
                                     dict(momentum=0.8, nesterov=True), dict()])
def test_sgd_matches_torch(torch, options):
    init = arrays(np.random.default_rng(6))
    steps = grad_steps(7, 5)
    ours = run_minillm(lambda ps: SGD(groups(ps, lr=0.05), lr=0.1, **options), init, steps, "numpy")
    theirs = run_torch(torch, lambda ps: torch.optim.SGD(groups(ps, lr=0.05), lr=0.1, **options), init, steps)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---- schedules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("warmup, total", [(10, 100), (0, 7), (3, 3), (5, 2)])
def test_linear_schedule_matches_transformers(transformers, torch, warmup, total):
    ours_opt = AdamW([{"params": [Parameter(np.ones(1, np.float32))]},
                      {"params": [Parameter(np.ones(1, np.float32))], "lr": 1e-3}], lr=5e-5)
    theirs_opt = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.ones(1))]},
                                    {"params": [torch.nn.Parameter(torch.ones(1))], "lr": 1e-3}], lr=5e-5)
    ours = get_linear_schedule_with_warmup(ours_opt, warmup, total)
    theirs = transformers.get_linear_schedule_with_warmup(theirs_opt, warmup, total)
    for _ in range(total + 3):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12, abs=0)
        assert [g["lr"] for g in ours_opt.param_groups] == ours.get_last_lr()
        ours_opt.step(), theirs_opt.step()
        ours.step(), theirs.step()


def test_schedule_state_dict_resumes():
    make_opt = lambda: AdamW([Parameter(np.ones(1, np.float32))], lr=1.0)  # noqa: E731
    optimizer = make_opt()
    schedule = get_linear_schedule_with_warmup(optimizer, 4, 20)
    for _ in range(6):
        schedule.step()
    state = copy.deepcopy(schedule.state_dict())
    resumed_opt = make_opt()
    resumed = get_linear_schedule_with_warmup(resumed_opt, 4, 20)
    resumed.load_state_dict(state)
    for _ in range(5):
        schedule.step(), resumed.step()
        assert resumed.get_last_lr() == schedule.get_last_lr()
        assert resumed_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert schedule.get_last_lr() == [pytest.approx((20 - 11) / 16)]


def test_lambda_lr_checks_its_functions():
    optimizer = AdamW([Parameter(np.ones(1, np.float32))])
    with pytest.raises(ValueError, match="2 lr_lambdas for 1"):
        LambdaLR(optimizer, [lambda s: 1, lambda s: 1])
    with pytest.raises(ValueError, match="warmup -1"):
        get_linear_schedule_with_warmup(optimizer, -1, 10)


# ---- clip_grad_norm_ ---------------------------------------------------------------------------

@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e4])
def test_clip_grad_norm_matches_torch(torch, norm_type, max_norm):
    grads = arrays(np.random.default_rng(8))[:2]
    ours = [Parameter(np.zeros_like(g)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = mm.Tensor(g.copy()), torch.tensor(g)
    total = clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.data, q.grad.numpy(), rtol=1e-6, atol=1e-9)


def test_clip_grad_norm_scales_to_max_norm_and_handles_shared_arrays():
    shared = np.full(4, 3.0, np.float32)
    a, b = Parameter(np.zeros(4, np.float32)), Parameter(np.zeros(4, np.float32))
    a.grad, b.grad = mm.Tensor(shared), mm.Tensor(shared)  # one array behind two gradients
    total = clip_grad_norm_([a, b], 1.0)
    assert total.item() == pytest.approx(np.sqrt(8 * 9.0))
    new_norm = np.sqrt((a.grad.data ** 2).sum() + (b.grad.data ** 2).sum())
    assert new_norm == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(shared, 3.0)  # scaled copies, not the array twice in place


def test_clip_grad_norm_nonfinite():
    p = Parameter(np.zeros(2, np.float32))
    p.grad = mm.Tensor(np.array([np.inf, 1.0], np.float32))
    with pytest.raises(RuntimeError, match="norm of order 2.0 of the gradients is inf"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert math.isinf(clip_grad_norm_([p], 1.0).item())
    assert clip_grad_norm_([Parameter(np.zeros(2, np.float32))], 1.0).item() == 0.0
