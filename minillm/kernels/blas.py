"""The BLAS under the compiled matmul and attention, and how the kernels share the cores with it.

The compiled kernels call BLAS through scipy.linalg.cython_blas. scipy's wheels bundle their own
OpenBLAS (libscipy_openblas, separate from NumPy's), which runs a pthread pool of its own next to
OpenMP's. Two pools in one process fight when their idle threads spin: an OpenBLAS worker spins for
about 0.1 s after each call (2^28 cycles), OpenMP's 300,000 times, so on 2 cores each steals the
other's core (20-60% slowdowns seen; attention 40x slower when its per-head BLAS calls ran with
OpenBLAS's pool on).

So each pool works in turn and sleeps as soon as it is done:
  - one big 2-D product (a Linear layer, forward or backward) is one BLAS call on BLAS's own
    threads (``use_threads(threads)``): OpenBLAS cuts it so that its threads share the packed
    operands. Cut into slabs by rows and run single-threaded in OpenMP instead, each slab packs the
    whole other operand again: a weight gradient dW = dY^T X, (384, 4096) @ (4096, 384), ran at
    65-100 GFLOP/s that way and 110-160 as one call, 2 threads on an AMD EPYC (Zen 3);
  - everything batched (attention's (batch, head) pairs, batched matmul) and every row kernel runs
    in OpenMP's pool, with BLAS single-threaded inside it (``use_threads(1)``);
  - idle threads: unless the user set them, OPENBLAS_THREAD_TIMEOUT=4 (OpenBLAS's workers sleep
    after 2^4 cycles, not 2^28; OpenBLAS reads it as the library loads, so ``thread_defaults()``
    sets it when minillm is imported, before scipy's BLAS loads, and removes it once it has) and
    GOMP_SPINCOUNT=10000 (libgomp's threads sleep after 10,000 spins, not 300,000; read as the
    first compiled kernel loads libgomp: ``openmp_defaults()``). Neither is left in the environment,
    so torch's libgomp and child processes keep their defaults. Beside another busy process a
    spinning thread competes for the core the other wants, and the next region waits for the
    scheduler (layer norm on (2048, 384), 2 threads, with a nice-10 process on one of 2 cores, AMD
    EPYC: 12-16 ms spinning 300,000 times, 0.2 ms spinning 1,000 times, 0.18 ms on one thread).
    Too few spins cost the other way: a sleeping thread takes 30-100 us to wake in a VM, and at
    1,000 spins the threads slept in the few microseconds of Python between two kernels. Intel Xeon
    (family 6 model 167, KVM, 2 cores), 1,000 against 10,000 spins: layer norm's forward on
    (1024, 768) 0.188 against 0.147 ms back to back, on (2048, 384) beside a nice-10 process 0.279
    against 0.140 ms (median); training steps the same (MiniLM 32 x 128 1.30 / 1.29 s, BERT-base
    8 x 128 2.32 / 2.33 s, medians of 3 alternating processes), and slower at 100,000 (1.34 s).
When scipy's OpenBLAS was loaded before minillm (another library imported scipy.linalg first) and no
timeout was set, its workers spin for 0.1 s: big products then stay in OpenMP's pool as slabs,
BLAS single-threaded (``threaded_products()`` is False).

Work in OpenMP's pool is handed out dynamically (schedule "dynamic": rows and GELU's elements in
tasks of 16-256 KB, csrc/tasks.pxd; GEMM slabs, attention pairs), because a machine is rarely ours
alone: with a static split, a thread the OS pauses holds the whole call up. With other processes
busy on this 2-core machine, softmax over MiniLM's (32, 12, 128, 128) scores took 8.6 ms static
and 2.1 ms dynamic. Results do not depend on the schedule: every task writes its own outputs, and
layer norm's backward sums dw and db per fixed chunk of rows, not per thread. A product is the same
bits on every run at one thread count, but not across thread counts: OpenBLAS blocks it by its
thread count (a MiniLM Linear at 1 and 2 threads differs by up to 1e-4, float32 rounding of sums of
384 terms).

When scipy's BLAS is not an OpenBLAS found here (another build of scipy), its threads cannot be
set and ``threads()`` is None: the kernels still give right answers, but may oversubscribe the cores.
"""
import contextlib
import ctypes
import os

_SET = ("scipy_openblas_set_num_threads", "openblas_set_num_threads")  # scipy's wheels, a system OpenBLAS
_TIMEOUTS = ("OPENBLAS_THREAD_TIMEOUT", "GOTO_THREAD_TIMEOUT")  # OpenBLAS reads either, as it loads
SPIN_COUNT = 10000  # libgomp's spins before an idle OpenMP thread sleeps (see above)
_state = {}


def _openblas_paths():
    """The OpenBLAS libraries loaded in this process (Linux's /proc/self/maps), or None when unknown."""
    try:
        with open("/proc/self/maps") as maps:
            return {line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1]}
    except OSError:
        return None


def thread_defaults():
    """OPENBLAS_THREAD_TIMEOUT=4 in the environment until scipy's BLAS has loaded (``_library()``
    removes it), unless the user set a timeout; called once, as minillm is imported. Records what
    was loaded already, so ``threaded_products()`` knows whether the setting reached scipy's BLAS."""
    if "preloaded" in _state:
        return
    _state["preloaded"] = _openblas_paths()
    _state["user_timeout"] = any(name in os.environ for name in _TIMEOUTS)
    if not _state["user_timeout"]:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"
        _state["set_timeout"] = True


@contextlib.contextmanager
def openmp_defaults():
    """GOMP_SPINCOUNT=SPIN_COUNT in the environment for the duration, unless the user set it or
    OMP_WAIT_POLICY: around the import of a compiled kernel, the first of which loads libgomp."""
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        yield
        return
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    try:
        yield
    finally:
        del os.environ["GOMP_SPINCOUNT"]


def _library():
    """scipy's OpenBLAS, opened with ctypes, its symbol prefix and path; (None, None, None) if not found."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library)
    if _state.pop("set_timeout", False):
        os.environ.pop("OPENBLAS_THREAD_TIMEOUT", None)  # read by now: child processes keep OpenBLAS's default
    for path in sorted(p for p in _openblas_paths() or () if os.path.isfile(p)):
        library = ctypes.CDLL(path)
        for name in _SET:
            if hasattr(library, name):
                return library, name[: -len("set_num_threads")], path
    return None, None, None


def _open():
    if "library" not in _state:
        thread_defaults()
        _state["library"], _state["prefix"], path = _library()
        _state["threads"] = None if _state["library"] is None else threads()
        preloaded = _state["preloaded"]
        _state["threaded"] = _state["library"] is not None and (
            _state["user_timeout"] or (preloaded is not None and path not in preloaded))
    return _state["library"]


def threaded_products():
    """True when one big product may run on scipy's OpenBLAS's own threads: its idle workers sleep
    right after each call (the module docstring says why that matters)."""
    _open()
    return _state["threaded"]


def use_threads(n):
    """Let scipy's BLAS use ``n`` threads per call (1 inside OpenMP's pool); a no-op when it is
    already so, or when scipy's BLAS is not an OpenBLAS found here."""
    library = _open()
    if library is not None and _state["threads"] != n:
        getattr(library, _state["prefix"] + "set_num_threads")(n)
        _state["threads"] = n


def threads():
    """scipy's BLAS thread count, or None when unknown."""
    library, prefix = _state.get("library"), _state.get("prefix")
    return None if library is None else int(getattr(library, prefix + "get_num_threads")())


def describe():
    """The BLAS library and its CPU kernel, e.g. 'OpenBLAS 0.3.30 ... (Haswell)', or 'unknown'."""
    library, prefix = _open(), _state["prefix"]
    if library is None:
        return "unknown"
    config, corename = getattr(library, prefix + "get_config"), getattr(library, prefix + "get_corename")
    config.restype = corename.restype = ctypes.c_char_p
    return f"{config().decode()} ({corename().decode()})"
