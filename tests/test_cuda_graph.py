"""A training step captured as a CUDA graph (minillm/training/cuda_graph.py) and what it needs:
AdamW(capturable=True), products through cuBLAS while capturing, no waits inside the step.

On any machine: the refusals (dropout, a host model, bucketing, shapes and ids of a batch), the
batch padding that keeps a step's loss and gradients, and AdamW(capturable=True) equal to AdamW()
on the host. On a GPU (the `cupy` fixture skips without one): the capturable kernel bit for bit, the
ctypes cuBLAS product against cupy.matmul, captured steps against eager ones, a failed capture, no
memory growth over replays, and the Trainer and CLI with cuda_graph."""
import json

import numpy as np
import pytest

from finetune_helpers import tiny_model, tiny_tokenizer, toy_texts
from minillm import backend, cuda
from minillm.cli import main
from minillm.data import TextClassificationDataset, pad_batch
from minillm.nn import Parameter
from minillm.optim import AdamW, get_linear_schedule_with_warmup
from minillm.tensor import Tensor
from minillm.training import CapturedStep, Trainer, TrainingArguments, cuda_graph, train_step
from minillm.training.loop import decay_groups


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tokenizer = tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    train = TextClassificationDataset(tokenizer, *toy_texts(21, seed=1), max_length=24)  # 21: a ragged last batch
    dev = TextClassificationDataset(tokenizer, *toy_texts(8, seed=2), max_length=24)
    return tokenizer, train, dev


def batch_of(data, indices, pad=0):
    return pad_batch([data[i] for i in indices], pad)


# ---- on any machine ---------------------------------------------------------------------------------
def test_is_capturing_is_false_outside_a_capture():
    assert cuda.is_capturing() is False


def test_arguments_refuse_bucketing_and_keep_the_recipe(tmp_path):
    with pytest.raises(ValueError, match="cuda_graph=True pads every batch to one shape, so bucket=True"):
        TrainingArguments(output_dir=str(tmp_path), cuda_graph=True, bucket=True)
    eager, graph = (TrainingArguments(output_dir=str(tmp_path), cuda_graph=flag) for flag in (False, True))
    assert graph.recipe() == eager.recipe()  # same batches and steps: a run resumes with or without it


def test_trainer_refuses_dropout_and_a_host_model(toy, tmp_path):
    tokenizer, train, _ = toy
    args = TrainingArguments(output_dir=str(tmp_path), cuda_graph=True, progress=False)
    with pytest.raises(ValueError, match=r"without dropout.*bert\.embeddings\.dropout \(p=0\.1\).*"
                                         r"hidden_dropout_prob=0 and attention_probs_dropout_prob=0"):
        Trainer(tiny_model(dropout=0.1), args, train, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"needs the model on a GPU \(model.to\('cuda'\)\); it is on cpu"):
        Trainer(tiny_model(dropout=0.0), args, train, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="single-label classifiers .* num_labels=1"):
        Trainer(tiny_model(dropout=0.0, num_labels=1), args, train, tokenizer=tokenizer)


def test_cli_turns_dropout_off_and_needs_a_gpu(tmp_path, capsys):
    folder, data = tmp_path / "model", tmp_path / "data"
    folder.mkdir(), data.mkdir()
    tiny_tokenizer(folder).save_pretrained(folder)
    tiny_model(0, dropout=0.1).save_pretrained(folder)
    for name, seed in (("train.tsv", 1), ("dev.tsv", 2)):
        texts, labels = toy_texts(8, seed=seed)
        (data / name).write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))
    code = main(["finetune", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "out"),
                 "--cuda-graph", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "dropout is off" in err and "needs the model on a GPU" in err  # not: "without dropout"


def test_full_batch_keeps_the_loss_and_gradients(toy):
    """The last batch, padded to the training width and filled with ignored rows, trains exactly
    as the short batch (float64, so only the padding could make a difference)."""
    tokenizer, train, _ = toy
    short = batch_of(train, [16, 17, 18, 19, 20], tokenizer.pad_token_id)
    width = int(train.lengths.max()) + 3
    full = cuda_graph.full_batch(short, 8, width, tokenizer.pad_token_id)
    assert {k: v.shape for k, v in full.items()} == {"input_ids": (8, width), "token_type_ids": (8, width),
                                                     "attention_mask": (8, width), "labels": (8,)}
    assert (full["labels"][5:] == -100).all() and (full["attention_mask"][5:].sum(axis=1) == 1).all()
    results = []
    for batch in (short, full):
        model = tiny_model(3, dropout=0.0).to(dtype=np.float64)
        model.train()
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.item(), [p.grad.numpy() for p in model.parameters()]))
    (loss_short, grads_short), (loss_full, grads_full) = results
    assert loss_full == pytest.approx(loss_short, rel=1e-12)
    for a, b in zip(grads_full, grads_short):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="does not fit"):
        cuda_graph.full_batch(short, 4, 30)


def test_host_batch_errors_name_the_key_and_shapes(toy):
    tokenizer, train, _ = toy
    model = tiny_model(dropout=0.0)
    batch = cuda_graph.full_batch(batch_of(train, range(8)), 8, 24)
    like = {key: np.empty_like(value) for key, value in batch.items()}
    checked = cuda_graph.host_batch(batch, like, model)
    assert checked.keys() == batch.keys()
    assert all(a.flags.c_contiguous and a.dtype == np.int64 for a in checked.values())
    with pytest.raises(ValueError, match=r"batch\['input_ids'\] has shape \(8, 20\), the captured step takes \(8, 24"):
        cuda_graph.host_batch({**batch, "input_ids": batch["input_ids"][:, :20]}, like, model)
    with pytest.raises(TypeError, match=r"batch\['labels'\] is float32, the captured step takes int64"):
        cuda_graph.host_batch({**batch, "labels": batch["labels"].astype(np.float32)}, like, model)
    with pytest.raises(ValueError, match="has no 'token_type_ids'"):
        cuda_graph.host_batch({k: v for k, v in batch.items() if k != "token_type_ids"}, like, model)
    too_big = batch["input_ids"].copy()
    too_big[0, 0] = model.config.vocab_size
    with pytest.raises(ValueError, match="input_ids holds ids from"):  # the model's own check, on the host
        cuda_graph.host_batch({**batch, "input_ids": too_big}, like, model)
    with pytest.raises(IndexError, match="target 2 is out of bounds for 2 classes"):
        cuda_graph.host_batch({**batch, "labels": np.full(8, 2)}, like, model)


def adamw_run(capturable, device="cpu", steps=4):
    """AdamW over two groups with a schedule and a parameter without a gradient at first."""
    rng = np.random.default_rng(0)
    params = [Parameter(rng.normal(size=shape).astype(np.float32)) for shape in ((4, 3), (3,), (5,))]
    for p in params:
        p.data = backend.to_device(p.data, device)
    optimizer = AdamW([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}], lr=1e-2,
                      capturable=capturable)
    schedule = get_linear_schedule_with_warmup(optimizer, 2, steps)
    for step in range(steps):
        for i, p in enumerate(params):
            grad = rng.normal(size=p.shape).astype(np.float32)
            p.grad = None if (i == 2 and step == 0) else Tensor(backend.to_device(grad, device))
        optimizer.step()
        schedule.step()
    return [backend.to_host(p.data) for p in params], optimizer


def test_capturable_adamw_on_the_host_is_adamw():
    (ours, capturable), (theirs, plain) = adamw_run(True), adamw_run(False)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    assert capturable.state_dict()["param_groups"] == plain.state_dict()["param_groups"]  # not a group option
    with pytest.raises(RuntimeError, match="no step\\(\\) was captured"):
        capturable.prepare_replay()


# ---- on a GPU ---------------------------------------------------------------------------------------
def test_adamw_step_scalars_matches_the_twin_bit_for_bit(cupy):
    from minillm.kernels.adamw import adamw_step_scalars, scalar_row
    from minillm.optim.adamw import adamw_update

    rng = np.random.default_rng(1)
    for n in (1, 7, 4096 + 3):
        p, g, m = (cupy.asarray(rng.normal(size=n).astype(np.float32)) for _ in range(3))
        v = cupy.abs(cupy.asarray(rng.normal(size=n).astype(np.float32)))
        twin = [a.copy() for a in (p, m, v)]
        scalars = dict(decay=1 - 1e-3 * 0.01, beta1=0.9, beta2=0.999, step_size=1e-3 / (1 - 0.9 ** 2),
                       bias_correction2_sqrt=(1 - 0.999 ** 2) ** 0.5, eps=1e-8)
        adamw_step_scalars(p, g, m, v, cupy.asarray(scalar_row(**scalars)))
        adamw_update(twin[0], g, twin[1], twin[2], *scalars.values())
        for a, b in zip((p, m, v), twin):
            np.testing.assert_array_equal(a.get(), b.get())


def test_capturable_adamw_on_the_gpu_is_adamw(cupy):
    (ours, capturable), (theirs, _) = adamw_run(True, "cuda"), adamw_run(False, "cuda")
    for a, b in zip(ours, theirs):  # the table's float32 scalars are the kernel arguments' float32 scalars
        np.testing.assert_array_equal(a, b)
    assert capturable._table is not None and [s["step"] for s in capturable.state.values()] == [4, 4, 3]


def test_cublas_matmul_matches_cupy_and_can_be_captured(cupy):
    from minillm import kernels
    from minillm.kernels.cuda import cublas

    rng = np.random.default_rng(2)
    cublas.prepare()
    x = cupy.asarray(rng.normal(size=(64, 48)).astype(np.float32))
    w = cupy.asarray(rng.normal(size=(32, 48)).astype(np.float32))
    g = cupy.asarray(rng.normal(size=(64, 32)).astype(np.float32))
    cases = [(x, w.T), (g.T, x), (g, w), (x[:, ::2], w[:, ::2].T), (x[:1], w.T), (x.reshape(4, 16, 48), w.T),
             (cupy.asarray(rng.normal(size=(2, 1, 5, 6)).astype(np.float32)),
              cupy.asarray(rng.normal(size=(3, 6, 7)).astype(np.float32)))]
    for a, b in cases:
        np.testing.assert_allclose(cublas.matmul(a, b).get(), cupy.matmul(a, b).get(), rtol=1e-5, atol=1e-5)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        y = kernels.matmul(x, w, transpose_b=True)  # Linear's product, inside the capture
        graph = stream.end_capture()
    x[...] = 1.0  # the replay reads the inputs as they are when it runs
    graph.launch()
    np.testing.assert_allclose(y.get(), cupy.matmul(x, w.T).get(), rtol=1e-5, atol=1e-5)


def gpu_setup(capturable=True, lr=1e-4):
    model = tiny_model(0, dropout=0.0).to("cuda")
    model.train()
    return model, AdamW(decay_groups(model, 0.01), lr=lr, capturable=capturable)


def batches(toy, count, rows=8):
    tokenizer, train, _ = toy
    width = int(train.lengths.max())
    rng = np.random.default_rng(5)
    return [cuda_graph.full_batch(batch_of(train, rng.choice(len(train), rows, replace=False), tokenizer.pad_token_id),
                                  rows, width, tokenizer.pad_token_id) for _ in range(count)]


def test_captured_steps_match_eager_steps(cupy, toy):
    data = batches(toy, 6)
    eager, eager_opt = gpu_setup(capturable=False)
    graph, graph_opt = gpu_setup()
    step = CapturedStep(graph, graph_opt, data[0], max_grad_norm=1.0, warmup=2)
    for i, batch in enumerate(data):  # the same train_step, run eagerly and replayed
        loss, norm = (float(v) for v in train_step(eager, batch, eager_opt, max_grad_norm=1.0))
        eager_opt.zero_grad()
        graph_loss, graph_norm = step(batch)
        assert float(graph_loss) == pytest.approx(loss, rel=1e-5), i
        assert float(graph_norm) == pytest.approx(norm, rel=1e-5), i
    assert step.graph is not None and step.calls == 6  # two eager steps, then a capture and four replays
    for (name, a), b in zip(graph.named_parameters(), eager.parameters()):
        np.testing.assert_allclose(a.data.get(), b.data.get(), rtol=1e-5, atol=1e-5, err_msg=name)
    assert [s["step"] for s in graph_opt.state.values()] == [6] * len(graph_opt.state)
    with pytest.raises(ValueError, match=r"batch\['attention_mask'\] has shape \(8, 5\), the captured step takes"):
        step({**data[0], "attention_mask": data[0]["attention_mask"][:, :5]})


def test_replays_allocate_nothing(cupy, toy):
    data = batches(toy, 2)
    model, optimizer = gpu_setup()
    step = CapturedStep(model, optimizer, data[0], warmup=1)
    step(data[0])  # eager
    step(data[1])  # capture and replay
    cupy.cuda.Device().synchronize()
    default = cupy.get_default_memory_pool()
    before = (default.used_bytes(), step.pool.used_bytes(), step.pool.total_bytes())
    for i in range(20):
        step(data[i % 2])
    cupy.cuda.Device().synchronize()
    assert (default.used_bytes(), step.pool.used_bytes(), step.pool.total_bytes()) == before


def test_a_failed_capture_says_so_and_leaves_the_weights(cupy, toy, monkeypatch):
    from minillm import ops

    data = batches(toy, 3)
    model, optimizer = gpu_setup()
    step = CapturedStep(model, optimizer, data[0], warmup=1)
    step(data[0])
    weights = [p.data.copy() for p in model.parameters()]
    with monkeypatch.context() as patch:
        patch.setattr(ops, "is_capturing", lambda: False)  # the embedding's id check then waits: not allowed
        with pytest.raises(RuntimeError, match="capturing training step 2 as a CUDA graph failed"):
            step(data[1])
    for a, b in zip(model.parameters(), weights):
        np.testing.assert_array_equal(a.data.get(), b.get())
    loss, _ = step(data[1])  # the stream is usable again: this capture succeeds
    assert np.isfinite(float(loss)) and step.graph is not None


def test_trainer_with_a_graph_matches_eager_and_resumes(cupy, toy, tmp_path):
    tokenizer, train, dev = toy

    def run(out, cuda_graph, **options):
        args = TrainingArguments(output_dir=str(out), epochs=2, batch_size=8, lr=2e-3, progress=False,
                                 cuda_graph=cuda_graph)
        trainer = Trainer(tiny_model(0, dropout=0.0).to("cuda"), args, train, dev, tokenizer)
        trainer.train(**options)
        return [h["loss"] for h in trainer.history if "loss" in h], trainer

    eager, _ = run(tmp_path / "eager", False)
    graph, trainer = run(tmp_path / "graph", True)
    assert len(graph) == len(eager) == 6 and trainer.graph.calls == 6  # 21 texts: 3 steps an epoch
    np.testing.assert_allclose(graph, eager, rtol=1e-4)
    run(tmp_path / "resumed", True, stop_after=2)
    resumed, again = run(tmp_path / "resumed", True, resume=True)  # captures anew after loading the state
    np.testing.assert_allclose(resumed, graph, rtol=1e-5)
    assert again.graph.calls == 4 and again.graph.graph is not None  # two eager steps, a capture, two replays


def test_cli_finetune_with_a_graph(cupy, tmp_path, capsys):
    folder, data = tmp_path / "model", tmp_path / "data"
    folder.mkdir(), data.mkdir()
    tiny_tokenizer(folder).save_pretrained(folder)
    tiny_model(0).save_pretrained(folder)
    for name, seed in (("train.tsv", 1), ("dev.tsv", 2)):
        texts, labels = toy_texts(20, seed=seed)
        (data / name).write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))
    out = tmp_path / "out"
    assert main(["finetune", "--model", str(folder), "--data", str(data), "--out", str(out), "--batch-size", "8",
                 "--device", "cuda", "--cuda-graph", "--no-progress"]) == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert len([h for h in history if "loss" in h]) == 3 and "saved the fine-tuned model" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["hidden_dropout_prob"] == 0.0
