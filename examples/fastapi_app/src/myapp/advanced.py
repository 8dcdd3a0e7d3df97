# advanced.py
# The guide's Advanced Patterns on one router, mounted at /api/secure: authentication
# (HTTPBearer) on the endpoint that changes something, rate limiting with slowapi, and the
# custom exception classes, raised here and turned into responses by handlers in main.py.
from fastapi import APIRouter, Depends, Request
import agentexec as ax

from .exceptions import TaskNotFoundError, TaskTimeoutError
from .limits import RATE_LIMIT, limiter
from .security import verify_token
from .views import TaskRequest, TaskResponse
from .worker import ResearchContext, research_pipeline

router = APIRouter()


@router.post(
    "/tasks/research",
    response_model=TaskResponse,
    summary="Create Research Task",
    description="Queue a new company research task for AI agent processing.",
    responses={
        200: {"description": "Task queued successfully"},
        401: {"description": "Missing or invalid bearer token"},
        429: {"description": "Rate limit exceeded"},
    },
)
@limiter.limit(RATE_LIMIT)
async def create_research_task(
    request: Request,
    task: TaskRequest,
    token: str = Depends(verify_token),
):
    """
    Create a new research task for an AI agent.

    - **company**: Name of the company to research
    - **focus_areas**: Specific areas to focus on (optional)
    - **priority**: Task priority (low or high)
    """
    priority = ax.Priority.HIGH if task.priority == "high" else ax.Priority.LOW
    queued = await ax.enqueue(
        "research_company",
        ResearchContext(company=task.company, focus_areas=task.focus_areas),
        priority=priority,
    )
    return TaskResponse(
        agent_id=str(queued.agent_id),
        message=f"Research task queued for {task.company}",
    )


@router.get(
    "/tasks/{agent_id}/result",
    responses={404: {"description": "Task not found"}, 408: {"description": "Timed out"}},
)
async def get_task_result(agent_id: str, timeout: int = 30):
    """The result, with the guide's custom exceptions for an unknown id and a timeout."""
    try:
        result = await ax.get_result(agent_id, timeout=timeout)
    except TimeoutError:
        raise TaskTimeoutError(agent_id, timeout)
    except KeyError:
        raise TaskNotFoundError(agent_id)
    return {"agent_id": agent_id, "result": result}


@router.post(
    "/pipelines/research",
    response_model=TaskResponse,
    summary="Start the Research Pipeline",
    description="Plan five questions, research each one with its own agent, write a report.",
)
@limiter.limit(RATE_LIMIT)
async def start_research_pipeline(request: Request, task: TaskRequest):
    """The pipeline runs on the workers; its id gives its status, its steps and researchers
    (`GET /agentexec/agents/{id}`), and the report (`GET /api/secure/tasks/{id}/result`)."""
    priority = ax.Priority.HIGH if task.priority == "high" else ax.Priority.LOW
    run = await research_pipeline.enqueue(
        ResearchContext(company=task.company, focus_areas=task.focus_areas), priority=priority
    )
    return TaskResponse(
        agent_id=str(run.agent_id), message=f"Research pipeline started for {task.company}"
    )
