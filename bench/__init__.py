"""Benchmarks: training speed, memory and Prefect overhead against other tools (``make bench``).

Modelled on scikit-learn's asv benchmarks: a parameter grid (sizes x approaches) from one
config file with ``quick`` and ``full`` profiles, data built once, every measurement in a
fresh process, and a check that the fast path gives the same answers as the reference.
"""
