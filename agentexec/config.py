"""Settings: every knob agentexec reads from the environment, in one place.

`REDIS_URL` and `DATABASE_URL` keep the names the rest of the stack already uses; everything
else is prefixed `AGENTEXEC_`. Settings are read once, on first use, and nothing here opens a
connection.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """agentexec's configuration, read from the environment (and a `.env` file, if present)."""

    model_config = SettingsConfigDict(env_prefix="AGENTEXEC_", env_file=".env", extra="ignore")

    redis_url: str = Field(
        default="redis://localhost:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "AGENTEXEC_REDIS_URL"),
    )
    """Broker and result backend."""

    database_url: str = Field(
        default="sqlite:///agents.db",
        validation_alias=AliasChoices("DATABASE_URL", "AGENTEXEC_DATABASE_URL"),
    )
    """Activity store, used when no `WorkerPool(engine=...)` binds one."""

    num_workers: int = Field(default=100, ge=1)
    """Concurrent agent slots per worker process. A slot is a parked thread, not a process."""

    pool: str = "threads"
    """Worker pool: `threads` (agentexec's thread pool, one shared loop per process) or any
    Celery pool name such as `prefork`. Celery's `-P prefork` flag cannot override a configured
    pool (it looks like the default), so choose prefork here."""

    queue_prefix: str = "agentexec"
    """Prefix of the HIGH and LOW queue names, so they never clash with a user's own queues."""

    table_prefix: str = "agentexec_"
    """Prefix of the activity tables (`agentexec_activity`, `agentexec_activity_log`)."""

    synchronous_commit: bool = False
    """On PostgreSQL, wait for each activity write to be flushed to disk before going on.
    Off by default: a database server crash can then lose the last fraction of a second of
    activity rows (a lost QUEUED row is recreated when the run starts), and enqueue saves
    the WAL flush, about a millisecond."""

    result_expires: int = 86_400
    """Seconds a result stays in the Redis result backend."""

    visibility_timeout: int = 3_600
    """Seconds before Redis redelivers an unacknowledged task. Keep it above the longest run."""

    restore_interval: int = Field(default=10, ge=1)
    """Seconds between a worker's sweeps for tasks whose worker died (older than the
    visibility timeout); those go back on their queue and run again."""

    task_events: bool = True
    """Send task events, so Flower shows workers, queued and running tasks."""

    sql_string_compat: bool = True
    """Let `Session.execute` take a plain SQL string, as the integration guide's cleanup does."""

    log_level: str = "INFO"
    """Log level of workers started by `pool.run()` or the `agentexec` CLI."""

    create_tables: bool = True
    """Create missing activity tables on first use, in producers and workers. Turn it off
    when you migrate the schema yourself (Alembic)."""

    events_maxlen: int = Field(default=1_000_000, ge=1_000)
    """The event log keeps at most about this many events (older ones are trimmed, but never
    one the SQL projection has not applied yet)."""

    events_retention: int = Field(default=86_400, ge=60)
    """Seconds an event stays in the log, within `events_maxlen` (never trimmed before the
    SQL projection has applied it)."""

    projector: bool = True
    """Run the SQL projector in every worker process. Turn it off when you run
    `agentexec project` on its own."""

    projector_claim_idle: float = Field(default=30.0, gt=0)
    """Seconds an event may sit unacknowledged with a projector before another projector
    takes it over (its projector died). A live projector that waits for the database keeps
    its events."""

    @property
    def high_queue(self) -> str:
        """Name of the HIGH priority queue."""
        return f"{self.queue_prefix}.high"

    @property
    def low_queue(self) -> str:
        """Name of the LOW priority queue."""
        return f"{self.queue_prefix}.low"


def redact(url: str) -> str:
    """`url` without its credentials, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if "@" in rest else url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first call."""
    return Settings()
