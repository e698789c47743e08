"""The README's two commands are the ones CI and a new user run."""
import re

from conftest import REPO


def _bash_blocks():
    return re.findall(r"```bash\n(.*?)\n```", (REPO / "README.md").read_text(), re.S)


def test_ci_runs_the_readme_test_command():
    test_command = [b for b in _bash_blocks() if "pytest" in b]
    assert len(test_command) == 1, "the README must have exactly one test command"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_command[0].strip() in [line.strip() for line in ci]
    assert all(f"MINILLM_REQUIRE_{what}=1" in "\n".join(ci) for what in ("PARITY", "PRETRAINED", "DISTRIBUTED"))


def test_readme_main_job_exists():
    main_job = [b for b in _bash_blocks() if "pytest" not in b]
    assert main_job, "the README must give the main job's command"
    script = re.search(r"python (examples/\S+\.py)", main_job[0]).group(1)
    assert (REPO / script).is_file()


BENCH_COMMAND = re.compile(r"python (bench/[a-z_0-9]+\.py)((?: --?[a-z][-a-z0-9]*(?:[ =][^\s`#-][^\s`#]*)?)*)")


def test_every_bench_command_in_the_docs_is_one_its_script_accepts():
    """Each `python bench/<script>.py --flags` quoted in the README or docs/ parses: the script's own
    argparse reads the flags (run as __main__, stopped right after parse_args) without an error."""
    import argparse
    import runpy
    import sys

    texts = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
    commands = {(m.group(1), m.group(2).strip()) for path in texts for m in BENCH_COMMAND.finditer(path.read_text())}
    assert len(commands) >= 8, commands
    parse = argparse.ArgumentParser.parse_args

    class Parsed(Exception):
        pass

    def parse_then_stop(parser, args=None, namespace=None):
        parse(parser, args, namespace)
        raise Parsed

    for script, flags in sorted(commands):
        sys.argv = [script] + flags.split()
        sys.path.insert(0, str(REPO / "bench"))
        argparse.ArgumentParser.parse_args = parse_then_stop
        try:
            runpy.run_path(str(REPO / script), run_name="__main__")
        except Parsed:
            continue
        except SystemExit as stop:  # argparse's error: usage and the message went to stderr
            raise AssertionError(f"`python {script} {flags}` is refused by its parser (exit {stop.code})") from None
        finally:
            argparse.ArgumentParser.parse_args = parse
            sys.path.remove(str(REPO / "bench"))
        raise AssertionError(f"`python {script} {flags}`: the script never parsed its arguments")
