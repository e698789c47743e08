"""minillm.distributed under ``mpiexec -n 2`` (subprocesses of tests/distributed_worker.py, each
bounded by a timeout): exactness against one process on the global batch, rank-seeded dropout,
an exact resume, and the faults (a failing, a killed or a stuck rank, ranks with different models) ending every rank,
the last checkpoint left whole.
They need the `distributed` extra (mpi4py, MPICH's mpiexec); MINILLM_REQUIRE_DISTRIBUTED=1 (CI)
makes its absence a failure."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, missing, optional

WORKER = REPO / "tests" / "distributed_worker.py"
TIMEOUT = 120  # seconds for one mpiexec run (each takes a few here): a hang fails, never blocks CI
LAUNCHER = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPIR_")


@pytest.fixture(scope="module")
def mpiexec():
    optional("mpi4py", "distributed", "MINILLM_REQUIRE_DISTRIBUTED")
    found = pathlib.Path(sys.executable).with_name("mpiexec")
    found = str(found) if found.is_file() else shutil.which("mpiexec")
    if found is None:
        missing("mpiexec (pip install -e '.[distributed]' brings MPICH's)", "MINILLM_REQUIRE_DISTRIBUTED")
    return found


def run(mpiexec, out, ranks, *options, **variables):
    """One worker run (mpiexec -n ranks, or a plain process for ranks 0); returns the completed process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER)}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO), **variables)
    command = [sys.executable, str(WORKER), str(out), *options]
    if ranks:
        command = [mpiexec, "-n", str(ranks), *command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def results(mpiexec, out, ranks, *options):
    done = run(mpiexec, out, ranks, *options)
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(max(ranks, 1))]


def assert_same_params(a, b, rtol):
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert np.linalg.norm(x - y) <= rtol * np.linalg.norm(x) + 1e-7, name


def test_two_ranks_equal_one_process_on_the_global_batch(mpiexec, tmp_path):
    (alone,) = results(mpiexec, tmp_path / "one", 0, "--batch-size", "8")
    ranks = results(mpiexec, tmp_path / "two", 2, "--batch-size", "4")
    assert len(alone["losses"]) == len(ranks[0]["losses"]) == 4  # 32 examples: 4 steps of 8 = 2 x 4
    np.testing.assert_allclose(ranks[0]["losses"], alone["losses"], rtol=1e-5)
    assert_same_params(alone["params"], ranks[0]["params"], rtol=1e-5)
    assert ranks[0]["params"] == ranks[1]["params"]  # the replicas stay bit-identical


def test_dropout_masks_differ_by_rank_and_a_rerun_and_a_resume_are_identical(mpiexec, tmp_path):
    first = results(mpiexec, tmp_path / "first", 2, "--dropout", "0.1")
    again = results(mpiexec, tmp_path / "again", 2, "--dropout", "0.1")
    resumed = results(mpiexec, tmp_path / "resumed", 2, "--dropout", "0.1", "--resume")
    assert first[0]["mask"] != first[1]["mask"]
    assert first == again
    for rank in range(2):  # each rank's dropout generator came back from the checkpoint
        assert resumed[rank]["losses"] == first[rank]["losses"]
        assert resumed[rank]["params"] == first[rank]["params"]


def test_a_failing_rank_stops_every_rank_and_names_itself(mpiexec, tmp_path):
    done = run(mpiexec, tmp_path, 2, "--fail-rank", "1")  # rank 0 would wait in its first collective
    assert done.returncode != 0
    assert "rank 1 of 2 failed" in done.stderr and "worker failure injected" in done.stderr


def assert_checkpoint_of_step(folder, step):
    """The checkpoint under its final name loads whole and is the one of ``step``."""
    from finetune_helpers import tiny_model
    from minillm.optim import AdamW, get_linear_schedule_with_warmup
    from minillm.training import decay_groups, load_checkpoint

    model = tiny_model(0)
    optimizer = AdamW(decay_groups(model, 0.01))
    schedule = get_linear_schedule_with_warmup(optimizer, 0, 4)
    assert load_checkpoint(folder / "checkpoint.safetensors", model, optimizer, schedule)["step"] == step


def test_a_killed_rank_ends_every_rank_at_once_and_the_checkpoint_stays_whole(mpiexec, tmp_path):
    began = time.monotonic()  # at step 4: the step-3 collectives waited for rank 0's step-2 checkpoint
    done = run(mpiexec, tmp_path, 2, "--kill-rank", "1", "--at-step", "4")
    assert done.returncode != 0 and time.monotonic() - began < TIMEOUT / 2
    pid = re.search(r"rank 1 of 2 is pid (\d+)", done.stderr).group(1)  # whose PID the launcher names
    assert f"PID {pid} " in done.stdout + done.stderr and "signal 9" in done.stdout + done.stderr
    assert_checkpoint_of_step(tmp_path / "run", 2)


def test_a_rank_that_stops_answering_is_given_up_after_the_timeout(mpiexec, tmp_path):
    began = time.monotonic()  # 15 s: more than the ranks' skew at the start on a loaded machine
    done = run(mpiexec, tmp_path, 2, "--hang-rank", "1", "--at-step", "3", MINILLM_COLLECTIVE_TIMEOUT="15")
    assert done.returncode != 0 and time.monotonic() - began < TIMEOUT / 2, done.stderr  # not the hour's sleep
    assert "rank 0 of 2 waited 15 s (MINILLM_COLLECTIVE_TIMEOUT) in an allgather for the other rank" in done.stderr
    assert_checkpoint_of_step(tmp_path / "run", 2)


def test_ranks_with_different_models_are_refused_saying_what_differs(mpiexec, tmp_path):
    done = run(mpiexec, tmp_path, 2, "--differ-rank", "1")
    assert done.returncode != 0
    assert "ModelMismatch" in done.stderr and "config hash" in done.stderr
    assert "rank 1's classifier.weight is [(3, 16), 'float32'], rank 0's [(2, 16), 'float32']" in done.stderr
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_a_rank_whose_batches_carry_no_targets_steps_with_the_others(mpiexec, tmp_path):
    """Rank 1's labels are all ignored, rank 0's are not: every rank still runs every step (none
    skips the step's collectives, so nothing hangs), the logged loss is rank 0's, finite, and the
    replicas stay one model."""
    first, second = results(mpiexec, tmp_path, 2, "--batch-size", "4", "--ignore-rank", "1")
    assert len(first["losses"]) == len(second["losses"]) == 4
    assert np.isfinite(first["losses"]).all() and first["losses"] == second["losses"]
    assert_same_params(first["params"], second["params"], 0)


def test_mpirun_minillm_finetune_is_the_one_process_run_on_the_global_batch(mpiexec, tmp_path):
    from finetune_helpers import tiny_model, tiny_tokenizer, toy_texts

    model, data = tmp_path / "model", tmp_path / "glue"
    data.mkdir()
    tiny_tokenizer(model.parent).save_pretrained(model)
    tiny_model(0, dropout=0.0).save_pretrained(model)
    for name, n, seed in (("train.tsv", 32, 1), ("dev.tsv", 15, 2)):  # 15: shards of 8 and 7
        texts, labels = toy_texts(n, seed=seed)
        (data / name).write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))
    states = []
    for ranks, batch in ((0, "8"), (2, "4")):
        out = tmp_path / f"out{ranks}"
        command = [sys.executable, "-m", "minillm", "finetune", "--model", str(model), "--data", str(data),
                   "--out", str(out), "--batch-size", batch, "--lr", "2e-3", "--no-progress"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER)}
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        done = subprocess.run([mpiexec, "-n", str(ranks), *command] if ranks else command, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("saved the best model") == 1  # rank 0 alone reports and logs
        assert done.stderr.count("epoch 1: eval loss") == 1
        states.append(json.loads((out / "trainer_state.json").read_text())["log_history"])
    assert "data parallel over 2 ranks: batches of 4 per rank, a global batch of 8" in done.stderr
    (alone, evaluated), (ranks, reduced) = [([h["loss"] for h in s if "loss" in h], s[-1]) for s in states]
    np.testing.assert_allclose(ranks, alone, rtol=1e-5)
    assert reduced["eval_examples"] == evaluated["eval_examples"] == 15
    assert reduced["eval_loss"] == pytest.approx(evaluated["eval_loss"], rel=1e-5)
    assert reduced["eval_accuracy"] == evaluated["eval_accuracy"]
    # gathered, not averaged over the shards: an F1, a correlation and a confusion matrix of the whole set
    for name in ("eval_f1", "eval_macro_f1", "eval_matthews_correlation"):
        assert reduced[name] == pytest.approx(evaluated[name], rel=1e-6), name
    assert reduced["eval_confusion_matrix"] == evaluated["eval_confusion_matrix"]
