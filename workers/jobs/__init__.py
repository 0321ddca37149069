"""The Celery jobs' bodies: handling an event, keeping schedules, asking GitHub to redeliver, reporting a
session on GitHub, and the train job that runs one session under its lease.

`workers/tasks.py` registers these as tasks; they carry decisions out. They may import `app` (the queue
and task names in `app.queues`), `workers.celery_app`, `workers.session`, `workers.coordination` and `workers.trainer`;
nothing below them imports a job.
"""
