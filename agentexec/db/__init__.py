"""The activity tables in SQL: the models, their creation, the engine, and the projection.

This layer knows SQL and nothing of Celery or Redis; `agentexec.activity` is the public face
over it.
"""
