# cython: language_level=3
"""How many OpenMP threads the compiled kernels run on (1 in a build without OpenMP)."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int minillm_max_threads(void) { return omp_get_max_threads(); }
    static void minillm_set_threads(int n) { omp_set_num_threads(n); }
    #else
    static int minillm_max_threads(void) { return 1; }
    static void minillm_set_threads(int n) { (void)n; }
    #endif
    """
    int minillm_max_threads()
    void minillm_set_threads(int n)


def max_threads():
    return minillm_max_threads()


def set_threads(int n):
    """Use n threads in every later prange (as torch.set_num_threads)."""
    if n < 1:
        raise ValueError(f"set_threads: n must be >= 1, got {n}")
    minillm_set_threads(n)
