#!/usr/bin/env bash
# Idempotently create the upstream-agentexec benchmark venv (Python 3.12) and
# install agentexec==0.3.0 from PyPI. Prints the venv path on the last line.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${UPSTREAM_VENV:-$(cd "$HERE/.." && pwd)/.venv-upstream}"
AGENTEXEC_VERSION="${UPSTREAM_AGENTEXEC_VERSION:-0.3.0}"
# agentexec 0.3.0 only requires openai-agents>=0.1.0; pin what we benchmarked with
# so numbers stay comparable (0.24.0 ships agents.testing.ScriptedModel).
OPENAI_AGENTS_VERSION="${UPSTREAM_OPENAI_AGENTS_VERSION:-0.24.0}"

find_py312() {
    local cand
    for cand in "$HOME/.pyenv/versions/3.12.1/bin/python" \
                "$(uv python find 3.12 2>/dev/null || true)" \
                "$(ls -d "$HOME"/.pyenv/versions/3.12.*/bin/python 2>/dev/null | sort -V | tail -n1 || true)" \
                "$(command -v python3.12 2>/dev/null || true)"; do
        if [ -n "$cand" ] && [ -x "$cand" ] && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            echo "$cand"; return 0
        fi
    done
    return 1
}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    PY="$(find_py312)" || { echo "setup.sh: no Python 3.12 interpreter found" >&2; exit 1; }
    rm -rf "$VENV"
    uv venv --quiet --python "$PY" "$VENV" >&2
fi

if ! "$VENV/bin/python" - "$AGENTEXEC_VERSION" "$OPENAI_AGENTS_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
assert version("agentexec") == sys.argv[1]
assert version("openai-agents") == sys.argv[2]
import aiosqlite, psycopg  # noqa: F401,E401
PY
then
    uv pip install --quiet --python "$VENV/bin/python" \
        "agentexec==$AGENTEXEC_VERSION" "openai-agents==$OPENAI_AGENTS_VERSION" \
        "psycopg[binary]>=3.1" "aiosqlite>=0.20" >&2
fi

echo "$VENV"
