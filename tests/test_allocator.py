"""minillm/kernels/allocator.py: freed activation-sized buffers stay in the process, counted by the
operating system's own page-fault counter (getrusage's minor faults)."""
import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, resource, numpy, minillm
def faults_of_a_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a, b = numpy.ones((4096, 1536), numpy.float32), numpy.ones((4096, 1536), numpy.float32)  # 25 MB each
    del a, b  # freed together, as a forward's output and its gradient
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_step()
print(json.dumps([faults_of_a_step() for _ in range(3)]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize("user_env, reused", [({}, True), ({"MALLOC_TRIM_THRESHOLD_": "131072"}, False)])
def test_a_steps_buffers_are_reused_not_faulted_in_again(user_env, reused):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**env, **user_env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    faults = json.loads(done.stdout.splitlines()[-1])
    # 50 MB are 12,800 pages of 4 KB, or about 1,000 faults where the kernel backs some with huge pages
    if reused:   # minillm's thresholds: the second and later steps reuse the heap
        assert max(faults) < 50, faults
    else:        # a user's own malloc setting is left alone: each step faults its pages in again
        assert min(faults) > 200, faults
