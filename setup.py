"""Builds the compiled edit path (engine/compiled.cpp); everything else is in pyproject.toml."""

import platform

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup

# x86-64-v3 (AVX2, FMA) is the baseline of every x86 machine vqedit runs on; the linears pick an
# AVX-512 kernel at run time where the CPU has one. Other architectures build portable code.
# -fopenmp-simd honours the file's `omp simd` reductions without linking OpenMP.
FLAGS = ["-O3", "-fno-math-errno", "-fopenmp-simd"]
if platform.machine() in ("x86_64", "AMD64"):
    FLAGS.append("-march=x86-64-v3")

setup(ext_modules=[Pybind11Extension("vqedit.engine._compiled", ["engine/compiled.cpp"],
                                     cxx_std=17, extra_compile_args=FLAGS)])
