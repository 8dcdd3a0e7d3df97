"""Settings: every knob agentexec reads from the environment, in one place.

`REDIS_URL` and `DATABASE_URL` keep the names the rest of the stack already uses; everything
else is prefixed `AGENTEXEC_`. Settings are read once, on first use, and nothing here opens a
connection.
"""

from __future__ import annotations

import re
import threading

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentexec.keys import Keys


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

    num_workers: int = Field(
        default=100,
        ge=1,
        validation_alias=AliasChoices("AGENTEXEC_NUM_WORKERS", "AGENTEXEC_MAX_IN_FLIGHT"),
    )
    """Agents in flight per worker process (`AGENTEXEC_MAX_IN_FLIGHT` is another name for
    it): the worker reserves no more messages than this. On the default `lanes` pool an agent
    in flight is a coroutine and a suspended greenlet, not a thread, so thousands fit in one
    process."""

    lanes: int = Field(default=16, ge=1)
    """Threads of the `lanes` pool. Agents' waits do not hold them; the synchronous work
    around each run (its Redis and SQL writes) does, so this bounds how much of it overlaps."""

    switch_interval: float = Field(default=0.0005, ge=0)
    """Seconds a worker thread holding the GIL keeps it while another waits
    (`sys.setswitchinterval`, set when the worker boots; 0 keeps Python's 5 ms). With
    thousands of agents in flight the shared loop always has work, and at Python's default the
    consumer and the lanes wait up to 5 ms for every handoff: 3,000 runs then took 46 s to
    start (65 a second) and the run took 20% longer."""

    timezone: str = "UTC"
    """The time zone cron schedules are read in (`pool.add_schedule`), an IANA name."""

    pool: str = "lanes"
    """Worker pool: `lanes` (an agent in flight is a greenlet on one of `AGENTEXEC_LANES`
    threads, one shared loop per process), `threads` (a thread per agent in flight), or any
    Celery pool name such as `prefork`. Celery's `-P prefork` flag cannot override a configured
    pool (it looks like the default), so choose prefork here."""

    queue_prefix: str = "agentexec"
    """Prefix of the HIGH and LOW queue names, so they never clash with a user's own queues."""

    table_prefix: str = "agentexec_"
    """Prefix of the activity tables (`agentexec_activity`, `agentexec_activity_log`): lower
    case letters, digits and underscores, so the names need no quoting in any database, and
    not empty, so its version table never is a project's own `alembic_version`."""

    synchronous_commit: bool = False
    """On PostgreSQL, wait for each activity write to be flushed to disk before going on.
    Off by default: a database server crash can then lose the last fraction of a second of
    activity rows (a lost QUEUED row is recreated when the run starts), and enqueue saves
    the WAL flush, about a millisecond."""

    result_expires: int = 86_400
    """Seconds a result stays in the Redis result backend."""

    visibility_timeout: int = Field(default=120, ge=1)
    """Seconds after which Redis gives a task whose worker stopped heartbeating to another
    worker. A live worker keeps extending the visibility of the messages it holds (every
    `heartbeat_interval`), so a run may last longer than this."""

    heartbeat_interval: float = Field(default=10.0, gt=0)
    """Seconds between a worker's heartbeats: it marks itself alive and extends the visibility
    of every message it holds. Keep it well below `visibility_timeout`."""

    max_deliveries: int = Field(default=3, ge=1)
    """Deliveries of one attempt of a run, after which it is not run again: a run whose worker
    died this many times (a poison agent) ends ERROR "worker lost N times"."""

    reaper_interval: float = Field(default=15.0, gt=0)
    """Seconds between sweeps of the reaper, which ends rows left QUEUED or RUNNING by a lost
    message or worker. Such a row ends within about three times this."""

    shutdown_timeout: float = Field(default=25.0, ge=0)
    """Seconds a worker lets in-flight agents finish after SIGTERM. Then it cancels the rest
    and requeues them at once, and exits within about 5 more seconds."""

    model_retries: int = Field(default=3, ge=0)
    """Retries of a run after a transient model error (rate limit, 5xx, timeout, connection
    error), with exponential backoff and jitter. `@pool.task(..., retries=N)` overrides it."""

    retry_backoff: float = Field(default=2.0, gt=0)
    """Seconds of the first retry's backoff; it doubles with each retry (full jitter)."""

    retry_backoff_max: float = Field(default=300.0, gt=0)
    """Upper bound of one retry's backoff, in seconds."""

    loop_block_warning: float = Field(default=1.0, ge=0)
    """Seconds the shared event loop may be blocked before a warning names the agent that
    blocked it, with its stack. 0 turns the watchdog off."""

    max_context_bytes: int = Field(default=1_048_576, ge=1_024)
    """Largest context accepted at enqueue, in bytes of JSON."""

    max_result_timeout: float = Field(default=3_600.0, gt=0)
    """Largest `timeout` that `get_result` accepts, in seconds."""

    max_page_size: int = Field(default=500, ge=1)
    """Largest `page_size` that `activity.list` accepts."""

    max_streams: int = Field(default=2_000, ge=1)
    """Event streams (SSE and WebSocket) one web process serves at once; beyond it the
    router answers 503 with `Retry-After`."""

    max_streams_per_owner: int = Field(default=100, ge=1)
    """Event streams one owner may hold open at once in one web process, when the router is
    scoped by owner (503 beyond it)."""

    max_message_bytes: int = Field(default=2_048, ge=64)
    """Longest status report message, in bytes of UTF-8: a longer one is cut, with a marker
    saying how much was left out. Control characters are removed from every message."""

    appender_buffer: int = Field(default=100_000, ge=1_000)
    """Events a process holds for the event log at most while Redis is slow or away. Beyond
    it, status reports are coalesced (each run's newest is kept, and the count dropped is
    logged) and lifecycle events wait for room: they are never dropped."""

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

    gc_freeze: bool = True
    """When a worker is ready, and when an app that mounts `agentexec.web` starts, move
    every object it has so far (mostly the imported modules) out of reach of Python's
    cyclic garbage collector (`gc.freeze()`). Each full collection then walks only the
    objects of live runs and streams, not the few hundred thousand of the imports: a
    thousand agents or streams in one process otherwise stall together for 100-300 ms."""

    gc_threshold: int = Field(default=50_000, ge=0)
    """Allocations the worker lets pass between young-generation garbage collections
    (`gc.set_threshold`, set when the worker boots; 0 keeps Python's 700). Thousands of agents
    in flight hold millions of live objects, and at Python's default the collector went over
    them again and again: 3,000 agents spent 33 of the worker's 139 CPU seconds in it, and 8 at
    50,000. The older generations keep Python's thresholds."""

    model_connections: int = Field(default=1000, ge=0)
    """Connections a worker's model client keeps open to the model API: the HTTP client the
    OpenAI Agents SDK shares between its default models, unless the app made one itself. The
    SDK's own opens up to 1,000 but keeps only 100 open, so past 100 calls at once nearly every
    model call opens a new connection; and its one pool walks all its calls and connections on
    each call. The worker's keeps them all, in pools of at most 100 that take calls in turn.
    0 leaves the SDK's client as it is."""

    model_connect_timeout: float = Field(default=20.0, gt=0)
    """Seconds that client allows a connection to open (the SDK's allows 5). Thousands of
    agents on one event loop can keep the loop from noticing a finished connect for longer
    than 5 s, and every such connect then failed and was retried, which slowed the loop more."""

    checkpoint_max_bytes: int = Field(default=8_388_608, ge=65_536)
    """Largest checkpoint of a run (its conversation so far, as JSON). A run whose checkpoint
    would be larger ends ERROR with `CheckpointTooLargeError`."""

    checkpoint_retention: int = Field(default=604_800, ge=60)
    """Seconds the checkpoint of a run that ended ERROR (or stopped at its turn limit) is
    kept, for `ax.resume`. A completed or canceled run's checkpoint is removed at once."""

    approval_timeout: float = Field(default=604_800.0, gt=0)
    """Seconds a run may wait for its approvals before it ends ERROR "approval expired".
    `@pool.task(..., approval_timeout=...)` overrides it."""

    owner_daily_tokens: int | None = Field(default=None, ge=1)
    """Tokens one owner's runs may use per day (UTC); an enqueue for an owner past it is
    refused with `BudgetExceededError` (429 in the router). Unset: no daily budget."""

    owner_daily_cost: float | None = Field(default=None, gt=0)
    """Like `owner_daily_tokens`, in the price table's currency (needs `AGENTEXEC_PRICES`)."""

    rate_limits: str | None = None
    """Requests and tokens per minute per model, shared by every worker (JSON; see
    `agentexec.tasks.ratelimits`): `{"gpt-4o": {"requests_per_minute": 500,
    "tokens_per_minute": 300000}, "*": {...}}`. A model call waits for its turn instead of
    getting a 429. Unset: no limit."""

    prices: str | None = None
    """The model price table, for the cost of runs: JSON, or the path of a JSON file (see
    `agentexec.pricing`). Unset: usage counts tokens only, and shows no cost."""

    projector_claim_idle: float = Field(default=30.0, gt=0)
    """Seconds an event may sit unacknowledged with a projector before another projector
    takes it over (its projector died). A live projector that waits for the database keeps
    its events."""

    @property
    def heartbeat_every(self) -> float:
        """Seconds between heartbeats: `heartbeat_interval`, and at most a third of
        `visibility_timeout`, so a live worker's messages are never redelivered."""
        return min(self.heartbeat_interval, self.visibility_timeout / 3)

    @property
    def keys(self) -> Keys:
        """The Redis keys of this queue prefix (queues, event log, bookkeeping)."""
        return Keys.of(self.queue_prefix)

    @property
    def high_queue(self) -> str:
        """Name of the HIGH priority queue."""
        return self.keys.high_queue

    @property
    def low_queue(self) -> str:
        """Name of the LOW priority queue."""
        return self.keys.low_queue

    @field_validator("table_prefix")
    @classmethod
    def _plain_table_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", value):
            raise ValueError(
                f"AGENTEXEC_TABLE_PREFIX must be lower case letters, digits and underscores, "
                f"starting with a letter or an underscore, such as 'myapp_' (got {value!r})"
            )
        return value


def redact(url: str) -> str:
    """`url` without its credentials, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if "@" in rest else url


class _ProcessSettings:
    """`get_settings()`: one `Settings` per process, read from the environment on first call.

    Not `functools.lru_cache`: threads that call it first at the same moment each build one,
    and all but one get an object the cache does not hold, so a change made to it (a test's
    monkeypatch, say) is lost for every later caller.
    """

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Settings:
        settings = self._settings
        if settings is None:
            with self._lock:
                if self._settings is None:
                    self._settings = Settings()
                settings = self._settings
        return settings

    def cache_clear(self) -> None:
        """Forget the settings: the next call reads the environment again."""
        with self._lock:
            self._settings = None


get_settings = _ProcessSettings()
