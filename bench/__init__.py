"""Benchmarks that print the node's figures as ratios against this machine's own limits.

``python -m bench --quick`` (≤ 3 minutes) or ``--full``; see ``bench/README.md``.
"""
