"""bench/machine.py, the machine every bench describes, and setup.py's choice of -march: the CPU's
instruction sets read from /proc/cpuinfo text, the peak from the real vector width, the checks
that stop a bench run at another level than asked, and the compiler's own macros as the oracle of
what a -march level lets the kernels contain."""
import importlib.util
import json
import os
import platform
import subprocess
import sys

import pytest

from conftest import REPO, optional


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


machine = _load("bench_machine", REPO / "bench" / "machine.py")
setup_py = _load("minillm_setup", REPO / "setup.py")  # only its functions: setup() runs under __main__
X86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the levels are x86-64's")


def cpuinfo(model, flags, mhz, vendor="GenuineIntel", family=6):
    """/proc/cpuinfo's text for two processors with ``flags``, the second at ``mhz``."""
    return "".join(f"processor\t: {n}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: 17\n"
                   f"model name\t: {model}\ncpu MHz\t\t: {m:.3f}\nflags\t\t: {flags}\n\n"
                   for n, m in enumerate((mhz - 100, mhz)))


BASE = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 sse4_1 sse4_2 popcnt aes xsave avx f16c"
ZEN3 = BASE + " fma bmi1 avx2 bmi2 sha_ni vaes vpclmulqdq"  # AVX2, no AVX-512
SKYLAKE_X = ZEN3 + " avx512f avx512dq avx512cd avx512bw avx512vl"
SAPPHIRE_RAPIDS = SKYLAKE_X + " avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8"
ZEN4 = SKYLAKE_X + " avx512_bf16 avx512vbmi avx512_vnni avx512_bitalg avx512_vpopcntdq"
KNIGHTS_LANDING = ZEN3 + " avx512f avx512cd avx512er avx512pf"  # AVX-512F without BW/DQ/VL: not our AVX-512


@pytest.mark.parametrize("flags, vendor, family, levels, widest, lanes, units", [
    (ZEN3, "AuthenticAMD", 25, ["AVX2"], "AVX2", 8, "AVX2"),
    (SKYLAKE_X, "GenuineIntel", 6, ["AVX2", "AVX-512"], "AVX-512", 16, "AVX-512"),
    (SAPPHIRE_RAPIDS, "GenuineIntel", 6, ["AVX2", "AVX-512", "AMX"], "AVX-512", 16, "AVX-512"),
    (KNIGHTS_LANDING, "GenuineIntel", 6, ["AVX2"], "AVX2", 8, "AVX2"),
    (ZEN4, "AuthenticAMD", 25, ["AVX2", "AVX-512"], "AVX-512", 8, "AVX-512 on 256-bit units"),  # two halves
    (ZEN4, "AuthenticAMD", 26, ["AVX2", "AVX-512"], "AVX-512", 16, "AVX-512"),  # Zen 5: 512-bit units
])
def test_cpuinfo_flags_give_the_instruction_sets_and_the_peak(flags, vendor, family, levels, widest, lanes, units):
    cpu = machine.read_cpuinfo(cpuinfo("Some CPU @ 2.60GHz", flags, 2600.0, vendor, family))
    assert cpu.name == "Some CPU @ 2.60GHz" and cpu.mhz == 2600.0  # the highest clock of the processors
    assert (cpu.vendor, cpu.family, cpu.model) == (vendor, family, 17)
    assert machine.isa_levels(cpu.flags) == levels and machine.vector_level(cpu.flags) == widest
    gflops, how = machine.peak(2, widest, cpu.mhz, machine.fma_bits(cpu))
    assert gflops == pytest.approx(2 * 2 * lanes * 2 * 2.6)  # threads x FMA units x lanes x 2 flops x GHz
    assert f"{lanes} float32 lanes ({units})" in how and "2.60 GHz (cpuinfo's cpu MHz" in how


def test_a_cpu_without_avx2_or_a_clock():
    cpu = machine.read_cpuinfo("processor : 0\nflags : " + BASE + "\n")
    assert (cpu.name, cpu.mhz, cpu.vendor, cpu.family, cpu.model) == ("unknown CPU", None, None, None, None)
    assert (machine.isa_levels(cpu.flags), machine.vector_level(cpu.flags), machine.fma_bits(cpu)) == ([], None, 512)
    gflops, how = machine.peak(2, None, cpu.mhz)
    assert gflops != gflops and "neither AVX2 nor AVX-512" in how  # NaN: no peak made up
    assert "assumed" in machine.peak(1, "AVX2", None)[1]


def minillm_facts(march="x86-64-v3", build="AVX2", registers="ymm", kernel="Haswell", numpy_avx512=()):
    return {"minillm": "/cache/minillm", "march": march, "build": build, "registers": registers,
            "blas": [["scipy", "openblas 0.3.30", kernel], ["numpy", "openblas 0.3.31", kernel]],
            "numpy_avx512": list(numpy_avx512)}


def test_mismatches_name_what_ran_at_another_level():
    avx512 = set(SKYLAKE_X.split())
    assert machine.mismatches("avx2", "minillm", minillm_facts(), avx512) == []
    assert machine.mismatches("avx2", "torch", {"capability": "AVX2", "mkl": "AVX2"}, avx512) == []
    assert machine.mismatches("avx2", "torch", {"capability": "AVX2", "mkl": "generic"}, avx512) == []  # AMD
    assert machine.mismatches("avx2", "torch", {"capability": "AVX512", "mkl": "AVX2"}, avx512) == [
        "torch's CPU capability AVX512, not AVX2"]
    assert machine.mismatches("avx2", "torch", {"capability": "AVX2", "mkl": "AVX-512"}, avx512) == [
        "torch's MKL AVX-512, not AVX2"]
    wrong = machine.mismatches("avx2", "minillm", minillm_facts(march="native", build="AVX-512"), avx512)
    assert wrong == ["minillm's kernels from /cache/minillm built for native (AVX-512), not AVX2"]
    wrong = machine.mismatches("avx2", "minillm", minillm_facts(kernel="SkylakeX", numpy_avx512=["X86_V4"]), avx512)
    assert wrong == ["scipy's openblas 0.3.30 runs its SkylakeX kernels, not Haswell",
                     "numpy's openblas 0.3.31 runs its SkylakeX kernels, not Haswell", "NumPy's loops X86_V4 are on"]
    # native: minillm as built for the CPU at hand; a portable or AVX2 build there says how to rebuild
    assert machine.mismatches("native", "minillm", minillm_facts("native", "AVX-512", kernel="SkylakeX"), avx512) == []
    assert "--force" in machine.mismatches("native", "minillm", minillm_facts(), avx512)[0]
    assert "not built" in machine.mismatches("native", "minillm", minillm_facts(None, None), avx512)[0]
    assert machine.mismatches("native", "minillm", minillm_facts(), set(ZEN3.split())) == []


def test_worker_env_unsets_what_forces_a_level_and_sets_the_avx2_one(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("PYTHONPATH", "/repo")
    native = machine.worker_env("native", 3, MINILLM_KERNELS="numpy")
    assert not set(machine.FORCING) & set(native)
    assert (native["OMP_NUM_THREADS"], native["MINILLM_KERNELS"], native["PYTHONPATH"]) == ("3", "numpy", "/repo")

    monkeypatch.setattr(machine, "avx2_build", lambda: "/cache/bench-x86-64-v3/abc")
    monkeypatch.setattr(machine, "this_cpu", lambda: machine.read_cpuinfo(cpuinfo("Xeon", SAPPHIRE_RAPIDS, 2600.0)))
    avx2 = machine.worker_env("avx2", 2)
    assert {key: avx2[key] for key in machine.AVX2_ENV} == machine.AVX2_ENV
    assert avx2["PYTHONPATH"] == os.pathsep.join(["/cache/bench-x86-64-v3/abc", "/repo"])
    assert set(avx2.get("NPY_DISABLE_CPU_FEATURES", "").split()) == set(machine.numpy_above_avx2())

    monkeypatch.setattr(machine, "this_cpu", lambda: machine.read_cpuinfo(cpuinfo("Old", BASE, 2600.0)))
    with pytest.raises(SystemExit, match="runs no AVX2"):
        machine.worker_env("avx2", 2)
    with pytest.raises(ValueError, match="'avx3'"):
        machine.worker_env("avx3", 2)


def _probe(side, env):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "machine.py"), "--probe", side], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@X86
def test_the_avx2_variables_hold_torch_and_openblas_to_avx2(monkeypatch):
    """The variables worker_env sets at avx2 do what the description claims, on the machine at hand
    (an AVX2 machine runs them at AVX2 anyway): torch and its MKL report AVX2, every OpenBLAS its
    Haswell kernels, and NumPy's loops above AVX2 are off."""
    optional("torch")
    optional("threadpoolctl")
    monkeypatch.setattr(machine, "avx2_build", lambda: str(REPO))  # this checkout: the build is not the point
    env = machine.worker_env("avx2", 1)
    torch_facts = _probe("torch", env)
    assert torch_facts["capability"] == "AVX2" and torch_facts["mkl"] in ("AVX2", "generic", "unknown"), torch_facts
    facts = _probe("minillm", env)
    assert facts["blas"] and all(kernel == "Haswell" for _, _, kernel in facts["blas"]), facts
    assert facts["numpy_avx512"] == []


def test_compile_flags_follow_minillm_march():
    flags, _ = setup_py.compile_flags({})
    assert "-march=native" in flags and '-DMINILLM_MARCH="native"' in flags
    flags, _ = setup_py.compile_flags({"MINILLM_MARCH": "x86-64-v3"})
    assert "-march=x86-64-v3" in flags and '-DMINILLM_MARCH="x86-64-v3"' in flags
    assert not any(f == "-march=native" for f in flags)
    flags, _ = setup_py.compile_flags({"MINILLM_PORTABLE": "1"})
    assert not any(f.startswith(("-march", "-DMINILLM_MARCH")) for f in flags)
    with pytest.raises(SystemExit, match="two levels"):
        setup_py.compile_flags({"MINILLM_PORTABLE": "1", "MINILLM_MARCH": "x86-64-v3"})
    with pytest.raises(SystemExit, match="MINILLM_MARCH='x86 64; rm'"):
        setup_py.compile_flags({"MINILLM_MARCH": "x86 64; rm"})


def test_x86_builds_prefer_512_bit_vectors_and_other_architectures_get_no_x86_option():
    for environ in ({}, {"MINILLM_MARCH": "x86-64-v3"}):
        assert "-mprefer-vector-width=512" in setup_py.compile_flags(environ, arch="x86_64")[0]
        assert not any("vector-width" in f for f in setup_py.compile_flags(environ, arch="aarch64")[0])
    assert not any("vector-width" in f for f in setup_py.compile_flags({"MINILLM_PORTABLE": "1"}, arch="x86_64")[0])


@X86
def test_kernels_built_with_avx512_use_512_bit_registers():
    """Where the build's level has AVX-512F, the machine code holds zmm registers (GCC's tuning for
    several AVX-512 CPUs would keep it to ymm without setup.py's -mprefer-vector-width=512); without
    AVX-512F, no zmm."""
    from minillm import kernels

    build = kernels.load("build_info")
    assert build is not None, "minillm._C is not built"
    widest = machine.widest_registers(os.path.dirname(build.__file__))
    assert widest != "unknown", "objdump (binutils, which the C build needs too) could not read the kernels"
    assert (widest == "zmm") == ("avx512f" in build.FLAGS), (widest, build.FLAGS)


# the compiler's predefined macros, by the cpuinfo flag name csrc/build_info.pyx records them under
MACROS = {"__FMA__": "fma", "__AVX2__": "avx2", "__AVX512F__": "avx512f", "__AVX512BW__": "avx512bw",
          "__AVX512DQ__": "avx512dq", "__AVX512VL__": "avx512vl", "__AMX_TILE__": "amx_tile"}


def compiler_flags(flags):
    """The MACROS flags the C compiler predefines when it compiles with ``flags``."""
    done = subprocess.run(["cc", "-dM", "-E", "-x", "c", os.devnull] + flags, capture_output=True, text=True,
                          check=True)
    defined = {line.split()[1] for line in done.stdout.splitlines()}
    return {name for macro, name in MACROS.items() if macro in defined}


@X86
def test_minillm_march_x86_64_v3_compiles_avx2_and_no_avx512():
    flags, _ = setup_py.compile_flags({"MINILLM_MARCH": "x86-64-v3"})
    assert compiler_flags(flags) == {"fma", "avx2"}
    assert machine.vector_level(compiler_flags(flags)) == "AVX2"


def test_the_built_kernels_record_the_level_the_compiler_gave_them():
    """minillm._C.build_info's MARCH and FLAGS agree with the compiler's macros for that -march."""
    from minillm import kernels

    build = kernels.load("build_info")
    assert build is not None, "minillm._C is not built"
    assert kernels.info()["march"] == build.MARCH
    march = [] if build.MARCH == "default" else [f"-march={build.MARCH}"]
    assert build.FLAGS == compiler_flags(march)


@X86
def test_the_avx2_build_builds_in_a_fresh_virtualenv_and_its_kernels_run_avx2(monkeypatch, tmp_path):
    """--level avx2's copy of minillm, built for real into an empty cache as on a new machine (Cython
    comes with minillm's dependencies: the build of this checkout used pip's own copy): its kernels
    are built for x86-64-v3, hold no 512-bit instruction, and run."""
    monkeypatch.setenv("MINILLM_HOME", str(tmp_path))
    folder = machine.avx2_build.__wrapped__()
    assert folder.startswith(str(tmp_path)) and os.path.isdir(folder)
    assert machine.widest_registers(os.path.join(folder, "minillm", "_C")) == "ymm"
    probe = ("import numpy, minillm; from minillm import kernels; b = kernels.load('build_info'); "
             "x = numpy.random.default_rng(0).standard_normal((4, 8), dtype=numpy.float32); "
             "e = numpy.exp(x); numpy.testing.assert_allclose(kernels.softmax_forward(x), "
             "e / e.sum(-1, keepdims=True), rtol=1e-5); print(minillm.__file__, b.MARCH)")
    done = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": folder},
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [os.path.join(folder, "minillm", "__init__.py"), "x86-64-v3"]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is Linux's /proc")
def test_a_workers_peak_memory_is_its_own_not_its_drivers():
    """A driver that holds 400 MB launches a worker as the benches do (subprocess.run): the worker's
    peak_rss_mb() is what it touched itself. (getrusage's ru_maxrss reports the driver's 400 MB there:
    Linux carries the high-water mark over across fork and exec.)"""
    worker = ("import json, resource, sys; sys.path.insert(0, sys.argv[1]); import machine; print(json.dumps("
              "[machine.peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))")
    driver = ("import subprocess, sys; held = bytearray(400 << 20); held[::4096] = b'x' * len(held[::4096]); "
              "print(subprocess.run([sys.executable, '-c', sys.argv[1], sys.argv[2]], capture_output=True, "
              "text=True, check=True).stdout)")
    out = subprocess.run([sys.executable, "-c", driver, worker, str(REPO / "bench")], capture_output=True,
                         text=True, check=True).stdout
    own, rusage = json.loads(out)
    assert own < 100, f"the worker reports {own:.0f} MB: its driver's memory, not its own (ru_maxrss: {rusage:.0f})"
