"""Fuzzing in CI: every target of tests/fuzz_targets.py, briefly, with hypothesis drawing the mutations
(and raw bytes); bench/fuzz.py's counting of crashes and hangs; and the long run, marked slow (kept
out of CI's default run: ``pytest -m slow tests/test_fuzz.py``). A failing example here is a crash
or a broken contract: hypothesis shrinks it and prints it."""
import json
import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fuzz_targets
from conftest import REPO
from minillm import kernels

MUTATED = {"safetensors": 200, "model_files": 30, "data": 200, "tokenizer": 40, "kernels": 300}  # examples each


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def seeds(folder):
    return {name: seeds_of(folder) for name, (seeds_of, _, _) in fuzz_targets.TARGETS.items()}


@pytest.mark.parametrize("target", list(MUTATED))
def test_mutated_inputs_keep_the_contract(target, folder, seeds):
    _, mutate, run = fuzz_targets.TARGETS[target]

    @settings(max_examples=MUTATED[target])
    @given(rng=st.randoms(use_true_random=False), pick=st.integers(0, 100))
    def one(rng, pick):
        data = mutate(rng, seeds[target][pick % len(seeds[target])])
        if target == "tokenizer":  # the megabyte cases take seconds each: test_tokenizer.py has one
            data = bytes([data[0] & ~2]) + data[1:]
        run(data, folder)

    one()


@pytest.mark.parametrize("target", ["safetensors", "data", "model_files"])
def test_random_bytes_keep_the_contract(target, folder):
    _, _, run = fuzz_targets.TARGETS[target]

    @settings(max_examples=100 if target != "model_files" else 20)
    @given(data=st.binary(max_size=600))
    def one(data):
        run(data, folder)

    one()


def test_every_seed_is_accepted(folder, seeds):
    """The seeds are valid inputs: a target that refused them would be fuzzing its error path alone."""
    for target, (_, _, run) in fuzz_targets.TARGETS.items():
        if target != "kernels":  # its "seed" is the bytes that seed a random case
            assert all(run(seed, folder) == "accepted" for seed in seeds[target]), target


def test_a_broken_contract_is_an_assertion(folder):
    """The checks can fail: the data target's oracle sees a row dropped."""
    _, _, run = fuzz_targets.TARGETS["data"]
    reader = fuzz_targets.DATA_READERS[0]
    dropping = reader._replace(read=lambda path: [list(column)[:-1] for column in reader.read(path)])
    fuzz_targets.DATA_READERS[0] = dropping
    try:
        with pytest.raises(AssertionError, match="the rows differ from the oracle's"):
            run(fuzz_targets.data_seeds(folder)[0], folder)
    finally:
        fuzz_targets.DATA_READERS[0] = reader


def fuzz_script(*args):
    return subprocess.run([sys.executable, str(REPO / "bench" / "fuzz.py"), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=600)


def test_the_fuzz_script_counts_cases_crashes_and_hangs(tmp_path):
    done = fuzz_script("--targets", "data", "--seconds", "3", "--engine", "random", "--out", str(tmp_path / "found"),
                       "--json", str(tmp_path / "rows.json"))
    assert done.returncode == 0, done.stderr
    assert "| target | engine | seconds | cases | cases/s | crashes | hangs | distinct errors | accepted |" in done.stdout
    (row,) = json.loads((tmp_path / "rows.json").read_text())
    assert row["target"] == "data" and row["cases"] > 0 and row["crashes"] == row["hangs"] == 0
    assert sum(row["outcomes"].values()) == row["cases"]


@pytest.mark.slow
@pytest.mark.parametrize("target", list(fuzz_targets.TARGETS))
def test_ten_minutes_of_fuzzing_find_no_crash_and_no_hang(target, tmp_path):
    """The long run of docs/reliability.md, one target at a time (about 10 minutes each)."""
    done = fuzz_script("--targets", target, "--seconds", "600", "--out", str(tmp_path / "found"))
    assert done.returncode == 0, done.stdout + done.stderr



def _matmul_case(data):
    name, _, args, _ = fuzz_targets.kernel_case(random.Random(data))
    return name == "matmul" and all(a.dtype == np.float32 and a.size and np.isfinite(a).all() for a in args[:2])


def test_the_kernels_target_counts_overflow_apart_and_still_catches_a_wrong_nan(folder, monkeypatch):
    """Where the terms of a sum pass float32's largest value, rounding decides which outputs are inf
    or NaN: [1e30, 1e30] . [1e30, -1e30] is NaN with two rounded products (inf - inf) and inf with a
    fused multiply-add (inf + an exact -1e60). That is counted apart. On inputs whose terms fit, a
    twin that puts a NaN where the other has a number is still a broken contract."""
    a, b = np.float32([[1e30, 1e30]]), np.float32([[1e30], [-1e30]])
    assert fuzz_targets._rounding_decides_overflow("matmul", (a, b, False, False), None)
    assert not fuzz_targets._rounding_decides_overflow("matmul", (a / 1e20, b / 1e20, False, False), None)
    assert fuzz_targets._assert_close("matmul", 0, np.float32([[np.inf]]), np.float32([[np.nan]]), undecided=True)
    # a scale of inf: NaN where a score is 0, so held to the same NaN unless rounding decides a score is 0
    q, cancelling = np.ones((1, 1, 2, 4), np.float32), np.float32([1e30, -1e30, 1, 1]) * np.ones((1, 1, 3, 4))
    for k, undecided in ((np.ones_like(q), False), (cancelling.astype(np.float32), True)):
        args = (q, k, k, None, None, float("inf"), 0.0, 0)
        assert fuzz_targets._rounding_decides_overflow("attention_forward", args, None) == undecided
    # layer norm: an infinite weight times an xhat that is 0 in one twin and a residue in the other
    x, weight = np.float32([[1, 1e30, -1e30, 2], [1, 2, 3, 4]]), np.float32([np.inf, 1, 1, 1])
    mean = np.float32([0.75, 2.5])
    assert fuzz_targets._rounding_decides_overflow("layer_norm_forward", (x, weight, None, 1e-5), (x, mean, mean))
    assert not fuzz_targets._rounding_decides_overflow("layer_norm_forward", (x[1:], weight, None, 1e-5),
                                                       (x[1:], mean[1:], mean[1:]))

    data = next(d for d in (bytes([i, j]) for i in range(256) for j in range(256)) if _matmul_case(d))
    assert fuzz_targets.run_kernels(data, folder) == "accepted"
    matmul = kernels.matmul

    def wrong(*args):  # the compiled twin, with a NaN where the NumPy twin has a number
        out = matmul(*args)
        if kernels.mode() == "compiled":
            out.reshape(-1)[0] = np.nan
        return out

    monkeypatch.setattr(kernels, "matmul", wrong)
    with pytest.raises(AssertionError, match="NaN or infinities in other places than numpy's"):
        fuzz_targets.run_kernels(data, folder)
