"""The BLAS under the compiled matmul and attention, and the one threading scheme of the kernels.

The compiled kernels call BLAS through scipy.linalg.cython_blas. scipy's wheels bundle their own
OpenBLAS (libscipy_openblas, separate from NumPy's), which runs a pthread pool of its own next to
OpenMP's. Two pools in one process fight: an OpenBLAS worker spins for about 0.1 s after each
call, and OpenMP's spin too, so on 2 cores each steals the other's core (20-60% slowdowns seen).

So the kernels use one pool, OpenMP's, for everything: every BLAS call is single-threaded and runs
inside an OpenMP prange, over (batch, head) pairs in attention, over batch entries and slabs of
rows in matmul (a single 2-D GEMM is cut into about 4 slabs per thread). ``single_threaded()``
pins scipy's OpenBLAS to one thread, once, when a BLAS kernel first runs; NumPy's own BLAS (used
by the NumPy twins) is left alone.

Work is handed out dynamically (OpenMP schedule "dynamic": rows in chunks of 32, GELU in blocks,
GEMM slabs, attention pairs), because a machine is rarely ours alone: with a static split, a
thread the OS pauses holds the whole call up. With other processes busy on this 2-core machine,
softmax over MiniLM's (32, 12, 128, 128) scores took 8.6 ms static and 2.1 ms dynamic. Results
do not depend on the schedule: every task writes its own outputs, and layer norm's backward sums
dw and db per fixed chunk of rows, not per thread.

Idle threads: after a parallel region, GCC's OpenMP (libgomp) spins its threads 300,000 times
before they sleep. Alone on the machine that costs nothing; beside any other busy process it is
ruinous: the spinning thread competes for the core the other process wants, and the next region
waits for the scheduler (layer norm on (2048, 384), 2 threads, with a nice-10 process on one of 2
cores: 12-16 ms spinning 300,000 times, 0.2 ms spinning 1,000 times, 0.18 ms on one thread). So
unless GOMP_SPINCOUNT or OMP_WAIT_POLICY is set, ``openmp_defaults()`` sets GOMP_SPINCOUNT=1000
while the first compiled kernel loads libgomp, which reads it then, once; the variable goes again
after, so torch's own copy of libgomp and child processes keep their defaults.

When scipy's BLAS is not an OpenBLAS found here (another build of scipy), nothing is pinned and
``threads()`` is None: the kernels still give right answers, but may oversubscribe the cores.
"""
import contextlib
import ctypes
import os

_SET = ("scipy_openblas_set_num_threads", "openblas_set_num_threads")  # scipy's wheels, a system OpenBLAS
_state = {}


@contextlib.contextmanager
def openmp_defaults():
    """GOMP_SPINCOUNT=1000 in the environment for the duration, unless the user set it or
    OMP_WAIT_POLICY: around the import of a compiled kernel, the first of which loads libgomp."""
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        yield
        return
    os.environ["GOMP_SPINCOUNT"] = "1000"
    try:
        yield
    finally:
        del os.environ["GOMP_SPINCOUNT"]


def _library():
    """scipy's OpenBLAS, opened with ctypes, and the symbol prefix it uses; (None, None) if not found."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library)
    try:
        with open("/proc/self/maps") as maps:  # Linux: the loaded libraries, with paths
            paths = {line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1]}
    except OSError:
        return None, None
    for path in sorted(p for p in paths if os.path.isfile(p)):
        library = ctypes.CDLL(path)
        for name in _SET:
            if hasattr(library, name):
                return library, name[: -len("set_num_threads")]
    return None, None


def single_threaded():
    """Pin scipy's BLAS to one thread (once per process); returns the thread count or None."""
    if "threads" not in _state:
        library, prefix = _library()
        _state["library"], _state["prefix"] = library, prefix
        if library is not None:
            getattr(library, prefix + "set_num_threads")(1)
        _state["threads"] = threads()
    return _state["threads"]


def threads():
    """scipy's BLAS thread count, or None when unknown."""
    library, prefix = _state.get("library"), _state.get("prefix")
    return None if library is None else int(getattr(library, prefix + "get_num_threads")())


def describe():
    """The BLAS library and its CPU kernel, e.g. 'OpenBLAS 0.3.30 ... (Haswell)', or 'unknown'."""
    single_threaded()
    library, prefix = _state["library"], _state["prefix"]
    if library is None:
        return "unknown"
    config, corename = getattr(library, prefix + "get_config"), getattr(library, prefix + "get_corename")
    config.restype = corename.restype = ctypes.c_char_p
    return f"{config().decode()} ({corename().decode()})"
