"""The benchmark harness (issue 7): `python -m ops.bench [--quick]` from the repository root.

Kept import-free so the helper processes (`ops.bench.upstream`, `ops.bench.floor`) start light.
"""
