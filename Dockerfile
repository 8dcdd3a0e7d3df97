# The image compose.yaml builds: agentexec, the example app (examples/fastapi_app) and the
# PostgreSQL driver, installed from uv.lock, run as a non-root user. No secret is baked in:
# compose passes each service the variables it needs. tests/test_image.py runs this file's
# `uv sync` lines and COPY sources without Docker; tests/test_compose.py reads the rest.

# Build stage: uv resolves nothing, it installs uv.lock into /app/.venv.
FROM python:3.12-slim-trixie AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first (their layer is rebuilt only when the lock changes), then the project.
# Both syncs name the same extras, so the second one installs agentexec and removes nothing.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --extra postgres --extra example --extra otel --no-install-project
COPY agentexec ./agentexec
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --extra postgres --extra example --extra otel

# Runtime stage: the virtual environment and the example app's code, without uv or sources.
FROM python:3.12-slim-trixie
# A fixed uid/gid (USER names it by number, so a runtime can check it is not root); its
# home is all it may write.
RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONPATH=/app/examples/fastapi_app/src \
    PYTHONUNBUFFERED=1
# Owned by root and read-only to `app`: the processes cannot rewrite their own code.
COPY --from=build /app/.venv /app/.venv
COPY examples/fastapi_app/src /app/examples/fastapi_app/src
RUN python -m compileall -q /app/examples/fastapi_app/src
WORKDIR /app/examples/fastapi_app/src
USER 10001:10001
EXPOSE 8000 5555
# The API's probe (compose gives the worker and Flower their own): Redis and the database
# answer and the activity tables are up to date; exit code 1 otherwise.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["agentexec", "check", "-A", "myapp.worker", "--allow-no-workers"]
CMD ["uvicorn", "myapp.main:app", "--host", "0.0.0.0", "--port", "8000"]
