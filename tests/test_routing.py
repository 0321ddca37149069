"""Tasks land on the queue their workers consume, checked in a real Redis broker."""

from __future__ import annotations

import redis

from app.config.settings import Settings
from app.queues import EVENTS_QUEUE, EVENTS_TASK, SESSION_TASK, TRAIN_QUEUE
from workers.celery_app import create_celery


def test_each_task_is_delivered_to_its_own_queue(redis_url: str, clean_redis: redis.Redis) -> None:
    app = create_celery(Settings(redis_url=redis_url, _env_file=None))
    app.send_task(SESSION_TASK, kwargs={"context": {}, "request": {}})
    app.send_task(SESSION_TASK, kwargs={"context": {}, "request": {}}, queue=TRAIN_QUEUE)
    app.send_task(EVENTS_TASK, args=("ping", "d", {}))
    app.send_task(EVENTS_TASK, args=("ping", "d", {}), queue=EVENTS_QUEUE)
    assert clean_redis.llen(TRAIN_QUEUE) == 2
    assert clean_redis.llen(EVENTS_QUEUE) == 2


def test_a_session_message_carries_its_profiles_hard_time_limit(redis_url: str, clean_redis: redis.Redis,
                                                                monkeypatch) -> None:
    """The soft limit is the session's own deadline; Celery's hard limit adds the grace, capped by
    RETRAIN_MAX_SESSION_S, and the broker's visibility timeout outlasts the longest session."""
    import base64
    import json

    from workers import tasks

    monkeypatch.setenv("RETRAIN_REDIS_URL", redis_url)
    monkeypatch.setenv("RETRAIN_MAX_SESSION_S", "7200")
    monkeypatch.setenv("RETRAIN_HARD_LIMIT_GRACE_S", "300")
    monkeypatch.setattr(tasks, "celery_app", create_celery(Settings(_env_file=None)))
    message = {"origin": {"repo": "octo/demo"}, "run": "nanecho-cached-ci",
               "request": {"session_id": "s1", "profile": "ci", "trigger": "schedule", "sender": None,
                           "max_iters": None}}
    tasks.enqueue_session({**message, "time_limit_s": 3600})
    tasks.enqueue_session({**message, "time_limit_s": 36000})  # more than the operator allows
    sent = [json.loads(raw) for raw in reversed(clean_redis.lrange(TRAIN_QUEUE, 0, -1))]
    assert [m["headers"]["timelimit"] for m in sent] == [[3900.0, None], [7500.0, None]]
    kwargs = [json.loads(base64.b64decode(m["body"]))[1] for m in sent]
    # the soft limit goes along as what the session asks of its installation's daily budget, capped too
    assert [k["time_limit_s"] for k in kwargs] == [3600, 7200] and kwargs[0]["run"] == "nanecho-cached-ci"
    assert create_celery(Settings(_env_file=None)).conf.broker_transport_options["visibility_timeout"] > 7500


def test_a_sample_goes_to_the_train_queue_with_its_time_limit(redis_url: str, clean_redis: redis.Redis,
                                                             monkeypatch) -> None:
    """`/retrain sample` runs a model: on a train worker (the events worker has no torch), bounded in time."""
    import base64
    import json

    from workers import tasks

    monkeypatch.setenv("RETRAIN_REDIS_URL", redis_url)
    monkeypatch.setenv("RETRAIN_SAMPLE_TIME_LIMIT_S", "120")
    monkeypatch.setattr(tasks, "celery_app", create_celery(Settings(_env_file=None)))
    tasks.enqueue_sample({"origin": {"repo": "octo/demo"}, "profile": "ci", "prompt": "hi"})
    [raw] = clean_redis.lrange(TRAIN_QUEUE, 0, -1)
    sent = json.loads(raw)
    assert sent["headers"]["task"] == "retrain.sample_text" and sent["headers"]["timelimit"] == [150, 120]
    assert json.loads(base64.b64decode(sent["body"]))[1] == {"origin": {"repo": "octo/demo"}, "profile": "ci",
                                                              "prompt": "hi"}
    assert clean_redis.llen(EVENTS_QUEUE) == 0


def test_the_worker_parent_never_initialises_cuda() -> None:
    """A CUDA context does not survive fork: importing the tasks (what the prefork parent does) must not
    touch CUDA. Checked in a fresh interpreter where any CUDA initialisation raises."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "def boom(*a, **k): raise SystemExit('CUDA touched in the worker parent')\n"
        "torch.cuda._lazy_init = boom; torch.cuda.init = boom; torch.cuda.is_available = boom\n"
        "torch.cuda.device_count = boom\n"
        "import workers.tasks\n"
        "from types import SimpleNamespace as NS\n"
        "from workers.celery_app import celery_app\n"
        "celery_app.loader.import_default_modules()\n"
        "workers.tasks.preload_training(NS(app=NS(amqp=NS(queues=NS(consume_from={'train': 1})))))\n"
        "import workers.trainer.train, workers.session.session\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_beat_looks_for_orphaned_sessions_on_the_events_queue() -> None:
    from app.queues import RECOVER_ORPHANS_TASK

    app = create_celery(Settings(_env_file=None, orphan_check_s=45))
    [entry] = [e for e in app.conf.beat_schedule.values() if e["task"] == RECOVER_ORPHANS_TASK]
    assert entry["schedule"].total_seconds() == 45 and entry["options"]["queue"] == EVENTS_QUEUE


def test_only_a_train_worker_loads_torch(redis_url: str) -> None:
    """The events worker and beat never need the training stack; the train worker loads it once, in its parent,
    before forking its pool (checked in fresh interpreters)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import workers.tasks\n"
        "from types import SimpleNamespace as NS\n"
        "print('import:', 'torch' in sys.modules)\n"
        "worker = NS(app=NS(amqp=NS(queues=NS(consume_from={QUEUES}))))\n"
        "workers.tasks.preload_training(worker)\n"
        "print('after init:', 'torch' in sys.modules)\n"
    )
    env = {"RETRAIN_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    for queues, loaded in (({"events": 1}, False), ({"train": 1}, True)):
        done = subprocess.run([sys.executable, "-c", code.replace("{QUEUES}", repr(queues))], capture_output=True,
                              text=True, timeout=120, env=env)
        assert done.stdout.split() == ["import:", "False", "after", "init:", str(loaded)], done.stderr
