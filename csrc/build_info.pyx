# cython: language_level=3
"""What the compiled kernels were built for, as the compiler saw it (every extension gets the same
flags from setup.py, so this one speaks for all):

    MARCH   setup.py's -march level ("native", "x86-64-v3", ...; "default" for MINILLM_PORTABLE=1)
    FLAGS   the instruction sets that level let the compiler use, named as /proc/cpuinfo names
            them, from the compiler's own predefined macros: what the code may contain, not what
            the CPU at hand has (bench/machine.py compares the two)
"""

cdef extern from *:
    """
    #ifndef MINILLM_MARCH
    #define MINILLM_MARCH "default"
    #endif
    static const char *const minillm_isa_flags = ""
    #ifdef __FMA__
        " fma"
    #endif
    #ifdef __AVX2__
        " avx2"
    #endif
    #ifdef __AVX512F__
        " avx512f"
    #endif
    #ifdef __AVX512BW__
        " avx512bw"
    #endif
    #ifdef __AVX512DQ__
        " avx512dq"
    #endif
    #ifdef __AVX512VL__
        " avx512vl"
    #endif
    #ifdef __AMX_TILE__
        " amx_tile"
    #endif
        ;
    """
    const char *MINILLM_MARCH
    const char *minillm_isa_flags

MARCH = MINILLM_MARCH.decode()
FLAGS = frozenset(minillm_isa_flags.decode().split())
