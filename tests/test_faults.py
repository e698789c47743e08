"""Faults in training: a fine-tune killed (SIGKILL) at random moments and resumed, a full disk during a
save, an --out that cannot be written, and Ctrl-C. What must hold: the resumed model is bit-identical to
an uninterrupted run's, every file on disk at every kill loads completely or is not there under its
final name, and every failure says what happened and what was kept."""
import errno
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from finetune_helpers import tiny_model, tiny_tokenizer, toy_texts
from minillm import safetensors_io
from minillm.cli import main
from minillm.training import CHECKPOINT_NAME, decay_groups, load_checkpoint

RUN = ["--epochs", "6", "--batch-size", "4", "--lr", "2e-3", "--seed", "3", "--save-steps", "1", "--no-progress"]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", RAYON_NUM_THREADS="1")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny model folder and a 48-row GLUE-style folder: 72 steps, a checkpoint after each."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_model(0).save_pretrained(folder)
    tiny_tokenizer(folder).save_pretrained(folder)
    data = tmp_path_factory.mktemp("glue")
    texts, labels = toy_texts(48, seed=4)
    (data / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))
    return folder, data


# The CLI with a slow disk: each fsync takes 20 ms more (as on a real disk, where fsync is the slow
# part of a write), so that a kill can land inside a write: between its bytes and its rename.
SLOW_DISK = ("import os, sys, time; fsync = os.fsync; os.fsync = lambda fd: (time.sleep(0.02), fsync(fd))[1]; "
             "from minillm.cli import main; sys.exit(main(sys.argv[1:]))")


def finetune_command(base, out, *extra):
    folder, data = base
    return [sys.executable, "-c", SLOW_DISK, "finetune", "--model", str(folder), "--data", str(data),
            "--out", str(out), *RUN, *extra]


def check_every_file_loads(out):
    """Each file under its final name is whole: the safetensors files read completely (the training
    checkpoint into a model and optimizer too), the JSON files parse. Temporary files (".name.tmp")
    may be cut anywhere: nothing reads them."""
    from minillm.optim import AdamW, get_linear_schedule_with_warmup

    for path in out.iterdir():
        if path.name.startswith("."):
            continue
        if path.name == CHECKPOINT_NAME:
            model = tiny_model(0)
            optimizer = AdamW(decay_groups(model, 0.01))
            load_checkpoint(path, model, optimizer, get_linear_schedule_with_warmup(optimizer, 1, 72))
        elif path.suffix == ".safetensors":
            safetensors_io.read_safetensors(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.name == "vocab.txt":
            assert path.read_text().endswith("\n")


def kill_when(command, moment, rng):
    """Start ``command`` and SIGKILL it at ``moment``: "random" (0 to 0.3 s after the first
    checkpoint it writes, mid-step or mid-write), "checkpoint" (inside the write of its first to fourth
    checkpoint: its temporary file is there) or "final" (inside the final save: the model's
    temporary file is there). Returns whether the run had ended before the kill."""
    out = command[command.index("--out") + 1]
    checkpoint = os.path.join(out, CHECKPOINT_NAME)
    before = os.stat(checkpoint).st_mtime_ns if os.path.exists(checkpoint) else None
    stale = set(os.listdir(out)) if os.path.isdir(out) else set()  # a killed write's temporary file, say
    child = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prefix = "." + (safetensors_io.WEIGHTS_NAME if moment == "final" else CHECKPOINT_NAME)
    writes = rng.randrange(4) if moment == "checkpoint" else 0  # writes to let finish first
    while child.poll() is None:
        names = set(os.listdir(out)) - stale if os.path.isdir(out) else set()
        if moment == "random" and os.path.exists(checkpoint) and os.stat(checkpoint).st_mtime_ns != before:
            time.sleep(rng.uniform(0, 0.3))
            break
        if moment != "random" and any(n.startswith(prefix) for n in names):
            if not writes:
                break
            writes -= 1
            while child.poll() is None and any(n.startswith(prefix) for n in set(os.listdir(out)) - stale):
                time.sleep(0.001)  # let this write finish
        time.sleep(0.001)
    finished = child.poll() is not None
    child.send_signal(signal.SIGKILL)
    child.wait()
    return finished


def test_killed_at_random_moments_and_resumed_is_bit_identical(base, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(finetune_command(base, straight), env=ENV, check=True, capture_output=True)
    out, rng = tmp_path / "killed", random.Random(18)
    kills = 0
    for moment in ["checkpoint", "random", "checkpoint", "random", "checkpoint", "random", "final"]:
        resume = ["--resume"] if (out / CHECKPOINT_NAME).exists() else ["--overwrite"]
        finished = kill_when(finetune_command(base, out, *resume), moment, rng)
        kills += not finished
        check_every_file_loads(out)
    assert kills >= 6, "the runs ended before they could be killed: the test proves nothing"
    done = subprocess.run(finetune_command(base, out, "--resume"), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # the killed writes' leftovers
    for name in (safetensors_io.WEIGHTS_NAME, "config.json", "tokenizer.json", "vocab.txt"):
        assert (out / name).read_bytes() == (straight / name).read_bytes(), name
    history = [json.loads((o / "trainer_state.json").read_text())["log_history"] for o in (out, straight)]
    assert history[0] == history[1]


def test_a_full_disk_during_a_save_is_a_clear_error_and_keeps_the_last_checkpoint(base, tmp_path, monkeypatch,
                                                                                   capsys):
    out = tmp_path / "out"
    folder, data = base
    args = ["finetune", "--model", str(folder), "--data", str(data), "--out", str(out), *RUN]
    assert main(args + ["--stop-after", "3"]) == 0
    before = (out / CHECKPOINT_NAME).read_bytes()
    fdopen = os.fdopen

    def filling_disk(fd, *a, **k):
        """A checkpoint file that takes 1000 bytes, then fails as a full disk does (ENOSPC); the
        other files (log.jsonl) still fit."""
        f = fdopen(fd, *a, **k)
        write = f.write
        if CHECKPOINT_NAME not in os.readlink(f"/proc/self/fd/{fd}"):
            return f

        def full(content):
            write(content[:1000])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        f.write = full
        return f

    monkeypatch.setattr(safetensors_io.os, "fdopen", filling_disk)
    capsys.readouterr()
    assert main(args + ["--resume"]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out / CHECKPOINT_NAME}: No space left on device; the previous one is unchanged" in err
    assert "Traceback" not in err
    monkeypatch.undo()
    assert (out / CHECKPOINT_NAME).read_bytes() == before
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert main(args + ["--resume", "--stop-after", "2"]) == 0  # and the run goes on from it


def test_an_out_folder_that_cannot_be_written_fails_before_training(base, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    folder, data = base
    loaded = []
    monkeypatch.setattr(safetensors_io, "read_into", lambda *args: loaded.append(1))
    assert main(["finetune", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "file" / "out"),
                 *RUN]) == 1
    assert "cannot be written (Not a directory)" in capsys.readouterr().err
    assert not loaded  # not even the weights were read


def test_ctrl_c_checkpoints_a_whole_step_and_prints_the_command_that_resumes(base, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(finetune_command(base, straight), env=ENV, check=True, capture_output=True)
    out = tmp_path / "out"
    command = finetune_command(base, out)
    child = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (out / CHECKPOINT_NAME).exists():  # training has begun
        time.sleep(0.001)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "Traceback" not in err
    step = int(err.split("interrupted: step ")[1].split()[0])
    assert json.loads(safetensors_io.read_header(out / CHECKPOINT_NAME)[1]["minillm_training_state"])["step"] == step
    resume = err.strip().splitlines()[-1].strip()
    assert resume.startswith("minillm finetune ") and resume.endswith(" --resume")
    done = subprocess.run([sys.executable, "-m", *shlex.split(resume)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / safetensors_io.WEIGHTS_NAME).read_bytes() == (straight / safetensors_io.WEIGHTS_NAME).read_bytes()
