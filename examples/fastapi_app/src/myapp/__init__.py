"""The FastAPI integration guide's example project (docs: fastapi-integration-guide.md)."""
