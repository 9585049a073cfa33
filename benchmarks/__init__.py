"""Benchmarks of dask-federation on a simulated wide-area federation.

``python -m benchmarks run [--quick] [--loopback]``: a hub and three sites on this
machine (each in its own network namespace with shaped links when run as root),
every workload run with dask-federation and three baselines; results in
``benchmarks/results/<date>.{json,md,png}``. See ``benchmarks/README.md``.
"""
