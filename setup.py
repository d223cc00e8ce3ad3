"""Builds the Cython extensions; all metadata lives in pyproject.toml.

Environment:
  TINYTORCH_PORTABLE=1  build for any CPU of this architecture (no -march=native),
                        for wheels meant for other machines.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def _compiler_accepts(flag):
    """True if the C compiler builds and links a trivial OpenMP program with `flag`."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        result = subprocess.run([cc, flag, src, "-o", os.path.join(tmp, "probe")],
                                capture_output=True)
        return result.returncode == 0


portable = os.environ.get("TINYTORCH_PORTABLE", "") not in ("", "0")
compile_args = ["-O3"] + ([] if portable else ["-march=native"])
link_args = []
if _compiler_accepts("-fopenmp"):
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
else:
    warnings.warn("tinytorch: the C compiler does not accept -fopenmp; the optimized "
                  "backend is built SERIAL (one thread). Install an OpenMP-capable "
                  "compiler (gcc, or libomp for clang) and reinstall for threads.")
    print("WARNING: building tinytorch kernels without OpenMP (serial).", file=sys.stderr)


# The GEMM micro-kernel (C with GCC vector extensions) that both kernels include:
# a change to it must rebuild them.
KERNEL_HEADERS = ["tinytorch/backends/_microkernel.h", "tinytorch/backends/_microkernel_body.h",
                  "tinytorch/backends/_winograd.h", "tinytorch/backends/_winograd_body.h"]


def kernel(name):
    """One extension per .pyx file, each beside the Python module that wraps it."""
    return Extension(
        name,
        [name.replace(".", "/") + ".pyx"],
        depends=KERNEL_HEADERS,
        include_dirs=[numpy.get_include(), "tinytorch/backends"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )


# The arena preloads this plain C library into competition workers to notice
# BLAS calls (see tinytorch/arena/blasguard.c); it uses no Python API.
blasguard = Extension("tinytorch.arena._blasguard", ["tinytorch/arena/blasguard.c"],
                      libraries=["dl"])

setup(ext_modules=cythonize(
    [kernel("tinytorch.backends._gemm"), kernel("tinytorch.backends._conv"),
     kernel("tinytorch.backends._winograd")],
    compiler_directives={"language_level": "3"},
) + [blasguard])
