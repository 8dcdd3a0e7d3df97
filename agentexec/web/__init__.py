"""agentexec's web router for FastAPI apps: REST endpoints, live event streams, a dashboard.

Needs the `web` extra (`pip install "agentexec[web]"`). `import agentexec` does not import it.

```python
import agentexec.web

app.include_router(agentexec.web.create_router(auth=verify_token), prefix="/agentexec")
```
"""

from agentexec.web.models import (
    AgentDetail,
    AgentEvent,
    AgentLog,
    AgentPage,
    AgentResultBody,
    AgentSummary,
    Canceled,
    Enqueued,
    ErrorBody,
    RunEndedBody,
)
from agentexec.web.router import MAX_RESULT_TIMEOUT, create_router

#: `agentexec.web.router(...)`: the same as `create_router`.
router = create_router

__all__ = [
    "MAX_RESULT_TIMEOUT",
    "AgentDetail",
    "AgentEvent",
    "AgentLog",
    "AgentPage",
    "AgentResultBody",
    "AgentSummary",
    "Canceled",
    "Enqueued",
    "ErrorBody",
    "RunEndedBody",
    "create_router",
    "router",
]
