"""Fuzz every entry point for a set time and count: cases tried, crashes, hangs, distinct errors.

    python bench/fuzz.py --seconds 600                          # every target, 10 minutes each
    python bench/fuzz.py --targets safetensors,data --jobs 2    # two at a time

The targets (tests/fuzz_targets.py; tests/test_fuzz.py runs them briefly with hypothesis in CI):
safetensors (the checkpoint reader), model_files (config.json and the tokenizer files, loaded as the
CLI loads a model), data (the data readers), tokenizer (the tokenizer wrapper on arbitrary Unicode,
a megabyte at times), kernels (every kernel through the public API, compiled twin against NumPy twin).

Each target runs in worker processes, one after another until its time is up: a worker that dies
of an uncaught exception or a signal is a crash, one whose case outlives --timeout is a hang, and
either way its input is kept under --out and a new worker goes on. Engines:
    atheris   coverage-guided (libFuzzer, the `fuzz` extra: pip install -e ".[fuzz]"), with the
              targets' structural mutations beside libFuzzer's own; the default where installed
    random    seeded mutation of the seeds alone (reproducible: --seed, and the case number)
The kernels target always runs the random engine: its code under test is compiled, which atheris's
Python coverage does not see. To run it under AddressSanitizer and UndefinedBehaviorSanitizer, build
the extensions with them (a copy of the checkout keeps your normal build) and preload the runtimes:

    MINILLM_SANITIZE=1 python setup.py build_ext --inplace
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \\
        ASAN_OPTIONS=detect_leaks=0 python bench/fuzz.py --targets kernels --engine random
"""
import argparse
import collections
import faulthandler
import json
import os
import pathlib
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc

REPO = pathlib.Path(__file__).resolve().parent.parent
TARGETS = ("safetensors", "model_files", "data", "tokenizer", "kernels")


def error_key(outcome):
    """One line per kind of error: its class and message, numbers and paths made general."""
    if isinstance(outcome, str):
        return outcome
    message = re.sub(r"/\S+", "<path>", str(outcome).splitlines()[0] if str(outcome) else "")
    stem = re.split(r"['\"\[{(]", re.sub(r"[0-9]+", "N", message))[0]  # up to the first quoted value
    return f"{type(outcome).__name__}: {stem[:90].strip()}"


# ---- a worker: one process fuzzing one target ------------------------------------------------------
class Stats:
    """Counts of one worker, written to ``path`` every second or so (a worker may die at any case)."""

    def __init__(self, path):
        self.path, self.cases, self.outcomes, self.written = path, 0, collections.Counter(), 0.0

    def add(self, outcome):
        self.cases += 1
        self.outcomes[error_key(outcome)] += 1
        if time.monotonic() - self.written > 1:
            self.write()

    def write(self):
        self.path.write_text(json.dumps({"cases": self.cases, "outcomes": self.outcomes}))
        self.written = time.monotonic()


def worker(args):
    sys.path[:0] = [str(REPO / "tests"), str(REPO)]
    folder, stats = pathlib.Path(args.workdir), Stats(pathlib.Path(args.workdir) / "stats.json")
    if args.target == "safetensors":
        # run_safetensors measures each case's memory, starting and stopping tracemalloc unless it is on:
        # on for the whole run instead. Python 3.11's tracemalloc start and stop race with a thread that
        # frees raw memory without the GIL (CPython gh-128679), as the watchdog thread that each
        # dump_traceback_later below starts does at its start. One worker died of a segfault inside
        # json.loads after 10^5 cases, and the same cases run again did not crash: such a race.
        tracemalloc.start()
    if args.engine == "atheris":
        return atheris_worker(args, folder, stats)
    import fuzz_targets

    seeds_of, mutate, run = fuzz_targets.TARGETS[args.target]
    seeds = seeds_of(folder)
    current = folder / "current.bin"  # the case being run: the reproducer if the worker dies
    faulthandler.enable()
    case = 0
    while time.time() < args.deadline:
        rng = random.Random(f"{args.target}:{args.seed}:{case}")
        data = mutate(rng, rng.choice(seeds)) if rng.random() < 0.95 else rng.randbytes(rng.randrange(512))
        current.write_bytes(data)
        faulthandler.dump_traceback_later(args.timeout, exit=True)  # a hang: the traceback, then exit 1
        stats.add(run(data, folder))  # anything but the expected errors propagates: the worker dies
        faulthandler.cancel_dump_traceback_later()
        case += 1
    stats.write()
    return 0


def atheris_worker(args, folder, stats):
    import atheris

    with atheris.instrument_imports(include=["minillm"]):
        import fuzz_targets
    seeds_of, mutate, run = fuzz_targets.TARGETS[args.target]
    corpus = folder / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, seed in enumerate(seeds_of(folder)):
        (corpus / f"seed{i}").write_bytes(seed)

    def one_input(data):
        stats.add(run(data, folder))

    def mutator(data, max_size, seed):
        """Half the time the target's structural mutation, else libFuzzer's byte mutation."""
        rng = random.Random(seed)
        if rng.random() < 0.5:
            try:
                return mutate(rng, data)[:max_size]
            except Exception:  # the input no longer parses as the format: mutate its bytes
                pass
        return atheris.Mutate(data, max_size)

    seconds = max(1, int(args.deadline - time.time()))
    atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={seconds}", f"-timeout={args.timeout}",
                   "-rss_limit_mb=4096", "-max_len=65536", f"-artifact_prefix={folder}/", "-print_final_stats=1"],
                  one_input, custom_mutator=mutator)
    atheris.Fuzz()


# ---- the supervisor --------------------------------------------------------------------------------
def fuzz_target(target, args, out):
    """Run workers on ``target`` until ``args.seconds`` are spent; returns its row of the table."""
    engine = "random" if target == "kernels" else args.engine
    end = time.time() + args.seconds
    row = dict(target=target, engine=engine, cases=0, crashes=0, hangs=0, outcomes=collections.Counter(),
               found=[])
    restart = 0
    while time.time() < end - 1:
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as workdir:
            command = [sys.executable, __file__, "--worker", target, "--workdir", workdir, "--engine", engine,
                       "--deadline", str(end), "--timeout", str(args.timeout), "--seed", f"{args.seed}.{restart}"]
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
                       OMP_NUM_THREADS="1", RAYON_NUM_THREADS="1", PYTHONWARNINGS="ignore")
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.seconds + 600)
            stats = pathlib.Path(workdir) / "stats.json"
            counts = json.loads(stats.read_text()) if stats.exists() else {"cases": 0, "outcomes": {}}
            row["cases"] += counts["cases"]
            row["outcomes"].update(counts["outcomes"])
            if done.returncode != 0:
                hang = "Timeout (" in done.stderr or "libFuzzer: timeout" in done.stderr
                row["hangs" if hang else "crashes"] += 1
                row["found"].append(keep_reproducer(target, workdir, done, out, restart))
        restart += 1
    row["seconds"] = args.seconds
    return row


def keep_reproducer(target, workdir, done, out, restart):
    """Copy the dying worker's input (ours or libFuzzer's artifact) and its output under ``out``."""
    folder = out / f"{target}-{restart}"
    folder.mkdir(parents=True, exist_ok=True)
    for path in pathlib.Path(workdir).iterdir():
        if path.name == "current.bin" or path.name.startswith(("crash-", "timeout-", "oom-")):
            (folder / path.name).write_bytes(path.read_bytes())
    (folder / "output.txt").write_text(done.stdout[-20000:] + "\n---- stderr ----\n" + done.stderr[-20000:])
    last = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
    return f"{folder}: {last[0][:160]}"


def table(rows):
    lines = ["| target | engine | seconds | cases | cases/s | crashes | hangs | distinct errors | accepted |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        errors = [k for k in r["outcomes"] if k != "accepted"]
        lines.append(f"| {r['target']} | {r['engine']} | {r['seconds']} | {r['cases']} | "
                     f"{r['cases'] / r['seconds']:.1f} | {r['crashes']} | {r['hangs']} | {len(errors)} | "
                     f"{r['outcomes'].get('accepted', 0)} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, of " + ", ".join(TARGETS))
    parser.add_argument("--seconds", type=int, default=600, help="per target (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=1, help="targets run at once")
    parser.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    parser.add_argument("--timeout", type=int, default=60, help="seconds a case may take before it is a hang")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--out", default="fuzz-findings", help="folder for the inputs of crashes and hangs")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.target = args.worker
        sys.exit(worker(args))
    if args.engine == "auto":
        try:
            import atheris  # noqa: F401
            args.engine = "atheris"
        except ImportError:
            args.engine = "random"
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}: choose from {', '.join(TARGETS)}")
    out, rows = pathlib.Path(args.out), {}

    def run_queue(queue):
        while True:
            try:
                target = queue.pop(0)  # atomic: the other thread may have taken the last one
            except IndexError:
                return
            rows[target] = fuzz_target(target, args, out)
            print(f"{target}: {rows[target]['cases']} cases", file=sys.stderr, flush=True)

    queue = list(targets)
    threads = [threading.Thread(target=run_queue, args=(queue,)) for _ in range(max(1, args.jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = [rows[t] for t in targets]
    print(table(rows))
    for r in rows:
        print(f"\n{r['target']}: {len(r['outcomes'])} distinct outcomes")
        for key, count in r["outcomes"].most_common():
            print(f"  {count:8d}  {key}")
        for found in r["found"]:
            print(f"  FOUND {found}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if any(r["crashes"] or r["hangs"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
