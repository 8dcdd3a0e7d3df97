"""The README's demo command works with no Redis reachable and no API key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_demo_runs_on_embedded_redis_and_scripted_model(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "DATABASE_URL")}
    env.update(REDIS_URL="redis://127.0.0.1:1/0", RESEARCH_SCRIPTED_LATENCY="0.2")
    out = subprocess.run(
        [sys.executable, "-m", "agentexec", "demo", "--agents", "3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "embedded redis-server" in out.stdout
    assert "scripted offline model" in out.stdout
    assert "3/3 agents finished" in out.stdout
    assert out.stdout.count("COMPLETE  100%  Task completed") == 3
