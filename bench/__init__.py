"""Benchmarks, run as scripts (`.venv/bin/python bench/labs.py --quick`); a package so `bench.vm` imports."""
