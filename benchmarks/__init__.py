"""Reproducible measurements of what the provider costs to run, each printing a table.

``make bench`` (``python -m benchmarks``) runs them all side by side with the generic
alternatives a user would otherwise reach for and writes ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations
