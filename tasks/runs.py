"""Run identifiers: sortable by time, readable, unique enough for concurrent runs."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime


def new_run_id(flow: str) -> str:
    return f"{flow}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
