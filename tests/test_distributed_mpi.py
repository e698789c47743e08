"""minillm.distributed under ``mpiexec -n 2`` (subprocesses of tests/distributed_worker.py, each
bounded by a timeout): exactness against one process on the global batch, rank-seeded dropout,
an exact resume, and the faults (a failing rank, ranks with different models) ending every rank.
They need the `distributed` extra (mpi4py, MPICH's mpiexec); MINILLM_REQUIRE_DISTRIBUTED=1 (CI)
makes its absence a failure."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, missing

WORKER = REPO / "tests" / "distributed_worker.py"
TIMEOUT = 120  # seconds for one mpiexec run (each takes a few here): a hang fails, never blocks CI
LAUNCHER = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPIR_")


@pytest.fixture(scope="module")
def mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        missing("mpi4py (pip install -e '.[distributed]')", "MINILLM_REQUIRE_DISTRIBUTED")
    found = pathlib.Path(sys.executable).with_name("mpiexec")
    found = str(found) if found.is_file() else shutil.which("mpiexec")
    if found is None:
        missing("mpiexec (pip install -e '.[distributed]' brings MPICH's)", "MINILLM_REQUIRE_DISTRIBUTED")
    return found


def run(mpiexec, out, ranks, *options):
    """One worker run (mpiexec -n ranks, or a plain process for ranks 0); returns the completed process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER)}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
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


def test_ranks_with_different_models_are_refused_saying_what_differs(mpiexec, tmp_path):
    done = run(mpiexec, tmp_path, 2, "--differ-rank", "1")
    assert done.returncode != 0
    assert "ModelMismatch" in done.stderr and "config hash" in done.stderr
    assert "rank 1's classifier.weight is [(3, 16), 'float32'], rank 0's [(2, 16), 'float32']" in done.stderr
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()
