"""Which machine a benchmark ran on and at which level, and the switch that runs both sides at AVX2.

    python bench/machine.py                        # this machine, as the benches under bench/ print it
    python bench/machine.py --level avx2 --threads 2

The description every bench prints at its top:
  - the CPU model and the vector instruction sets it runs (AVX2, AVX-512, AMX: /proc/cpuinfo's flags);
  - minillm: the -march level its kernels were built for and the instruction sets that let the
    compiler use (minillm._C.build_info, recorded by the compiler), the widest vector registers in
    their machine code (objdump: GCC tunes some AVX-512 CPUs to 256-bit vectors), each BLAS in its
    process and the kernel it picked (threadpoolctl), and whether NumPy's AVX-512 loops are on;
  - torch: its CPU capability (torch.backends.cpu.get_cpu_capability()) and its MKL's instruction set;
  - the CPU's float32 peak at the level run,
        peak = threads x 2 FMA units x lanes x 2 flops x clock,
    16 lanes at AVX-512 and 8 at AVX2, as many as each FMA unit holds: 8 at AVX-512 too on AMD's
    Zen 4 (cpu family 25), which runs each 512-bit instruction on 256-bit units in two halves; 2 FMA
    units per core assumed (recent Intel server cores and AMD Zen; some Intel cores have one 512-bit
    unit, where the AVX-512 peak is half of this, which cpuinfo does not tell), the clock cpuinfo's
    "cpu MHz" (on a virtual machine often the base clock: a share above 100% then means the cores
    run faster).
minillm's and torch's facts come from a probe process per side, launched as the bench's workers are.

Levels (--level on bench/compiled_kernels.py, bert_step.py, pretrain_step.py, sst2_finetune.py, embed.py):
  native  what the machine runs by itself: worker_env() unsets every variable that forces a lower
          level (FORCING below; some machines set OPENBLAS_CORETYPE), minillm as built here;
  avx2    both sides held to AVX2 on an AVX-512 machine (AVX2_ENV below):
            minillm  its kernels built with MINILLM_MARCH=x86-64-v3 (AVX2 + FMA) into a cache
                     folder outside the repository, once per source state (avx2_build()), first on
                     the workers' PYTHONPATH; NumPy's loops above AVX2 off (NPY_DISABLE_CPU_FEATURES),
                     since minillm's ops outside its kernels are NumPy's
            OpenBLAS its Haswell kernels (scipy's, under minillm's matmul, and NumPy's)
            torch    its own kernels at AVX2 (ATEN_CPU_CAPABILITY), its MKL's matrix products too
                     (MKL_ENABLE_INSTRUCTIONS), oneDNN capped as well (float32 layers do not use it)
Every worker also reports what it ran (ran()), and check() stops the bench when that is not the
level asked for, so a wrong level cannot pass silently.
"""
import argparse
import ctypes
import functools
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections import namedtuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = ("native", "avx2")
AVX2_MARCH = "x86-64-v3"
# name: the cpuinfo flags it needs (AVX-512 as Skylake-X has it, and as torch's AVX512 level needs it)
ISA = (("AVX2", {"avx2", "fma"}), ("AVX-512", {"avx512f", "avx512bw", "avx512dq", "avx512vl"}), ("AMX", {"amx_tile"}))
LANES = {"AVX2": 8, "AVX-512": 16}  # float32 lanes of the level's widest vectors
AVX2_ENV = {"OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "ONEDNN_MAX_CPU_ISA": "AVX2"}
FORCING = tuple(AVX2_ENV) + ("OPENBLAS_L2_SIZE", "NPY_DISABLE_CPU_FEATURES")
BLAS_ROLE = {"scipy": "minillm's kernels", "numpy": "NumPy twins"}  # whose BLAS each wheel's is


# ---- the CPU ---------------------------------------------------------------------------------------
Cpu = namedtuple("Cpu", "name flags mhz vendor family model")


def read_cpuinfo(text):
    """Cpu(model name, set of flags, highest "cpu MHz" or None, vendor_id, cpu family, model; the
    last three None where absent) from the text of /proc/cpuinfo."""
    fields, mhz = {}, []
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "cpu MHz":
            mhz.append(float(value))
        else:
            fields.setdefault(key, value)  # the first processor's; they agree
    number = {key: int(fields[key]) if fields.get(key, "").isdigit() else None for key in ("cpu family", "model")}
    return Cpu(fields.get("model name", "unknown CPU"), set(fields.get("flags", "").split()), max(mhz, default=None),
               fields.get("vendor_id"), number["cpu family"], number["model"])


def this_cpu():
    """read_cpuinfo() of this machine (nothing known where there is no /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            return read_cpuinfo(f.read())
    except OSError:  # not Linux
        return read_cpuinfo("")


def isa_levels(flags):
    """The instruction sets of ISA that ``flags`` (cpuinfo's names) all have, e.g. ['AVX2', 'AVX-512', 'AMX']."""
    return [name for name, needs in ISA if needs <= set(flags)]


def vector_level(flags):
    """The widest float32 vector level among ``flags``: 'AVX-512', 'AVX2', or None (neither)."""
    return next((name for name in reversed(isa_levels(flags)) if name in LANES), None)


def fma_bits(cpu):
    """The width of each FMA unit of ``cpu`` (a Cpu), in bits: 256 on AMD's Zen 4 (AuthenticAMD,
    cpu family 25, the only one of that family with AVX-512), which splits each 512-bit instruction
    into two 256-bit halves; 512 otherwise."""
    return 256 if (cpu.vendor, cpu.family) == ("AuthenticAMD", 25) else 512


def peak(threads, level, mhz, unit_bits=512):
    """(GFLOP/s, how it was computed): the float32 peak of ``threads`` cores at ``level``, each FMA
    unit ``unit_bits`` wide."""
    if level not in LANES:
        return float("nan"), "no peak: the CPU runs neither AVX2 nor AVX-512"
    ghz, clock = (mhz / 1000, "cpuinfo's cpu MHz") if mhz else (2.0, "assumed: cpuinfo gives no clock")
    lanes = min(LANES[level], unit_bits // 32)
    units = f"{level} on {unit_bits}-bit units" if lanes < LANES[level] else level
    return (threads * 2 * lanes * 2 * ghz,
            f"{threads} threads x 2 FMA units x {lanes} float32 lanes ({units}) x 2 flops x {ghz:.2f} GHz "
            f"({clock}; 2 FMA units per core assumed)")


def level_peak(level, threads):
    """peak() of this CPU at bench level ``level`` ('native' or 'avx2')."""
    cpu = this_cpu()
    return peak(threads, "AVX2" if level == "avx2" else vector_level(cpu.flags), cpu.mhz, fma_bits(cpu))


# ---- the workers' environment ------------------------------------------------------------------------
def worker_env(level, threads, **extra):
    """The environment of a bench's worker process at ``level``: this process's, less every variable
    in FORCING, with OMP_NUM_THREADS=threads and ``extra``; at 'avx2', AVX2_ENV, NumPy's loops above
    AVX2 off and the x86-64-v3 build of minillm first on PYTHONPATH."""
    if level not in LEVELS:
        raise ValueError(f"level {level!r}: expected one of {LEVELS}")
    env = {key: value for key, value in os.environ.items() if key not in FORCING}
    env.update(OMP_NUM_THREADS=str(threads), **extra)
    if level == "avx2":
        if "AVX2" not in isa_levels(this_cpu().flags):
            raise SystemExit("--level avx2: this CPU runs no AVX2 (no avx2 and fma in /proc/cpuinfo's flags)")
        env.update(AVX2_ENV, PYTHONPATH=os.pathsep.join(filter(None, [avx2_build(), os.environ.get("PYTHONPATH")])))
        above = numpy_above_avx2()
        if above:
            env["NPY_DISABLE_CPU_FEATURES"] = " ".join(above)
    return env


def numpy_above_avx2():
    """NumPy's run-time dispatch targets above AVX2 (its AVX-512 loops) that are on in this process:
    what NPY_DISABLE_CPU_FEATURES switches off in an avx2 worker."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return [name for name in __cpu_dispatch__ if (name.startswith("AVX512") or name == "X86_V4")
            and __cpu_features__.get(name)]


def _sources():
    """The files a copy of minillm is built from, relative to REPO: the package (built files and
    caches aside), csrc/ (Cython's .c output aside: the build writes it anew) and setup.py."""
    found = ["setup.py"]
    for top, skip in (("minillm", (".so", ".pyc")), ("csrc", (".c",))):
        for folder, dirs, files in os.walk(os.path.join(REPO, top)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            found += sorted(os.path.relpath(os.path.join(folder, name), REPO) for name in files if not name.endswith(skip))
    return found


@functools.cache
def avx2_build():
    """The folder of a copy of this checkout's minillm with its kernels built for x86-64-v3, in
    <minillm's cache>/bench-x86-64-v3/<hash of the sources and the Python's extension suffix>:
    built on first use (about a minute), then reused while the sources stay the same. The hash
    covers the package's Python files too, so the copy never runs older code than the checkout."""
    from minillm.pretrained import home

    sources = _sources()
    digest = hashlib.sha256(sysconfig.get_config_var("EXT_SUFFIX").encode())
    for path in sources:
        with open(os.path.join(REPO, path), "rb") as f:
            digest.update(path.encode() + b"\0" + f.read())
    folder = os.path.join(home(), f"bench-{AVX2_MARCH}", digest.hexdigest()[:16])
    if os.path.isdir(folder):
        return folder
    building = f"{folder}.{os.getpid()}.tmp"  # renamed into place when built: the cache has whole builds only
    for path in sources:
        os.makedirs(os.path.dirname(os.path.join(building, path)), exist_ok=True)
        shutil.copy2(os.path.join(REPO, path), os.path.join(building, path))
    env = {key: value for key, value in os.environ.items() if key not in ("MINILLM_PORTABLE", "MINILLM_SANITIZE")}
    print(f"building minillm's kernels for {AVX2_MARCH} into {folder} (once for these sources) ...",
          file=sys.stderr, flush=True)
    with open(os.path.join(building, "build.log"), "w") as log:
        done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-j", str(os.cpu_count() or 1)],
                              cwd=building, env={**env, "MINILLM_MARCH": AVX2_MARCH}, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"building minillm for {AVX2_MARCH} failed: see {building}/build.log")
    shutil.rmtree(os.path.join(building, "build"))  # the object files
    try:
        os.rename(building, folder)
    except OSError:  # another bench built the same sources first
        shutil.rmtree(building)
    return folder


# ---- what a worker runs ----------------------------------------------------------------------------------
def proc_status_mib(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM, ...) in MiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def peak_rss_mb():
    """This process's peak resident memory in MiB: /proc/self/status's VmHWM, the high-water mark of
    its own address space. Not getrusage's ru_maxrss: Linux carries that over from the parent across
    fork and exec, so a worker launched by a driver that once held 1.3 GB reports 1.3 GB."""
    return proc_status_mib("VmHWM")


def ran(side):
    """What this process runs, as a JSON-able dict: for 'torch', its CPU capability and MKL's
    instruction set; for a minillm side, the build of its kernels, each BLAS and NumPy's loops
    above AVX2 that are on. Call it after the work, when every library is loaded."""
    if side == "torch":
        import torch
        return {"torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
                "mkl": mkl_isa(torch)}
    import minillm

    minillm.kernels.info()  # loads scipy's BLAS, the one under the compiled kernels
    build = minillm.kernels.load("build_info")
    return {"minillm": os.path.dirname(minillm.__file__), "march": build and build.MARCH,
            "build": build and vector_level(build.FLAGS),
            "registers": build and widest_registers(os.path.dirname(build.__file__)),
            "blas": blas_kernels(), "numpy_avx512": numpy_above_avx2()}


def widest_registers(folder):
    """The widest vector registers the compiled kernels in ``folder`` use ('zmm': 512 bits, 'ymm':
    256, 'xmm': 128), from their disassembly; 'unknown' without objdump."""
    code = ""
    for library in sorted(glob.glob(os.path.join(folder, "*.so"))):
        try:
            code += subprocess.run(["objdump", "-d", "--no-show-raw-insn", library], capture_output=True,
                                   text=True).stdout
        except FileNotFoundError:
            return "unknown"
    return next((name for name in ("zmm", "ymm", "xmm") if re.search(rf"%{name}\d", code)), "none")


def blas_kernels():
    """[[owner, library and version, kernel]] for every BLAS loaded here (threadpoolctl), e.g.
    ['scipy', 'openblas 0.3.30', 'SkylakeX']; the owner is the wheel whose folder holds it."""
    import threadpoolctl
    return sorted([os.path.basename(os.path.dirname(lib["filepath"])).removesuffix(".libs"),
                   f"{lib['internal_api']} {lib['version']}", lib.get("architecture", "unknown")]
                  for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas")


class _MKLVersion(ctypes.Structure):  # MKL's MKLVersion record
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("update", ctypes.c_int),
                ("status", ctypes.c_char_p), ("build", ctypes.c_char_p), ("processor", ctypes.c_char_p),
                ("platform", ctypes.c_char_p)]


def mkl_isa(torch):
    """The instruction set torch's MKL dispatches to: the "processor" of MKL's version record
    (MKL_ENABLE_INSTRUCTIONS lowers it), from mkl_serv_get_version, the symbol behind the public
    mkl_get_version that torch's libtorch_cpu exports; 'generic' on a CPU that MKL does not
    dispatch by instruction set (an AMD one: its Intel-only AVX-512 paths stay off), 'unknown'
    where the symbol is not there."""
    try:
        get = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")).mkl_serv_get_version
    except (OSError, AttributeError):
        return "unknown"
    version = _MKLVersion()
    get(ctypes.byref(version))
    text = (version.processor or b"").decode()
    if text == "Intel(R) Architecture processors":  # what MKL names on a CPU it does not dispatch by ISA (AMD's)
        return "generic"
    return next((name for name in ("AVX-512", "AVX2") if name in text), text or "unknown")


def mismatches(level, side, facts, cpu_flags):
    """What in a worker's ran() ``facts`` is not ``level`` on a CPU with ``cpu_flags``: [] when all is."""
    if side == "torch":
        if level == "avx2":
            return [f"{what} {facts[key]}, not AVX2" for what, key in (("torch's CPU capability", "capability"),
                                                                        ("torch's MKL", "mkl"))
                    if facts[key] not in ("AVX2", "generic", "unknown")]
        return []
    want = "AVX2" if level == "avx2" else vector_level(cpu_flags)
    if facts["build"] != want:
        return [f"minillm's kernels from {facts['minillm']} built for {facts['march'] or 'nothing (not built)'} "
                f"({facts['build'] or 'no AVX2'}), not {want}"
                + ("" if level == "avx2" else ": rebuild them, python setup.py build_ext --inplace --force")]
    if level != "avx2":
        return []
    wrong = [f"{owner}'s {library} runs its {kernel} kernels, not Haswell" for owner, library, kernel in facts["blas"]
             if not (library.startswith("openblas") and kernel == "Haswell")]
    if facts["registers"] == "zmm":
        wrong.append("minillm's kernels contain 512-bit (zmm) instructions")
    if facts["numpy_avx512"]:
        wrong.append(f"NumPy's loops {', '.join(facts['numpy_avx512'])} are on")
    return wrong


def check(level, side, facts):
    """Stop the bench, naming what differs, when a ``side`` worker ran another level than ``level``."""
    wrong = mismatches(level, side, facts, this_cpu().flags)
    if wrong:
        raise SystemExit(f"--level {level}: the {side} worker ran " + "; ".join(wrong))


# ---- the description ---------------------------------------------------------------------------------
def probe(side, level, threads):
    """ran(side) from a fresh process with the environment of the bench's workers at ``level``."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--probe", side], capture_output=True,
                          text=True, env=worker_env(level, threads))
    if done.returncode != 0:
        raise SystemExit(f"the {side} probe at --level {level} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(side, facts):
    """What a ``side`` worker runs, from its ran() facts: a line, two for minillm."""
    if side == "torch":
        return f"torch {facts['torch']}: CPU capability {facts['capability']}, MKL {facts['mkl']}"
    blas = ", ".join(f"{owner}'s {library} {kernel}" + (f" ({BLAS_ROLE[owner]})" if owner in BLAS_ROLE else "")
                     for owner, library, kernel in facts["blas"])
    loops = ", ".join(facts["numpy_avx512"]) or "none"
    return (f"minillm ({facts['minillm']}): kernels built -march={facts['march']} ({facts['build']}; widest "
            f"registers in their code: {facts['registers']}); NumPy's loops above AVX2 on: {loops}\n"
            f"minillm's process, BLAS: {blas}")


def describe(level, threads, sides=("minillm", "torch")):
    """The lines a bench prints at its top: the machine, the level, what each side runs at it
    (checked: a probe that ran another level stops the bench) and the float32 peak."""
    cpu = this_cpu()
    family = f" ({cpu.vendor} family {cpu.family} model {cpu.model})" if cpu.family is not None else ""
    lines = [f"machine: {cpu.name}{family}, {os.cpu_count()} cores; the CPU runs "
             f"{', '.join(isa_levels(cpu.flags)) or 'no AVX2'} "
             f"(/proc/cpuinfo flags); {threads} threads"]
    if level == "avx2":
        lines.append(f"level avx2: minillm built for {AVX2_MARCH}, NumPy's AVX-512 loops off, "
                     + " ".join(f"{key}={value}" for key, value in AVX2_ENV.items()))
    else:
        lines.append(f"level native: nothing forced ({', '.join(FORCING)} unset in the workers)")
    for side in sides:
        facts = probe(side, level, threads)
        check(level, side, facts)
        lines.append(summary(side, facts))
    gflops, how = level_peak(level, threads)
    lines.append(f"float32 peak {gflops:.0f} GFLOP/s = {how}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", choices=LEVELS, default="native")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return print(json.dumps(ran(args.probe)))
    print(describe(args.level, args.threads))


if __name__ == "__main__":
    main()
