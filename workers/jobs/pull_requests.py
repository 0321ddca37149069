"""What the events task decides about a `/retrain` on a pull request, once GitHub said what the pull request
is: whether it may run (a fork's head needs an approval of that very commit), which queue it joins, and what
its session request says (workers/session/plan.py reads it)."""

from __future__ import annotations

from typing import Any

from app.features.decisions import Origin, StartTraining
from app.github.client import PullRequest
from workers.coordination.approvals import PullApprovals
from workers.session.run_names import run_lock_name


def pull_refusal(pull: PullRequest, origin: Origin, decision: StartTraining, approvals: PullApprovals | None
                 ) -> str | None:
    """Why a pull request's session may not start (None: it may). The sender's permission is checked
    already; a fork's head also needs an explicit approval of that very commit."""
    if pull.state != "open":
        return f"pull request #{pull.number} is {pull.state}; Retrain evaluates open pull requests"
    if not pull.from_fork(origin.repo):
        return None
    if approvals is None:
        return "pull requests from forks cannot be approved on this deployment"
    if decision.approve:
        if decision.approve_sha is not None and not pull.head_sha.startswith(decision.approve_sha):
            return (f"the approval names `{decision.approve_sha}`, but pull request #{pull.number}'s head is now "
                    f"`{pull.head_sha[:7]}`: nothing was approved; look at the new head and approve it by name")
        approvals.approve(origin.repo, pull.number, pull.head_sha, origin.sender or "")
        return None
    if approvals.approved_by(origin.repo, pull.number, pull.head_sha) is None:
        return (f"pull request #{pull.number} comes from a fork, and its head `{pull.head_sha[:7]}` is not approved: "
                f"someone with the configured permission approves it with `/retrain ok-to-test {pull.head_sha[:7]}` "
                "(each new push needs approving again)")
    return None


def queue_name(run: str, pull: PullRequest | None) -> str:
    return run_lock_name(run, None if pull is None else pull.number)


def pull_request_fields(pull: PullRequest) -> dict[str, Any]:
    """What the session request says of its pull request (see SessionRequest)."""
    return {"pull_number": pull.number, "pull_head_sha": pull.head_sha, "pull_head_ref": pull.head_ref}
