# views.py
from typing import Optional
from uuid import UUID
from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel
from sqlalchemy.orm import Session
import agentexec as ax

from .deps import get_db
from .worker import ResearchContext

router = APIRouter()

# Request/Response models
class TaskRequest(BaseModel):
    company: str
    focus_areas: list[str] = []
    priority: str = "low"

class TaskResponse(BaseModel):
    agent_id: str
    message: str

class StatusResponse(BaseModel):
    agent_id: str
    status: str
    progress: Optional[int]
    message: Optional[str]

# Endpoints
@router.post("/tasks/research", response_model=TaskResponse)
async def create_research_task(request: TaskRequest):
    """Queue a new research task."""
    priority = ax.Priority.HIGH if request.priority == "high" else ax.Priority.LOW

    task = await ax.enqueue(
        "research_company",
        ResearchContext(company=request.company, focus_areas=request.focus_areas),
        priority=priority
    )

    return TaskResponse(
        agent_id=str(task.agent_id),
        message=f"Research task queued for {request.company}"
    )

@router.get("/tasks/{agent_id}/status", response_model=StatusResponse)
async def get_task_status(agent_id: str, db: Session = Depends(get_db)):
    """Get the status of a task."""
    activity = ax.activity.detail(db, agent_id)

    if not activity:
        raise HTTPException(status_code=404, detail="Task not found")

    return StatusResponse(
        agent_id=str(activity.agent_id),
        status=activity.status.value,
        progress=activity.latest_completion_percentage,
        message=activity.logs[-1].message if activity.logs else None
    )

# views.py (continued)

class ActivityListResponse(BaseModel):
    items: list[dict]
    total: int
    page: int
    pages: int

class ActivityDetailResponse(BaseModel):
    agent_id: str
    task_type: str
    status: str
    progress: Optional[int]
    created_at: str
    updated_at: str
    logs: list[dict]

@router.get("/activities", response_model=ActivityListResponse)
async def list_activities(
    page: int = 1,
    page_size: int = 20,
    db: Session = Depends(get_db)
):
    """List all activities with pagination."""
    result = ax.activity.list(db, page=page, page_size=page_size)

    return ActivityListResponse(
        items=[{
            "agent_id": str(item.agent_id),
            "task_type": item.agent_type,
            "status": item.status.value,
            "progress": item.latest_completion_percentage,
            "message": item.latest_log,
            "updated_at": item.updated_at.isoformat()
        } for item in result.items],
        total=result.total,
        page=result.page,
        pages=result.pages
    )

@router.get("/activities/{agent_id}", response_model=ActivityDetailResponse)
async def get_activity_detail(agent_id: str, db: Session = Depends(get_db)):
    """Get detailed activity with full log history."""
    activity = ax.activity.detail(db, agent_id)

    if not activity:
        raise HTTPException(status_code=404, detail="Activity not found")

    return ActivityDetailResponse(
        agent_id=str(activity.agent_id),
        task_type=activity.agent_type,
        status=activity.status.value,
        progress=activity.latest_completion_percentage,
        created_at=activity.created_at.isoformat(),
        updated_at=activity.updated_at.isoformat(),
        logs=[{
            "message": log.message,
            "status": log.status.value,
            "progress": log.completion_percentage,
            "created_at": log.created_at.isoformat()
        } for log in activity.logs]
    )

# views.py (continued)

@router.get("/tasks/{agent_id}/result")
async def get_task_result(agent_id: str, timeout: int = 30):
    """
    Get the result of a completed task.
    Waits up to `timeout` seconds for the task to complete.
    """
    try:
        result = await ax.get_result(agent_id, timeout=timeout)
        return {"agent_id": agent_id, "result": result}
    except TimeoutError:
        raise HTTPException(
            status_code=408,
            detail=f"Task not completed within {timeout} seconds"
        )
    except KeyError:
        raise HTTPException(status_code=404, detail="Result not found")

from .db import engine  # (import the guide's snippet relies on)

# views.py
from fastapi import WebSocket, WebSocketDisconnect
import asyncio

@router.websocket("/ws/tasks/{agent_id}")
async def task_progress_websocket(websocket: WebSocket, agent_id: str):
    """WebSocket endpoint for real-time task progress."""
    await websocket.accept()

    try:
        while True:
            with Session(engine) as db:
                activity = ax.activity.detail(db, agent_id)

                if not activity:
                    await websocket.send_json({"error": "Task not found"})
                    break

                await websocket.send_json({
                    "status": activity.status.value,
                    "progress": activity.latest_completion_percentage,
                    "message": activity.logs[-1].message if activity.logs else None
                })

                if activity.status.value in ("COMPLETE", "ERROR", "CANCELED"):
                    break

            await asyncio.sleep(1)

    except WebSocketDisconnect:
        pass

from fastapi import BackgroundTasks

async def cleanup_old_activities():
    """Background task to clean up old activities."""
    with Session(engine) as db:
        # Delete activities older than 30 days
        from datetime import datetime, timedelta
        cutoff = datetime.utcnow() - timedelta(days=30)

        db.execute(
            "DELETE FROM agentexec_activity WHERE updated_at < :cutoff",
            {"cutoff": cutoff}
        )
        db.commit()

@router.post("/admin/cleanup")
async def trigger_cleanup(background_tasks: BackgroundTasks):
    """Trigger cleanup of old activities."""
    background_tasks.add_task(cleanup_old_activities)
    return {"message": "Cleanup scheduled"}
