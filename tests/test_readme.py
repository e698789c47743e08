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
