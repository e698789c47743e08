"""Compiled twins of minillm/kernels, built from csrc/*.pyx by setup.py (one extension per file)."""
