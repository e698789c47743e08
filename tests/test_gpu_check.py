"""bench/gpu_check.sh, the one prepared run for a lent GPU machine, checked here without a GPU.

The script runs once there, under one time limit, so it has to work the first time: its dry mode
runs the same steps with the GPU parts replaced (pytest --collect-only of the same test files,
gpu_bench.py --dry: every row on tiny shapes on the host). These tests run that dry mode and check
the summary, the table, and what the device tool can bring back (at most 8 files, plain names).
"""
import json
import os
import re
import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "bench" / "gpu_check.sh"
STEPS = ("versions", "build", "tests", "bench")


def gpu_check(out, *args, timeout, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_CHECK_", "MINILLM_"))}
    environment.update({"OUT": str(out), "PYTHON": sys.executable, **env})
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=timeout)


def summary_lines(out):
    """{step: its summary line} from summary.txt."""
    text = (out / "summary.txt").read_text()
    return {line.split()[0]: line for line in text.splitlines() if line.split() and line.split()[0] in STEPS}


def test_the_script_parses():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_dry_run_passes_every_step_and_prints_every_row(tmp_path, transformers):
    done = gpu_check(tmp_path, "--dry", "--skip-build", timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = summary_lines(tmp_path)
    assert re.match(r"build\s+skipped", steps["build"])
    for step in ("versions", "tests", "bench"):
        assert re.match(rf"{step}\s+pass\b", steps[step]), steps[step]
    assert re.search(r"\d+ tests collected", steps["tests"])
    assert "all steps passed" in (tmp_path / "summary.txt").read_text()

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import gpu_bench
    finally:
        sys.path.pop(0)
    table = (tmp_path / "gpu_bench.txt").read_text()
    assert "DRY RUN" in table and "minillm.kernels.info(): {" in table
    rows = [line.split() for line in table.splitlines()]
    for kernel, pass_, shape, _ in gpu_bench.kernel_cases(dry=True):
        assert [kernel, pass_, ",".join(map(str, shape))] in [row[:3] for row in rows], (kernel, pass_, shape)
    for label, _, batch, length, *_ in gpu_bench.train_cases(dry=True):
        assert [label, f"{batch}x{length}"] in [row[:2] for row in rows], (label, batch, length)

    results = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert len(results["kernels"]) == len(gpu_bench.KERNELS) and len(results["train"]) == len(gpu_bench.TRAIN)
    for row in results["kernels"] + results["train"]:
        assert row["errors"] == {"minillm": None, "torch": None}, row
        assert row["minillm_ms"] > 0 and row["torch_ms"] > 0 and row["ratio"] > 0, row
    assert set(results["meta"]) == {"minillm", "torch"}

    # what the device tool brings back from $OUT: at most 8 plain files with plain names
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(["versions.log", "tests.log", "bench.log", "gpu_bench.txt", "gpu_bench.json",
                            "summary.txt"])
    assert all(p.is_file() for p in tmp_path.iterdir())


def test_every_step_runs_and_is_reported_when_each_fails_or_times_out(tmp_path):
    """A Python that hangs: every step times out at its limit, the script still reaches the end,
    writes the summary and exits 1."""
    hang = tmp_path / "python"
    hang.write_text("#!/bin/sh\nsleep 60\n")
    hang.chmod(0o755)
    out = tmp_path / "out"
    limits = {f"GPU_CHECK_LIMIT_{step.upper()}": "1" for step in STEPS}
    done = gpu_check(out, "--dry", timeout=60, **limits, PYTHON=str(hang))
    assert done.returncode == 1
    steps = summary_lines(out)
    for step in STEPS:
        assert re.match(rf"{step}\s+TIMEOUT", steps[step]), steps[step]
    assert "steps not passed: versions build tests bench" in (out / "summary.txt").read_text()


def test_unknown_arguments_are_refused(tmp_path):
    done = gpu_check(tmp_path, "--gpu", timeout=30)
    assert done.returncode == 2 and "unknown argument --gpu" in done.stderr
