"""`plan` for `/retrain` comments: decisions from payloads alone."""

from app.features.retrain_command import Ignore, RejectCommand, StartTraining, plan
from tests.payloads import comment_event


def test_a_retrain_comment_starts_training_with_everything_the_worker_needs() -> None:
    decision = plan("issue_comment", comment_event("LGTM\n/retrain scheduled max_iters=5", sender="bob"))
    assert isinstance(decision, StartTraining)
    assert (decision.profile, decision.max_iters) == ("scheduled", 5)
    ctx = decision.context
    assert (ctx.repo, ctx.installation_id, ctx.issue_number, ctx.comment_id, ctx.sender) == (
        "octo/demo", 42, 7, 1001, "bob",
    )
    assert ctx.line == "/retrain scheduled max_iters=5"


def test_default_profile_is_ci() -> None:
    decision = plan("issue_comment", comment_event("/retrain"))
    assert isinstance(decision, StartTraining) and decision.profile == "ci"


def test_ignored() -> None:
    assert isinstance(plan("issue_comment", comment_event("/retrain", action="edited")), Ignore)
    assert isinstance(plan("issue_comment", comment_event("/retrain", action="deleted")), Ignore)
    assert isinstance(plan("issue_comment", comment_event("/retrain", sender_type="Bot")), Ignore)
    assert isinstance(plan("issue_comment", comment_event("nice work")), Ignore)
    assert isinstance(plan("issue_comment", comment_event("> /retrain")), Ignore)
    assert isinstance(plan("push", {}), Ignore)
    assert isinstance(plan("issue_comment", {"action": "created", "comment": {"body": "/retrain"}}), Ignore)


def test_malformed_command_is_answered() -> None:
    decision = plan("issue_comment", comment_event("/retrain ci bogus=1"))
    assert isinstance(decision, RejectCommand)
    assert "bogus=1" in decision.reason
