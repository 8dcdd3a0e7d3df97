"""WorkerPool: binds the activity database, registers agent tasks and runs a worker."""

from __future__ import annotations

import inspect
import os
import typing
import warnings
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Literal

from celery import Celery
from pydantic import BaseModel
from sqlalchemy import Engine

from agentexec.config import get_settings
from agentexec.runtime import get_runtime
from agentexec.tasks import schedules
from agentexec.tasks.app import app as default_app
from agentexec.tasks.app import install
from agentexec.tasks.task import AgentFunction, AgentTask, get_agent_task


class WorkerPool:
    """The entry point of a project's agent tasks.

    Args:
        engine: the SQLAlchemy engine of the activity tables.
        database_url: used when no engine is given; `DATABASE_URL` when neither is.
        app: the Celery app to register tasks on; agentexec's own app by default, which is
            the one `celery -A agentexec worker` runs.
        num_workers: agent slots of a worker started by `run()`; `AGENTEXEC_NUM_WORKERS` by
            default.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        database_url: str | None = None,
        *,
        app: Celery | None = None,
        num_workers: int | None = None,
    ) -> None:
        if engine is not None or database_url is not None:
            get_runtime().bind(engine, database_url)
        self.app = install(app or default_app)
        self.num_workers = num_workers or get_settings().num_workers

    def add_schedule(
        self,
        task_name: str,
        every: str | timedelta | float,
        context: BaseModel | Mapping[str, Any] | None = None,
        *,
        repeat: int = -1,
        overlap: Literal["allow", "skip"] = "allow",
        name: str | None = None,
    ) -> None:
        """Start runs of the agent task `task_name` on a schedule, from `agentexec beat`.

        Args:
            task_name: a task registered with `@pool.task`.
            every: a cron expression ("*/5 * * * *", in `AGENTEXEC_TIMEZONE`), or an interval
                (a timedelta, or seconds).
            context: the context of every run (validated now).
            repeat: how many more times after the first; -1, forever.
            overlap: "skip" skips a firing while the previous run still goes.
            name: the schedule's name (`agentexec schedule list`); the task's by default.

        Raises:
            UnknownTaskError: no task has that name.
            InvalidRequestError: a bad expression, interval or policy.
            InvalidContextError: the context does not validate.
        """
        schedules.declare(self.app, get_agent_task(task_name), every, context,
                          repeat=repeat, overlap=overlap, name=name)  # fmt: skip

    def schedule(
        self,
        task_name: str,
        every: str | timedelta | float,
        *,
        context: BaseModel | Mapping[str, Any] | None = None,
        repeat: int = -1,
        overlap: Literal["allow", "skip"] = "allow",
        name: str | None = None,
        **options: Any,
    ) -> Callable[[AgentFunction], AgentTask]:
        """Register the decorated function as the agent task `task_name` (as `@pool.task`,
        with `options`) and schedule it (as `add_schedule`)."""

        def register(fn: AgentFunction) -> AgentTask:
            task = self.task(task_name, **options)(fn)
            self.add_schedule(task_name, every, context, repeat=repeat, overlap=overlap,
                              name=name)  # fmt: skip
            return task

        return register

    def task(self, name: str, **options: Any) -> Callable[[AgentFunction], AgentTask]:
        """Register `async def f(agent_id: UUID, context: Model)` as the agent task `name`.

        The context model comes from the annotation of the second parameter. Options are
        Celery task options, such as `max_retries` or `autoretry_for`.
        """

        def register(fn: AgentFunction) -> AgentTask:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"agent task {name!r} must be an async def function")
            attrs = {
                "name": name,
                "context_type": _context_type(name, fn),
                "agent_fn": staticmethod(fn),
                "__module__": fn.__module__,
                "__doc__": fn.__doc__,
                "__wrapped__": fn,
                **options,
            }
            task_cls = type(fn.__name__, (AgentTask,), attrs)
            registered = self.app.tasks.get(name)
            with warnings.catch_warnings():
                if isinstance(registered, AgentTask):
                    # `python -m pkg.worker` can import the module twice: once as __main__.
                    warnings.simplefilter("ignore")
                task: AgentTask = self.app.register_task(task_cls())
            return task

        return register

    def run(self, *argv: str) -> None:
        """Run a worker in this process on both queues until SIGTERM or SIGINT.

        Extra arguments go to `celery worker`, for example `pool.run("--loglevel=DEBUG")`.
        """
        settings = get_settings()
        self.app.worker_main(
            [
                "worker",
                f"--concurrency={self.num_workers}",
                f"--loglevel={settings.log_level}",
                f"--hostname=agentexec-{os.getpid()}@%h",
                *argv,
            ]
        )


def _context_type(name: str, fn: AgentFunction) -> type[BaseModel]:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 2:
        raise TypeError(f"agent task {name!r} must take (agent_id: UUID, context: Model)")
    hints = typing.get_type_hints(fn)
    annotation = hints.get(params[1].name)
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        raise TypeError(
            f"agent task {name!r}: annotate the context parameter with a pydantic model, "
            f"got {annotation!r}"
        )
    return annotation
