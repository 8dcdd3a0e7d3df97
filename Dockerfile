# The image compose.yaml builds: agentexec, its example app and the Postgres driver.
FROM python:3.12-slim
COPY --from=ghcr.io/astral-sh/uv:latest /uv /usr/local/bin/uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY agentexec ./agentexec
RUN uv sync --frozen --no-dev --no-editable --extra postgres --no-install-project \
    && uv pip install --python .venv/bin/python fastapi uvicorn websockets
COPY . .
RUN uv sync --frozen --no-dev --no-editable --extra postgres
ENV PATH="/app/.venv/bin:$PATH" PYTHONPATH=/app/examples/fastapi_app/src
