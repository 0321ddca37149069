"""Retrain's web face and everything both of its sides share, in rooms that import downward:

- `cli.py`, `register.py`: the operator's entry points (`retrain ...`); only the CLI may import `workers/`;
- `web/`: the webhook receiver and `/metrics`;
- `writing/`: every text Retrain writes for people (replies, check runs, the reference);
- `features/`: the pure planners, one per event, and the slash-command grammar;
- `github/`: the GitHub client, App auth and tokens, retries, releases;
- `config/`: process settings, the repository config, the operator's limits, globs;
- `queues.py`, `errors.py`, `log_setup.py`, `telemetry.py`: names and plumbing every room uses.

The rules are contracts in pyproject.toml (`[tool.importlinter]`), checked by the tests.
"""
