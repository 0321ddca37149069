"""The name a run's sessions queue and lease under. Pure and torch-free, for the events task (which queue a
pull request's session joins) and the session's plan (which lease it takes) alike."""


def run_lock_name(run: str, pull_number: int | None) -> str:
    """The run's queue and lease: a pull request's sessions have their own. They never commit to the base
    branch, so they need not wait for its sessions (nor hold them up)."""
    return run if pull_number is None else f"{run}:pull-{pull_number}"
