# cython: language_level=3
"""How much work one task of an OpenMP prange takes in the row and elementwise kernels.

Tasks are handed out dynamically (minillm/kernels/blas.py says why). Each should be long enough that
a thread streams through a long run of memory before it takes the next: in tasks of 16 KB the
kernels ran a third slower than in tasks of 256 KB (GELU on (4096 * 1536,) float32, 2 threads, AMD
EPYC Zen 5: forward 1.9 against 1.2 ms; softmax over (32, 12, 128, 128): 2.3 against 1.45 ms).
And there should be many of them, since a thread the OS pauses holds up the task it has: with a
busy process beside the kernels, 24 tasks of 256 KB made layer norm on (4096, 384) twice as slow.
So a task is a MIN_TASKS-th of the work, kept between MIN_ELEMENTS and MAX_ELEMENTS elements.
"""

cdef enum:
    MIN_TASKS = 64
    MIN_ELEMENTS = 4096    # 16 KB of float32
    MAX_ELEMENTS = 65536   # 256 KB


cdef inline Py_ssize_t rows_per_task(Py_ssize_t rows, Py_ssize_t n) noexcept nogil:
    """The rows of n elements each in one task, of `rows` in all (elementwise kernels: n = 1)."""
    cdef Py_ssize_t width = max(n, 1)
    cdef Py_ssize_t fewest = max(1, MIN_ELEMENTS // width), most = max(1, MAX_ELEMENTS // width)
    return min(max(rows // MIN_TASKS, fewest), most)
