"""The Celery side, shared by the processes that publish and the workers that run.

`app` is the Celery app and its `config`; `task` the agent task class; `queued` the one path
from a publish to the QUEUED record; `transport` kombu's Redis transport that publishes a
message and its QUEUED event together; `queues` the HIGH and LOW queues; `backend` the result
backend and `results` the reading of results (`ax.get_result`) through one `listener` per
loop; `revoked` the revoked runs, kept for workers that start later; `worker_pool` the
`WorkerPool` a project declares its tasks with.
"""
