"""What sessions agree on through Redis: the lease per (repository, run), the follow-up queue, live
session records, the drain flag on shutdown and the orphan check.

It may import `app` (settings, errors), redis, Celery's signals and its own modules; never `workers.session`,
`workers.jobs` or torch, so the events worker and beat can use it without loading the training stack.
"""
