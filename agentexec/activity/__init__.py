"""Activity: what every agent run is doing, recorded in SQL for the web app to read."""

from agentexec.activity.models import Activity, ActivityLog, Base, Status
from agentexec.activity.queries import cancel_pending, count_active, detail, list
from agentexec.activity.reports import update
from agentexec.activity.schemas import (
    ActivityDetail,
    ActivityListItem,
    ActivityLogView,
    ActivityPage,
)
from agentexec.activity.signals import status_reported

__all__ = [
    "Activity",
    "ActivityDetail",
    "ActivityListItem",
    "ActivityLog",
    "ActivityLogView",
    "ActivityPage",
    "Base",
    "Status",
    "cancel_pending",
    "count_active",
    "detail",
    "list",
    "status_reported",
    "update",
]
