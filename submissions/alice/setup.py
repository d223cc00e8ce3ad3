"""Compiles alice_kernels/_matmul.pyx; all metadata lives in pyproject.toml.

TINYTORCH_PORTABLE=1 builds for any CPU of this architecture (no -march=native),
for a build meant to run on other machines.
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

portable = os.environ.get("TINYTORCH_PORTABLE", "") not in ("", "0")

setup(ext_modules=cythonize([
    Extension(
        "alice_kernels._matmul",
        ["alice_kernels/_matmul.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"] + ([] if portable else ["-march=native"]),
    ),
]))
