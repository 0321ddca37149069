"""The session pipeline through the real GitHub client against the emulator: the cases a worker meets
beyond the happy path (a branch that moves, a corrupt checkpoint, changed data, a bad config)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path

import pytest
from gidgethub import BadRequest

from app.config.settings import Settings
from app.errors import ConfigError, SessionError
from app.github.client import installation_client
from tests.conftest import INSTALLATION_ID, REPO
from workers.session.repos import GitHubRepository
from workers.session.session import SessionRequest, SessionResult, run_session
from workers.session.store import CheckpointStore

RUN_DIR = ".training-progress/nanecho-cached-ci"


def session(
    settings: Settings, *, max_iters: int = 8, profile: str = "ci", fresh: bool = False, on_progress=None
) -> SessionResult:
    async def go() -> SessionResult:
        async with installation_client(settings, INSTALLATION_ID) as gh:
            request = SessionRequest(session_id=uuid.uuid4().hex, profile=profile, max_iters=max_iters, fresh=fresh)
            return await run_session(
                GitHubRepository(gh, REPO), CheckpointStore(settings.store_url), request,
                store_prefix=REPO, on_progress=on_progress,
            )

    return asyncio.run(go())


def registry_at(emu, oid: str) -> dict:
    return json.loads(emu.read_file(REPO, f"{RUN_DIR}/cache/metadata.json", ref=oid))


def test_a_branch_that_moves_during_training_keeps_both_commits(github, settings) -> None:
    emu, _ = github
    moved: list[str] = []

    def someone_pushes(_progress) -> None:
        if not moved:
            moved.append(emu.commit_files(REPO, {"docs/unrelated.txt": b"hello"}, message="a person's commit"))

    result = session(settings, on_progress=someone_pushes)
    log = emu.git_log(REPO)
    assert [c["oid"] for c in log[:2]] == [result.commit_oid, moved[0]]
    assert log[0]["parents"] == [moved[0]]
    assert emu.read_file(REPO, "docs/unrelated.txt") == b"hello"
    assert result.checkpoint_id in registry_at(emu, result.commit_oid)
    stale = [c for c in emu.calls if c.graphql_operation and "createCommitOnBranch" in c.graphql_operation]
    assert len(stale) == 2  # one refused as stale, one on top of the new head


def stored_file(settings: Settings, result: SessionResult) -> Path:
    return Path(settings.store_url.removeprefix("file://")) / str(result.facts.storage.key)


def test_a_corrupt_checkpoint_is_skipped_with_a_reason(github, settings) -> None:
    emu, _ = github
    first = session(settings)
    stored = stored_file(settings, first)
    stored.write_bytes(b"\0" * stored.stat().st_size)
    second = session(settings)
    assert second.facts.parent_checkpoint is None
    assert any("corrupt" in note and first.checkpoint_id in note for note in second.facts.notes)
    assert set(registry_at(emu, second.commit_oid)) == {first.checkpoint_id, second.checkpoint_id}


@pytest.mark.parametrize(("damage", "reason"), [("corrupt", "is corrupt: sha256"), ("missing", "could not be read")])
def test_a_damaged_best_checkpoint_falls_back_to_the_next_best(github, settings, damage: str, reason: str) -> None:
    first = session(settings)
    second = session(settings)  # resumes first, so it is better (lower val loss)
    assert second.facts.parent_checkpoint == first.checkpoint_id
    assert second.facts.val_loss_after < first.facts.val_loss_after
    best = stored_file(settings, second)
    if damage == "corrupt":
        best.write_bytes(best.read_bytes()[:-1] + b"!")
    else:
        best.unlink()
    third = session(settings)
    assert third.facts.parent_checkpoint == first.checkpoint_id
    assert any(second.checkpoint_id in note and reason in note for note in third.facts.notes)


METADATA = f"{RUN_DIR}/cache/metadata.json"
ADDED = b"# Harbour lights\n\n" + b"The lighthouse keeper counts the harbour bells before dawn. " * 30 + b"\n"


def edit_config(emu, old: bytes, new: bytes) -> None:
    config = emu.read_file(REPO, ".github/retrain.yml")
    assert old in config
    emu.commit_files(REPO, {".github/retrain.yml": config.replace(old, new)})


def test_edited_and_added_text_continues_the_previous_session(github, settings) -> None:
    emu, _ = github
    first = session(settings, max_iters=40)
    garden = emu.read_file(REPO, "notes/garden.md")
    emu.commit_files(REPO, {
        "notes/garden.md": garden.replace(b"the", b"a", 3) + b"\nA paragraph added later, about the garden gate.\n",
        "notes/harbour-lights.md": ADDED,
    })
    second = session(settings, max_iters=8)
    assert second.facts.parent_checkpoint == first.checkpoint_id
    assert second.facts.start_iteration > 0
    assert any("training data (its text or its split) changed since" in note for note in second.facts.notes)
    assert second.facts.fingerprint.data_sha256 != first.facts.fingerprint.data_sha256
    fresh = session(settings, max_iters=8, fresh=True)  # the same edited text, from a new model
    # It starts near where the first ended, far from a fresh model.
    gap_to_first = abs(second.facts.val_loss_before - first.facts.val_loss_after)
    assert gap_to_first < 0.25 * (fresh.facts.val_loss_before - first.facts.val_loss_after), (
        first.facts.val_loss_after, second.facts.val_loss_before, fresh.facts.val_loss_before)


def test_two_sessions_from_one_parent_explore_different_trajectories(github, settings) -> None:
    emu, _ = github
    first = session(settings, max_iters=10)
    registry_after_first = emu.read_file(REPO, METADATA)
    second = session(settings, max_iters=10)
    emu.commit_files(REPO, {METADATA: registry_after_first})  # someone reverts the second session's progress
    third = session(settings, max_iters=10)
    assert second.facts.parent_checkpoint == third.facts.parent_checkpoint == first.checkpoint_id
    assert second.facts.val_loss_before == third.facts.val_loss_before  # the same starting weights
    assert second.facts.loss_curve != third.facts.loss_curve  # but not the same batches
    assert second.facts.val_loss_after != third.facts.val_loss_after


def test_a_changed_validation_set_measures_the_candidates_again_before_choosing(github, settings) -> None:
    emu, _ = github
    first = session(settings, max_iters=20)
    second = session(settings, max_iters=6)
    edit_config(emu, b"val_fraction: 0.15", b"val_fraction: 0.2")  # another validation set
    third = session(settings, max_iters=6)
    measured = third.facts.evaluations
    assert set(measured) == {first.checkpoint_id, second.checkpoint_id}
    assert third.facts.parent_checkpoint == min(measured, key=measured.get)
    assert any("validation set changed" in note for note in third.facts.notes)
    today = third.facts.fingerprint.val_sha256
    assert today not in (first.facts.fingerprint.val_sha256, second.facts.fingerprint.val_sha256)
    registry = registry_at(emu, third.commit_oid)
    for cid, loss in measured.items():
        assert registry[cid]["evaluation"] == {"val_sha256": today, "val_loss": loss}
    summary = json.loads(emu.read_file(REPO, f"{RUN_DIR}/training_summary.json", ref=third.commit_oid))
    assert set(summary["session"]["reevaluated"]["checkpoints"]) == set(measured)
    # Once measured on today's set, nothing is measured twice.
    assert session(settings, max_iters=4).facts.evaluations == {}


def test_only_a_new_model_shape_starts_a_new_lineage(github, settings) -> None:
    emu, _ = github
    first = session(settings, max_iters=6)
    config = emu.read_file(REPO, ".github/retrain.yml").replace(b"learning_rate: 0.003",
                                                                b"learning_rate: 0.002, dropout: 0.1")
    emu.commit_files(REPO, {".github/retrain.yml": config + b"on_incompatible: stop\n",
                            "notes/harbour-lights.md": ADDED})
    # other optimiser settings, dropout and text: the same lineage, so `stop` does not stop it
    second = session(settings, max_iters=6)
    assert second.facts.parent_checkpoint == first.checkpoint_id


def test_an_invalid_config_names_the_field_and_commits_nothing(github, settings) -> None:
    emu, _ = github
    head = emu.commit_files(REPO, {".github/retrain.yml": b"profiles: {ci: {n_layer: -1}}\n"})
    with pytest.raises(ConfigError, match=r"profiles\.ci\.n_layer"):
        session(settings)
    assert emu.head(REPO) == head


def test_an_unknown_profile_lists_the_valid_ones_and_commits_nothing(github, settings) -> None:
    emu, _ = github
    head = emu.head(REPO)
    with pytest.raises(SessionError, match="unknown profile `huge`; this repository has: ci, scheduled, full"):
        session(settings, profile="huge")
    assert emu.head(REPO) == head


def test_a_fresh_start_keeps_every_earlier_checkpoint(github, settings) -> None:
    emu, _ = github
    first = session(settings)
    second = session(settings, fresh=True)
    assert second.facts.parent_checkpoint is None and second.facts.start_iteration == 0
    assert set(registry_at(emu, second.commit_oid)) == {first.checkpoint_id, second.checkpoint_id}
    assert stored_file(settings, first).is_file()
    assert any("fresh start requested" in note for note in second.facts.notes)


def test_retention_drops_the_worst_from_registry_and_store(github, settings) -> None:
    emu, _ = github
    config = emu.read_file(REPO, ".github/retrain.yml") + b"retention: {max_checkpoints: 2}\n"
    emu.commit_files(REPO, {".github/retrain.yml": config})
    results = [session(settings, max_iters=6) for _ in range(3)]
    # Each session resumes the last, so the first is the worst by val loss and is the one dropped.
    losses = [r.facts.val_loss_after for r in results]
    assert losses == sorted(losses, reverse=True)
    assert set(registry_at(emu, results[-1].commit_oid)) == {results[1].checkpoint_id, results[2].checkpoint_id}
    assert not stored_file(settings, results[0]).exists()
    assert all(stored_file(settings, r).is_file() for r in results[1:])


def test_incompatible_checkpoints_can_be_made_to_stop_the_session(github, settings) -> None:
    emu, _ = github
    session(settings)
    config = emu.read_file(REPO, ".github/retrain.yml") + b"on_incompatible: stop\n"
    emu.commit_files(REPO, {".github/retrain.yml": config.replace(b"n_embd: 64", b"n_embd: 32")})
    head = emu.head(REPO)
    with pytest.raises(SessionError, match="another model shape or tokenizer"):
        session(settings)
    assert emu.head(REPO) == head
    assert session(settings, fresh=True).facts.parent_checkpoint is None


def test_a_session_whose_commit_failed_is_committed_by_the_next(github, settings, tmp_path: Path) -> None:
    emu, _ = github
    head = emu.head(REPO)
    injected: list[bool] = []

    def github_refuses_commits(_progress) -> None:
        if not injected:  # after the session has read everything, before it commits
            injected.append(True)
            emu.inject_fault("POST", r"/graphql", 200, body={"errors": [{"type": "FORBIDDEN", "message": "no"}]})
            emu.inject_fault("PATCH", r"/repos/octo/demo/git/refs/heads/main", 403,
                             body={"message": "Resource not accessible by integration"})

    with pytest.raises(BadRequest):
        session(settings, on_progress=github_refuses_commits)
    assert emu.head(REPO) == head
    [record] = list((tmp_path / "store").rglob("*.entry.json"))
    lost_id = record.name.removesuffix(".entry.json")

    second = session(settings)
    assert f"recovered {lost_id}, trained by a session whose commit did not land" in second.facts.notes
    assert second.facts.parent_checkpoint == lost_id  # the recovered checkpoint was the best there was
    assert set(registry_at(emu, second.commit_oid)) == {lost_id, second.checkpoint_id}
    assert list((tmp_path / "store").rglob("*.entry.json")) == []


def test_entries_written_before_lineages_and_validation_sets_are_measured_again(github, settings) -> None:
    emu, _ = github
    first = session(settings, max_iters=10)
    registry = json.loads(emu.read_file(REPO, METADATA))
    old = registry[first.checkpoint_id]
    for key in ("shape_sha256", "val_sha256"):  # as an earlier Retrain wrote its entries
        del old["fingerprint"][key]
    old.pop("evaluation", None)
    emu.commit_files(REPO, {METADATA: json.dumps(registry).encode()})
    second = session(settings, max_iters=4)
    assert second.facts.parent_checkpoint == first.checkpoint_id  # its shape read from its model_config
    assert set(second.facts.evaluations) == {first.checkpoint_id}  # its figure measured again


def test_a_hostile_registry_cannot_make_the_worker_read_or_delete_outside_its_run(github, settings, tmp_path) -> None:
    """metadata.json is the repository's to write: its entries name objects, and the worker resolves them
    only inside this run's own folder of its own store."""
    emu, _ = github
    first = session(settings, max_iters=6)
    store_root = Path(settings.store_url.removeprefix("file://"))
    victim = store_root / "octo" / "victim" / "run" / "ckpt_theirs.pt"  # another repository's weights
    victim.parent.mkdir(parents=True)
    victim.write_bytes(stored_file(settings, first).read_bytes())
    worker_file = tmp_path / "worker-secret"
    worker_file.write_bytes(b"not the repository's")
    registry = json.loads(emu.read_file(REPO, METADATA))
    mine = registry[first.checkpoint_id]
    hostile = {
        "ckpt_20200101_000000_1_steal": {**mine, "checkpoint_id": "ckpt_20200101_000000_1_steal", "val_loss": 0.0001,
                                         "storage": {**mine["storage"], "key": f"{REPO}/../victim/run/ckpt_theirs.pt"}},
        "ckpt_20200101_000000_2_other": {**mine, "checkpoint_id": "ckpt_20200101_000000_2_other", "val_loss": 0.0002,
                                         "storage": {**mine["storage"], "key": "octo/victim/run/ckpt_theirs.pt"}},
        "ckpt_20200101_000000_3_wipe": {"checkpoint_id": "ckpt_20200101_000000_3_wipe", "val_loss": None,
                                        "storage": {"uri": f"file://{worker_file}", "bytes": 21,
                                                    "sha256": hashlib.sha256(worker_file.read_bytes()).hexdigest()}},
    }
    emu.commit_files(REPO, {METADATA: json.dumps({**registry, **hostile}).encode(),
                            ".github/retrain.yml": emu.read_file(REPO, ".github/retrain.yml")
                            + b"retention: {max_checkpoints: 2}\n"})
    second = session(settings, max_iters=6)
    assert second.facts.parent_checkpoint == first.checkpoint_id  # the "better" hostile entries were refused
    refused = [n for n in second.facts.notes if "outside this run's folder" in n]
    assert {n.split(":")[0] for n in refused} >= {"skipped ckpt_20200101_000000_1_steal",
                                                  "skipped ckpt_20200101_000000_2_other"}, second.facts.notes
    assert all(str(store_root) not in n for n in second.facts.notes)  # no location in what is committed
    kept = registry_at(emu, second.commit_oid)
    assert not set(hostile) & set(kept)  # retention dropped them...
    assert victim.is_file() and worker_file.read_bytes() == b"not the repository's"  # ...and deleted nothing
    assert stored_file(settings, first).is_file() and stored_file(settings, second).is_file()


@pytest.mark.parametrize("fault", ["createCommitOnBranch", "git/refs"])
def test_a_commit_whose_answer_is_lost_is_committed_once(github, settings, fault: str, fault_report) -> None:
    """The emulator carries the commit out and then answers 502 (the answer lost on the way back). The
    client's retry finds the branch moved: by this very session's commit, which must be the one kept."""
    emu, _ = github
    if fault == "createCommitOnBranch":
        emu.inject_fault("POST", "/graphql", 502, after=True, body_contains="createCommitOnBranch")
    else:  # the Git Data API path: GraphQL refuses the mutation, the ref update's answer is lost
        refused = {"type": "FORBIDDEN", "path": ["createCommitOnBranch"],
                   "message": "Resource not accessible by integration"}
        emu.inject_fault("POST", "/graphql", 200, body_contains="createCommitOnBranch",
                         body={"data": None, "errors": [refused]})
        emu.inject_fault("PATCH", r"/repos/octo/demo/git/refs/.*", 502, after=True)
    before = len(emu.git_log(REPO))
    result = session(settings, max_iters=6)
    log = emu.git_log(REPO)
    assert len(log) == before + 1, [c["message"].splitlines()[0] for c in log[: len(log) - before]]
    assert result.commit_oid == log[0]["oid"]
    history = emu.read_file(REPO, ".training-progress/nanecho-cached-ci/history.jsonl").decode().splitlines()
    assert [json.loads(h)["session"] for h in history].count(result.facts.session_id) == 1
    assert not emu.faults.pending(), "the fault was never hit: nothing was tested"
    fault_report(f"the answer to the session's commit ({fault}) lost after GitHub applied it",
                 "the retry found this session's own commit at the new head: one commit, one history line")
