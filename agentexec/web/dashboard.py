"""The dashboard page: one static HTML file, with the run vocabulary filled in from
`agentexec.states` (the statuses, which of them end a run, and how each is shown), so the
page and the CLI show a status the same way."""

from __future__ import annotations

import functools
import json
from importlib import resources

from agentexec.states import STATUS_STYLES, TERMINAL, Status


@functools.cache
def page() -> str:
    """The dashboard's HTML."""
    html = resources.files("agentexec.web").joinpath("dashboard.html").read_text("utf-8")
    styles = "\n  ".join(
        f".{status.value} {{ background: {style.background}; color: {style.color}; }}"
        for status, style in STATUS_STYLES.items()
    )
    options = "".join(f"<option>{status.value}</option>" for status in Status)
    terminal = json.dumps(sorted(status.value for status in TERMINAL))
    return (
        html.replace("/*STATUS_STYLES*/", styles)
        .replace("<!--STATUS_OPTIONS-->", options)
        .replace("/*TERMINAL*/", terminal)
    )
