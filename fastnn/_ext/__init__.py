"""Compiled extension modules (built from kernels/*.pyx by setup.py)."""
