"""The FastAPI integration guide's example project: its snippets, runnable."""
