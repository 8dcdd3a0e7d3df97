# Pydantic models.
# The guide lists this module in its project structure but never fills it: it defines
# ResearchContext in worker.py, next to the task that uses it.
