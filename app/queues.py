"""The queue and task names: the contract between the receiver, which enqueues by name without importing
a task, and the Celery workers that register and route the tasks (`workers/celery_app.py`). Both import
them from here, downward, so nothing in `app/` needs `workers/`."""

EVENTS_QUEUE = "events"
TRAIN_QUEUE = "train"
EVENTS_TASK = "retrain.handle_event"
SESSION_TASK = "retrain.train_session"
SAMPLE_TASK = "retrain.sample_text"  # `/retrain sample`: needs torch and the store, so the train queue
SCHEDULED_SESSION_TASK = "retrain.scheduled_session"  # fired by a repository's cron entry (beat)
REDELIVER_TASK = "retrain.redeliver_failed"  # periodic: ask GitHub to redeliver failed webhook deliveries
RECOVER_ORPHANS_TASK = "retrain.recover_orphans"  # periodic: resend sessions whose whole worker vanished
