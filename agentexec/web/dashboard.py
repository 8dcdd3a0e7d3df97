"""The dashboard page: one static HTML file with its run vocabulary filled in, served with a
Content-Security-Policy that lets it do nothing but talk to its own router.

The statuses, which of them end a run, and how each is shown come from `agentexec.states`,
so the page and the CLI show a status the same way. Its one inline script and one inline
style are allowed by their hashes; nothing else may run, load or frame it.

The page holds no data: everything it shows comes from the router's guarded endpoints, with
the token the user types (kept in `sessionStorage`, sent as `Authorization: Bearer`). So an
unauthenticated request for it gets the same page with status 401 (`DashboardRoute`), where
it asks for the token.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Callable, Coroutine
from importlib import resources
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.responses import HTMLResponse

from agentexec.states import STATUS_STYLES, TERMINAL, Status
from agentexec.web.guard import GuardedRoute


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


@functools.cache
def headers() -> dict[str, str]:
    """The page's security headers: its CSP allows its own inline script and style (by
    hash) and requests to its own origin, and forbids framing it."""
    html = page()
    scripts = [_hash(s) for s in re.findall(r"<script>(.*?)</script>", html, re.S)]
    styles = [_hash(s) for s in re.findall(r"<style>(.*?)</style>", html, re.S)]
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(scripts),
            "style-src " + " ".join(styles),
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def dashboard_response(status: int) -> HTMLResponse:
    """The page, with its security headers."""
    return HTMLResponse(page(), status_code=status, headers=headers())


class DashboardRoute(GuardedRoute):
    """The dashboard's route: when the auth refuses (401, 403), the answer is the page itself
    with that status, which asks for a token; it holds no data."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_or_login(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                if exc.status_code not in (401, 403):
                    raise
                response = dashboard_response(exc.status_code)
                response.headers.update(exc.headers or {})
                return response

        return page_or_login
