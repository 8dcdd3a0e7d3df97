"""The dashboard in headless Chromium (Playwright): live progress bars, detail, cancel, and
approving a waiting run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from agentexec.testing.plugin import require_service
from tests.web.conftest import TOKEN, Served

#: The database plays no part here: SQLite alone keeps the suite short.
pytestmark = pytest.mark.usefixtures("sqlite_only")

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def page(served: Served) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if shutil.which(CHROMIUM) is None:
        require_service("Chromium", FileNotFoundError(CHROMIUM))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            response = page.goto(f"{served.url}/agents/dashboard")
            assert response is not None and response.status == 401  # no credentials yet
            page.wait_for_selector("#signin:not([hidden])")
            page.fill("#token", TOKEN)
            page.dispatch_event("#token", "change")
            page.wait_for_selector("#live.on")
            assert page.evaluate("sessionStorage.getItem('agentexec-token')") == TOKEN
            assert page.evaluate("localStorage.getItem('agentexec-token')") is None
            yield page
        finally:
            browser.close()


def _enqueue(page: Any, task: str, context: str) -> str:
    before = set(
        page.eval_on_selector_all("#agents tr", "rows => rows.map(r => r.dataset.agentId)")
    )
    page.fill("#task-name", task)
    page.fill("#context", context)
    page.click("#enqueue button[type=submit]")
    page.wait_for_function(
        "n => document.querySelectorAll('#agents tr').length > n", arg=len(before)
    )
    ids = page.eval_on_selector_all("#agents tr", "rows => rows.map(r => r.dataset.agentId)")
    [agent_id] = set(ids) - before
    return str(agent_id)


def test_progress_bars_move_and_a_run_is_canceled(
    page: Any, served: Served, sqlite_only: None
) -> None:
    served.worker()
    # Record every percentage the rows show, as the page renders them.
    page.evaluate(
        """() => {
        window.seen = {};
        new MutationObserver((changes) => {
          for (const change of changes) {
            const row = change.target;
            if (!row.dataset || !row.dataset.agentId || !row.dataset.percentage) continue;
            const list = (window.seen[row.dataset.agentId] ||= []);
            const pct = Number(row.dataset.percentage);
            if (list[list.length - 1] !== pct) list.push(pct);
          }
        }).observe(document.getElementById("agents"),
                   {subtree: true, attributes: true, attributeFilter: ["data-percentage"]});
      }"""
    )
    agent_id = _enqueue(page, "paced_agent", '{"seconds": 4, "reports": 4}')
    row = f'tr[data-agent-id="{agent_id}"]'
    page.wait_for_selector(f'{row}[data-status="COMPLETE"]')
    seen = page.evaluate(f"window.seen['{agent_id}']")
    assert seen[-1] == 100
    # Each report moved the bar, in order: 25, 50, 75, then 100 at the end.
    assert [p for p in seen if p in (25, 50, 75, 100)] == [25, 50, 75, 100], seen
    assert page.eval_on_selector(f"{row} progress", "p => p.value") == 100
    assert page.text_content(f"{row} .status") == "COMPLETE"
    assert page.text_content(f"{row} .task") == "paced_agent"

    # The detail: its log timeline and its result.
    page.click(row)
    page.wait_for_selector("#result:not([hidden])")
    assert '"reports": 4' in page.text_content("#result")
    logs = page.eval_on_selector_all("#log li", "items => items.map(i => i.textContent)")
    assert any("step 2" in text for text in logs) and "Task completed" in logs[-1]

    # A second, long run: cancel it from its detail while it runs.
    running = _enqueue(page, "paced_agent", '{"seconds": 60, "reports": 60}')
    running_row = f'tr[data-agent-id="{running}"]'
    page.wait_for_selector(f'{running_row}[data-status="RUNNING"]')
    page.click(running_row)
    page.wait_for_selector("#cancel:not([hidden])")
    page.click("#cancel")
    page.wait_for_selector(f'{running_row}[data-status="CANCELED"]')
    page.wait_for_function(
        "() => document.getElementById('detail-status').textContent === 'CANCELED'"
    )
    assert page.is_hidden("#cancel")

    # The status filter hides the other runs.
    page.select_option("#status-filter", "CANCELED")
    assert page.is_visible(running_row) and page.is_hidden(row)


def test_a_waiting_run_is_approved_from_the_dashboard(
    page: Any, served: Served, sqlite_only: None
) -> None:
    import userapp.durable_tasks  # noqa: F401  (registers the durable agents here too)

    from agentexec.testing.openai_server import ScriptedOpenAIServer
    from tests.apps import APP_DIR, APP_ENV
    from tests.durable_script import DurableScript

    with ScriptedOpenAIServer(DurableScript()) as server:
        env = {**APP_ENV, **server.env(), "OPENAI_AGENTS_DISABLE_TRACING": "1"}
        served.start_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        agent_id = _enqueue(page, "durable_agent", '{"mode": "approval"}')
        row = f'tr[data-agent-id="{agent_id}"]'
        page.wait_for_selector(f'{row}[data-status="WAITING"]')
        page.click(row)
        page.wait_for_selector("#approvals .approval button.approve")
        assert page.text_content("#approvals .approval strong") == "send_email"
        assert '"to": "boss@example.com"' in page.text_content("#approvals .approval pre")
        page.fill("#approvals .approval-message", "<b>go</b> ahead")
        # A stream event redraws the approvals between typing and clicking (it did in CI): the
        # note survives the redraw.
        page.evaluate(f"refreshApprovals({agent_id!r})")
        page.wait_for_function(
            "() => document.querySelector('#approvals .approval-message').value.includes('ahead')"
        )
        page.click("#approvals .approval button.approve")
        page.wait_for_selector(f'{row}[data-status="COMPLETE"]')
        page.wait_for_selector("#result:not([hidden])")
        assert "final: sent to boss@example.com" in page.text_content("#result")
        page.wait_for_selector("#approvals .verdict")
        page.wait_for_function(
            "() => document.getElementById('detail-usage').textContent.startsWith('2 model calls')"
        )
        # The note is shown as text: no element was made of it.
        assert page.text_content("#approvals .verdict") == "Approved: <b>go</b> ahead"
        assert page.query_selector("#approvals .verdict b") is None
    result = served.http.get(f"/agents/{agent_id}/result", params={"timeout": 30}).json()
    assert result["result"] == {"final": "final: sent to boss@example.com"}
    detail = served.http.get(f"/agents/{agent_id}").json()
    assert [a["approved"] for a in detail["approvals"]] == [True]
