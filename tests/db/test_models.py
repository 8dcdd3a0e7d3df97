"""Table names follow AGENTEXEC_TABLE_PREFIX, foreign keys included."""

from __future__ import annotations

import os
import subprocess
import sys


def test_table_prefix_applies_to_tables_and_foreign_keys() -> None:
    code = (
        "import agentexec as ax\n"
        "t = ax.Base.metadata.tables\n"
        "print(sorted(t))\n"
        "print([fk.target_fullname for fk in t['myapp_activity_log'].foreign_keys])\n"
    )
    env = {**os.environ, "AGENTEXEC_TABLE_PREFIX": "myapp_"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "['myapp_activity', 'myapp_activity_approval', 'myapp_activity_child', "
        "'myapp_activity_log', 'myapp_activity_usage']",
        "['myapp_activity.agent_id']",
    ]


def test_default_table_names() -> None:
    import agentexec as ax

    assert {"agentexec_activity", "agentexec_activity_log"} <= set(ax.Base.metadata.tables)
