"""Build minillm: every csrc/*.pyx becomes the extension minillm._C.<name>.

Flags: -O3 always; OpenMP when the compiler accepts it (the build falls back to serial kernels
when it does not); -march=native for fast vectorized exp/erf unless MINILLM_PORTABLE=1 asks for a
build that runs on any CPU of the same architecture. No -ffast-math: masks rely on -inf and NaN.
-fno-trapping-math is the one piece of it we take: it lets GCC turn the comparisons in
csrc/vecmath.h into vector selects on AVX2 (AVX-512 masks need no such leave); values, inf and NaN
are unchanged, only the floating-point exception flags, which nothing reads, may differ.
MINILLM_SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer (-O1, any UB fatal),
for the fuzz run only: python then needs the sanitizers' runtimes preloaded (bench/fuzz.py says how).
"""
import glob
import os
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


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


class BuildExt(build_ext):
    def build_extensions(self):
        compile_flags = ["-O3", "-fno-trapping-math"]
        if os.environ.get("MINILLM_SANITIZE", "0") == "1":  # for the fuzz run only (bench/fuzz.py)
            sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
                        "-g"]
            compile_flags, extra_link = ["-O1", "-fno-trapping-math"] + sanitize, sanitize
        else:
            extra_link = []
        if os.environ.get("MINILLM_PORTABLE", "0") != "1":
            compile_flags.append("-march=native")
        link_flags = list(extra_link)
        if _compiler_accepts(self.compiler, ["-fopenmp"]):
            compile_flags.append("-fopenmp")
            link_flags.append("-fopenmp")
        else:
            print("minillm: the compiler has no OpenMP; building serial kernels")
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags + ext.extra_compile_args
            ext.extra_link_args = link_flags + ext.extra_link_args
        super().build_extensions()


shared = sorted(glob.glob("csrc/*.pxd") + glob.glob("csrc/*.h"))  # cimported / included by the kernels
extensions = [
    Extension(f"minillm._C.{os.path.splitext(os.path.basename(path))[0]}", [path], depends=shared)
    for path in sorted(glob.glob("csrc/*.pyx"))
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}),
    cmdclass={"build_ext": BuildExt},
    # The CUDA sources, compiled at run time through CuPy, ship inside the package as minillm/_cuda_src
    # (minillm/kernels/cuda finds them there, or in csrc/cuda in a source checkout).
    packages=find_packages(include=["minillm*"]) + ["minillm._cuda_src"],
    package_dir={"minillm._cuda_src": "csrc/cuda"},
    package_data={"minillm._cuda_src": ["*.cu", "*.cuh"]},
)
