"""Compiles bob_kernels/_ikj.pyx with OpenMP when the compiler has it.

Without -fopenmp at compile AND link time, `prange` silently runs serially;
the compiled module reports which build you got (`BobBackend.openmp`).
TINYTORCH_PORTABLE=1 drops -march=native for builds meant for other machines.
"""
import os
import shutil
import subprocess
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def compiler_has_openmp():
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        return subprocess.run([cc, "-fopenmp", src, "-o", os.path.join(tmp, "omp")],
                              capture_output=True).returncode == 0


portable = os.environ.get("TINYTORCH_PORTABLE", "") not in ("", "0")
openmp = ["-fopenmp"] if compiler_has_openmp() else []
if not openmp:
    print("WARNING: bob-kernels: no OpenMP compiler support, building a serial kernel")

setup(ext_modules=cythonize([
    Extension(
        "bob_kernels._ikj",
        ["bob_kernels/_ikj.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"] + ([] if portable else ["-march=native"]) + openmp,
        extra_link_args=openmp,
    ),
]))
