"""Build minillm: every csrc/*.pyx becomes the extension minillm._C.<name>.

Flags: -O3 always; OpenMP when the compiler accepts it (the build falls back to serial kernels
when it does not); -march=native for fast vectorized exp/erf, or MINILLM_MARCH=<level> for another
instruction set (x86-64-v3: AVX2 and FMA, the level bench/machine.py builds for `--level avx2`), or
MINILLM_PORTABLE=1 for a build that runs on any CPU of the same architecture.
On x86-64 every -march build prefers 512-bit vectors (-mprefer-vector-width=512): GCC tunes several
AVX-512 CPUs (-march=native on Rocket Lake, Ice Lake, Sapphire Rapids) to 256-bit vectors, for fear of
the clock drop that old Skylake-X cores took on zmm code; the kernels' exp/erf loops run faster at 512
bits (bench/compiled_kernels.py), and on a level without AVX-512 (x86-64-v3) the preference changes nothing. The level chosen is
compiled into minillm._C.build_info (csrc/build_info.pyx), so a build says what it was built for.
A changed MINILLM_MARCH changes no source: add --force to rebuild a tree built before.
No -ffast-math: masks rely on -inf and NaN.
-fno-trapping-math is the one piece of it we take: it lets GCC turn the comparisons in
csrc/vecmath.h into vector selects on AVX2 (AVX-512 masks need no such leave); values, inf and NaN
are unchanged, only the floating-point exception flags, which nothing reads, may differ.
MINILLM_SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer (-O1, any UB fatal),
for the fuzz run only: python then needs the sanitizers' runtimes preloaded (bench/fuzz.py says how).

The build's imports (Cython, setuptools) live under __main__, so tests import this file for
compile_flags() alone.
"""
import glob
import os
import platform
import re
import tempfile


def compile_flags(environ, arch=None):
    """(compile flags, link flags) that ``environ`` (MINILLM_SANITIZE, MINILLM_PORTABLE,
    MINILLM_MARCH) asks for on the CPU architecture ``arch`` (platform.machine() by default),
    OpenMP aside. The -march level is also passed as the macro MINILLM_MARCH, a string literal
    that csrc/build_info.pyx keeps."""
    if environ.get("MINILLM_SANITIZE", "0") == "1":  # for the fuzz run only (bench/fuzz.py)
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
                    "-g"]
        flags, link = ["-O1", "-fno-trapping-math"] + sanitize, sanitize
    else:
        flags, link = ["-O3", "-fno-trapping-math"], []
    march = environ.get("MINILLM_MARCH")
    if environ.get("MINILLM_PORTABLE", "0") == "1":
        if march:
            raise SystemExit(f"MINILLM_PORTABLE=1 and MINILLM_MARCH={march!r} ask for two levels: set one")
        return flags, link
    march = march or "native"
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", march):  # it goes into a C string literal
        raise SystemExit(f"MINILLM_MARCH={march!r}: expected a GCC -march level such as native or x86-64-v3")
    flags = flags + [f"-march={march}", f'-DMINILLM_MARCH="{march}"']
    if (arch or platform.machine()) in ("x86_64", "AMD64"):  # an x86 option: other compilers' targets reject it
        flags.append("-mprefer-vector-width=512")
    return flags, link


def _compiler_accepts(compiler, flags):
    """Whether the C compiler builds and links a small OpenMP program with ``flags``."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objects, os.path.join(tmp, "probe"), extra_postargs=flags)
        except Exception:
            return False
    return True


def build_ext_command():
    """setuptools' build_ext with compile_flags(os.environ) and OpenMP on every extension."""
    from setuptools.command.build_ext import build_ext

    class BuildExt(build_ext):
        def build_extensions(self):
            flags, link = compile_flags(os.environ)
            if _compiler_accepts(self.compiler, ["-fopenmp"]):
                flags, link = flags + ["-fopenmp"], link + ["-fopenmp"]
            else:
                print("minillm: the compiler has no OpenMP; building serial kernels")
            for ext in self.extensions:
                ext.extra_compile_args = flags + ext.extra_compile_args
                ext.extra_link_args = link + ext.extra_link_args
            super().build_extensions()
    return BuildExt


if __name__ == "__main__":
    from Cython.Build import cythonize
    from setuptools import Extension, find_packages, setup

    shared = sorted(glob.glob("csrc/*.pxd") + glob.glob("csrc/*.h"))  # cimported / included by the kernels
    extensions = [
        Extension(f"minillm._C.{os.path.splitext(os.path.basename(path))[0]}", [path], depends=shared)
        for path in sorted(glob.glob("csrc/*.pyx"))
    ]
    setup(
        ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}),
        cmdclass={"build_ext": build_ext_command()},
        # The CUDA sources, compiled at run time through CuPy, ship inside the package as minillm/_cuda_src
        # (minillm/kernels/cuda finds them there, or in csrc/cuda in a source checkout).
        packages=find_packages(include=["minillm*"]) + ["minillm._cuda_src"],
        package_dir={"minillm._cuda_src": "csrc/cuda"},
        package_data={"minillm._cuda_src": ["*.cu", "*.cuh"]},
    )
