"""Benchmarks users run on their data: ``graphwsss bench-graphs`` (:mod:`graphwsss.bench.graphs`).
The propagation speed benchmark is ``scripts/bench_propagation.py``."""
