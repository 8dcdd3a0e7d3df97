"""The worker: what runs in a Celery worker process of an agentexec app, and nowhere else.

Celery loads it by name (the app's bootstep, `boot.AgentWorkerStep`, and the `threads` pool)
only in a worker, so a web app that enqueues never imports it.

- `process`: what the process owns (`AgentWorker`: the agents' `loop`, the heartbeat, the
  shutdown timer), made by `boot`;
- `signals`: Celery's signals turned into activity; `execution`: agent task bodies on the
  shared loop; `recording`: the end of a run, written before its result is stored;
- `delivery`, `heartbeat`, `reaper`, `shutdown`: at-least-once delivery, without leaving a run
  looking alive forever;
- `progress`: status reports in Flower; `threads`: the pool of `AGENTEXEC_POOL=threads`.
"""
