"""The activity tables in SQL: the models, the engines, the projection of the event log into
them (`projection.apply`, run by the `Projector`), and their migrations.

This layer knows SQL and the event log it projects; nothing here knows Celery.
"""
