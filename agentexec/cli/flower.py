"""`agentexec flower`: Flower for agentexec's workers, with every page behind its auth."""

from __future__ import annotations

import os

import click

from agentexec.cli.common import app_option

#: Flower's own options that turn its authentication on.
_AUTH_OPTIONS = ("--basic-auth", "--basic_auth", "--auth")


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@app_option
@click.pass_context
def flower(ctx: click.Context, app_module: str | None) -> None:
    """Run Flower (`celery flower`, with any of its options), with authentication required.

    Flower's UI and REST API can revoke tasks and shut workers down, and its `/metrics`
    page is open even when basic auth is on. Here it refuses to start without auth
    (FLOWER_BASIC_AUTH=user:password, --basic-auth or Flower's OAuth --auth), and `/metrics`
    asks for the same credentials (give Prometheus a `basic_auth` in its scrape config).

    \b
    Examples:
      FLOWER_BASIC_AUTH=admin:long-password agentexec flower -A myapp.worker --port=5555
      agentexec flower --basic-auth=admin:long-password --address=127.0.0.1
    """
    args = list(ctx.args)
    has_auth = os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH")
    if not has_auth and not any(arg.startswith(_AUTH_OPTIONS) for arg in args):
        raise click.ClickException(
            "Flower can revoke tasks and stop workers: set FLOWER_BASIC_AUTH=user:password "
            "(or pass --basic-auth, or --auth with Flower's OAuth options)"
        )
    if os.environ.get("FLOWER_UNAUTHENTICATED_API", "").lower() in ("1", "true", "yes"):
        raise click.ClickException("unset FLOWER_UNAUTHENTICATED_API: it opens Flower's API")
    from celery.bin.celery import celery
    from flower.views import monitor
    from tornado import web

    monitor.Metrics.get = web.authenticated(monitor.Metrics.get)
    celery.main(["-A", app_module or "agentexec", "flower", *args], prog_name="agentexec flower")
