"""Publishing end to end (issue 14, "Publishing end to end against the emulator"): a repository with
`publish: {releases: true}`, a signed `/retrain` comment to the receiver, a real Celery train worker, a real
Redis, and the GitHub emulator's API and upload hosts over HTTP. A new best checkpoint becomes one release of
its export; a checkpoint that is not the best, or a file GitHub refuses, publishes nothing and says so, and
the session is committed all the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load as load_safetensors

from tests.conftest import REPO
from tests.emulator import GitHubEmulator
from tests.payloads import comment_event
from tests.processes import wait_until
from tests.repos import TINY_CONFIG
from tests.services import post, retrain_services
from tests.test_end_to_end import RUN_DIR, SESSION_TIMEOUT, progress_commits, scrape, summary_at
from workers.session.export import EXPORT_FILES
from workers.trainer.checkpoint import load_state
from workers.trainer.hf_format import to_hf_tensors
from workers.trainer.model import ModelConfig

RUN = "nanecho-cached-ci"
NOT_PUBLISHED = "not published as a release"


def publishing_config(emu: GitHubEmulator, **ci_overrides: object) -> str:
    """Commit a `.github/retrain.yml` with `publish: {releases: true}` and the tiny `ci` profile (these
    overrides applied); the commit's oid."""
    config = yaml.safe_load(TINY_CONFIG)
    config["profiles"]["ci"].update(ci_overrides)
    config["publish"] = {"releases": True}
    return emu.commit_files(REPO, {".github/retrain.yml": yaml.safe_dump(config).encode()}, message="publish")


@pytest.fixture
def services(tmp_path: Path, github, redis_url: str, clean_redis, app_key_pair) -> Iterator[str]:
    """The receiver and the train and events workers, uploading release assets to the emulator's upload host."""
    emu, api = github
    with retrain_services(tmp_path, api, redis_url, app_key_pair[0],
                          RETRAIN_GITHUB_UPLOADS_URL=emu.uploads_url) as running:
        yield running.web


def session(emu: GitHubEmulator, web: str, log: Path, *, comment_id: int, delivery: str) -> dict:
    """One `/retrain ci` comment through to its final report (its one reply, edited after publishing)."""
    before = len(emu.comments(REPO, 7))
    payload = comment_event("/retrain ci", sender="alice", repo=REPO, installation_id=42, comment_id=comment_id,
                            github=emu)
    assert post(web, payload, delivery=delivery) == 202

    def final() -> dict | None:
        replies = emu.comments(REPO, 7)[before:]
        return replies[0] if replies and "| stopped |" in replies[0]["body"] else None

    reply = wait_until(final, SESSION_TIMEOUT, "the session's final reply", log)
    assert len(emu.comments(REPO, 7)) == before + 1  # one reply per session
    return reply


def entries(emu: GitHubEmulator, oid: str) -> dict:
    return json.loads(emu.read_file(REPO, f"{RUN_DIR}/cache/metadata.json", ref=oid))


def test_a_new_best_checkpoint_is_one_release_and_one_that_is_not_the_best_publishes_nothing(
        github, services, tmp_path) -> None:
    emu, _ = github
    log = tmp_path / "worker.log"
    publishing_config(emu)

    reply = session(emu, services, log, comment_id=701, delivery="publish-1")
    [commit] = progress_commits(emu)
    checkpoint = summary_at(emu, commit["oid"])["session"]["checkpoint_id"]
    [release] = emu.releases(REPO)
    tag = f"retrain-{RUN}-{checkpoint}"
    assert (release["tag_name"], release["name"], release["draft"]) == (tag, f"{RUN} {checkpoint}", False)
    assert release["target_commitish"] == commit["oid"]
    assert emu.repos[REPO].git.ref_target(f"refs/tags/{tag}") == commit["oid"]  # the progress commit
    assert sorted(a["name"] for a in release["assets"]) == sorted(EXPORT_FILES)
    card = emu.asset_bytes(REPO, tag, "README.md").decode()
    assert release["body"] == card and checkpoint in card and commit["oid"] in card
    assert release["html_url"] in reply["body"] and f"published release [`{tag}`]" in reply["body"]
    [check] = emu.check_runs(REPO)
    assert check["conclusion"] == "success" and release["html_url"] in check["output"]["summary"]

    # The weights are the stored checkpoint's served weights in GPT-2's layout, and transformers loads them.
    stored = load_state((tmp_path / "store" / entries(emu, commit["oid"])[checkpoint]["storage"]["key"]).read_bytes())
    want = to_hf_tensors(ModelConfig.from_dict(stored["model_config"]), stored["model"])
    got = load_safetensors(emu.asset_bytes(REPO, tag, "model.safetensors"))
    assert sorted(got) == sorted(want)
    assert all(got[name].equal(want[name]) for name in want)
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    for name in EXPORT_FILES:
        (downloaded / name).write_bytes(emu.asset_bytes(REPO, tag, name))
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(downloaded)
    assert model.transformer.wte.weight.equal(want["transformer.wte.weight"])
    assert transformers.AutoTokenizer.from_pretrained(downloaded)("hi").input_ids == list(b"hi")

    # A second session that makes the model worse (a learning rate that wrecks it in three steps, no running
    # average to soften that): committed, it is not the best, so nothing new is published.
    publishing_config(emu, learning_rate=1.0, max_iters=3, average_horizon=0)
    reply = session(emu, services, log, comment_id=702, delivery="publish-2")
    second = progress_commits(emu)[0]
    assert second["oid"] != commit["oid"]
    mine = summary_at(emu, second["oid"])["session"]["checkpoint_id"]
    registry = entries(emu, second["oid"])
    assert registry[mine]["val_loss"] > registry[checkpoint]["val_loss"]  # the premise: it did make it worse
    assert [r["tag_name"] for r in emu.releases(REPO)] == [tag]
    assert f"{NOT_PUBLISHED}: `{mine}` is not the profile's best; `{checkpoint}`" in reply["body"]
    assert NOT_PUBLISHED in emu.check_runs(REPO)[1]["output"]["summary"]

    samples = scrape(services)
    assert samples[("retrain_releases_total", (("outcome", "published"),))] == 1
    assert samples[("retrain_releases_total", (("outcome", "not_best"),))] == 1
    assert samples[("retrain_sessions_total", (("outcome", "committed"), ("profile", "ci")))] == 2
    assert "ghs_" not in log.read_text()
    assert emu.violations == []


def test_an_asset_github_refuses_costs_the_release_not_the_session(github, services, tmp_path) -> None:
    emu, _ = github
    log = tmp_path / "worker.log"
    publishing_config(emu)
    emu.max_asset_bytes = 100_000  # the tiny model's weights are about 0.5 MB; its other files fit

    reply = session(emu, services, log, comment_id=801, delivery="too-large-1")
    [commit] = progress_commits(emu)
    assert commit["oid"] in reply["body"]
    assert f"{NOT_PUBLISHED}: GitHub refused model.safetensors as an asset of release" in reply["body"]
    [check] = emu.check_runs(REPO)
    assert check["conclusion"] == "success"
    assert f"{NOT_PUBLISHED}: GitHub refused model.safetensors" in check["output"]["summary"]
    assert [r["draft"] for r in emu.releases(REPO)] == [True]  # left unseen, to be finished or deleted
    samples = scrape(services)
    assert samples[("retrain_releases_total", (("outcome", "failed"),))] == 1
    assert samples[("retrain_sessions_total", (("outcome", "committed"), ("profile", "ci")))] == 1
    assert "ghs_" not in log.read_text()
