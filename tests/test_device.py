"""Devices as in torch: names, moves, errors, and (on a GPU) the same numbers as on the host.

The first half runs everywhere: device names, host moves, what ``device="cuda"`` says when there is
no GPU, and the one-device-per-op rule (checked with a stand-in device array, since a machine
without a GPU has no real one). The second half needs a GPU (the `cupy` fixture skips without one).
"""
import contextlib
import types

import numpy as np
import pytest

import minillm as mm
from minillm import backend, cuda
from minillm.models.bert import BertConfig, BertForSequenceClassification
from minillm.optim import AdamW
from minillm.tensor import same_device

from conftest import REPO


def tiny_config(**overrides):
    return BertConfig(**{**dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=24), **overrides})


def test_device_names_parse_and_compare_as_torch():
    assert str(mm.device("cuda")) == "cuda:0" and mm.device("cuda") == "cuda:0" == mm.device("cuda:0")
    assert mm.device("cpu") == "cpu" and mm.device("cpu") != "cuda"
    assert mm.device("cuda:1").index == 1 and mm.device("cpu").index is None
    for bad in ("gpu", "cuda:x", "cpu:0", ""):
        with pytest.raises(ValueError, match=f"unknown device {bad!r}"):
            mm.device(bad)


def test_host_tensors_and_moves():
    t = mm.tensor([1.0, 2.0], device="cpu", requires_grad=True)
    assert t.device == "cpu" and not t.is_cuda
    assert t.to("cpu") is t and t.cpu() is t and t.to(mm.float32) is t
    assert mm.zeros(2, 3, device="cpu").device == "cpu" and mm.arange(3, device="cpu").dtype == np.int64
    d = t.to("cpu", mm.float64)
    assert d.dtype == np.float64 and d.requires_grad
    d.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [1, 1])


@pytest.mark.skipif(cuda.is_available(), reason="checks the message given where there is no GPU")
def test_cuda_without_a_gpu_is_a_clear_runtime_error():
    reason = cuda.unavailable_reason()
    assert reason and ("CuPy is not installed" in reason or "no CUDA device" in reason)
    assert not cuda.is_available() and cuda.device_count() == 0
    with pytest.raises(RuntimeError, match=r"device 'cuda' is not available: .*(CuPy|CUDA)"):
        mm.tensor([1.0], device="cuda")
    with pytest.raises(RuntimeError, match="device 'cuda' is not available"):
        mm.ones(3).to("cuda")
    model = BertForSequenceClassification(tiny_config())
    before = model.classifier.weight.data
    with pytest.raises(RuntimeError, match="device 'cuda:0' is not available"):
        model.to("cuda:0")
    assert model.classifier.weight.data is before  # nothing moved


@pytest.mark.skipif(cuda.is_available(), reason="checks the message given where there is no GPU")
def test_cli_device_without_a_gpu_is_a_usage_error(capsys):
    from minillm.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--model", "unused", "--device", "cuda", "a text"])
    assert exit_.value.code == 2
    assert "argument --device: device 'cuda' is not available" in capsys.readouterr().err


def test_model_to_casts_every_parameter_in_place():
    model = BertForSequenceClassification(tiny_config())
    params = list(model.parameters())
    assert model.to(mm.float64) is model
    assert list(model.parameters()) == params and all(p.dtype == np.float64 for p in params)
    ids = np.array([[2, 5, 7, 3]])
    assert model(ids).logits.dtype == np.float64


class FakeDeviceArray(np.ndarray):
    """Stands in for a CuPy array: a host array that says it lives on GPU 0."""
    device = types.SimpleNamespace(id=0)


@pytest.fixture
def fake_gpu(monkeypatch):
    """backend with a stand-in CuPy whose arrays are FakeDeviceArray: enough to test the device rule."""
    fake = types.SimpleNamespace(ndarray=FakeDeviceArray,
                                 asarray=lambda a, dtype=None: np.asarray(a, dtype).view(FakeDeviceArray),
                                 cuda=types.SimpleNamespace(Device=lambda i: contextlib.nullcontext(),
                                                            runtime=types.SimpleNamespace(getDeviceCount=lambda: 1)))
    monkeypatch.setattr(backend, "cupy", fake)
    return fake


def test_an_op_on_two_devices_names_both(fake_gpu):
    host = mm.tensor([1.0, 2.0])
    gpu = mm.Tensor(np.ones(2, np.float32).view(FakeDeviceArray))
    assert gpu.device == "cuda:0" and gpu.is_cuda
    with pytest.raises(RuntimeError, match="add: expected all tensors on one device, got cpu and cuda:0"):
        host + gpu
    with pytest.raises(RuntimeError, match="matmul: expected all tensors on one device, got cpu and cuda:0"):
        gpu.reshape(1, 2) @ host.reshape(2, 1)


def test_plain_arrays_follow_the_tensors_device(fake_gpu):
    gpu = mm.Tensor(np.ones((2, 3), np.float32).view(FakeDeviceArray))
    target = np.array([0, 2])
    arrays = same_device("cross_entropy", (gpu, target), [gpu.data, target])
    assert arrays[0] is gpu.data and isinstance(arrays[1], FakeDeviceArray)
    np.testing.assert_array_equal(arrays[1], target)


# ---- on a GPU ---------------------------------------------------------------------------------------
def test_tensors_move_to_the_gpu_and_back(cupy):
    t = mm.tensor([[1.0, 2.0], [3.0, 4.0]], device="cuda", requires_grad=True)
    assert t.device == "cuda:0" and isinstance(t.data, cupy.ndarray) and "device='cuda:0'" in repr(t)
    host = mm.tensor([[1.0], [1.0]], requires_grad=True)
    y = (t @ host.cuda()).cpu()
    assert y.device == "cpu"
    y.sum().backward()
    assert t.grad.device == "cuda:0" and host.grad.device == "cpu"
    np.testing.assert_allclose(t.grad.numpy(), np.ones((2, 2)))
    np.testing.assert_allclose(host.grad.numpy(), [[4.0], [6.0]])
    for make in (mm.zeros, mm.ones, mm.randn, mm.rand):
        assert make(2, 3, device="cuda").device == "cuda:0"


def test_training_step_on_the_gpu_matches_the_host(cupy):
    """The same model, batch and AdamW step on host and GPU: losses, gradients and weights agree."""
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    mm.manual_seed(0)
    host = BertForSequenceClassification(config)
    gpu = BertForSequenceClassification(config)
    gpu.load_state_dict(host.state_dict())
    gpu.to("cuda")
    ids = np.array([[2, 5, 7, 3, 0], [2, 9, 3, 0, 0]])
    mask, labels = (ids != 0).astype(np.int64), np.array([1, 0])
    results = []
    for model in (host, gpu):
        model.train()
        optimizer = AdamW(model.parameters(), lr=1e-3)
        loss = model(ids, mask, labels=labels).loss
        loss.backward()
        norm = mm.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        assert all(s["exp_avg"].__class__ is type(p.data) for p, s in optimizer.state.items())
        results.append((loss.item(), norm.item(), {k: backend.to_host(v) for k, v in model.state_dict().items()}))
    (loss_h, norm_h, state_h), (loss_g, norm_g, state_g) = results
    assert loss_g == pytest.approx(loss_h, rel=1e-5) and norm_g == pytest.approx(norm_h, rel=1e-4)
    for name in state_h:
        np.testing.assert_allclose(state_g[name], state_h[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_save_and_load_pretrained_from_the_gpu(cupy, tmp_path):
    model = BertForSequenceClassification(tiny_config()).to("cuda")
    model.save_pretrained(tmp_path)
    again = BertForSequenceClassification.from_pretrained(tmp_path)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(backend.to_host(a), b, err_msg=name)


def test_the_example_runs_on_the_gpu(cupy, minilm_dir):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, str(REPO / "examples" / "finetune_sentiment.py"), "--model",
                          str(minilm_dir), "--device", "cuda"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "Predicted label:" in run.stdout
