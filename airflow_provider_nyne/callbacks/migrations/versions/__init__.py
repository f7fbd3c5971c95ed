"""One module per revision of the Nyne callback table, oldest first."""

from __future__ import annotations
