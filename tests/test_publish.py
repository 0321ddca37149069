"""Publishing an export folder as a GitHub Release, end to end against the emulator over real HTTP (its
API host and its upload host): one release per tag, every file's bytes as uploaded, nothing twice."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from app.github.client import installation_client
from app.github.releases import MAX_RELEASE_BODY_CHARS, AssetTooLarge, GitHubReleases, PublishError
from tests.conftest import INSTALLATION_ID, REPO
from tests.emulator.faults import DROP_CONNECTION
from workers.jobs.publish import publish_folder

TAG = "retrain-nanecho-cached-ci-ckpt_20261201_120000_500_1a2b3c4d"
CARD = "# nanecho\n\nA small GPT trained by Retrain.\n"
UPLOADS = "uploads.github.com"


def export(folder: Path, *, weights_bytes: int = 3 * 1024 * 1024) -> dict[str, bytes]:
    """An export folder like the real one: config, weights of a few MB, tokenizer, model card."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"config.json": b'{"n_layer": 4}\n', "model.safetensors": os.urandom(weights_bytes),
             "tokenizer.json": b'{"type": "bytes"}\n', "README.md": CARD.encode()}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def publish(settings, folder: Path, **kw):
    async def go():
        async with installation_client(settings, INSTALLATION_ID) as gh:
            return await publish_folder(gh, REPO, **{"tag": TAG, "name": "nanecho ci", "notes": CARD,
                                                     "folder": folder, **kw})
    return asyncio.run(go())


def uploads(emu) -> list:
    return [c for c in emu.calls if c.host == UPLOADS]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_folder_becomes_one_release_with_every_file_and_the_card_as_notes(github, settings, tmp_path) -> None:
    emu, _ = github
    head = emu.head(REPO)
    files = export(tmp_path / "export")
    result = publish(settings, tmp_path / "export", commit_sha=head)
    [release] = emu.releases(REPO)
    assert (release["tag_name"], release["body"], release["draft"], release["name"]) == (TAG, CARD, False, "nanecho ci")
    assert release["target_commitish"] == head
    assert emu.repos[REPO].git.ref_target(f"refs/tags/{TAG}") == head  # the tag marks the progress commit
    assert sorted(a["name"] for a in release["assets"]) == sorted(files)
    for name, data in files.items():
        assert sha(emu.asset_bytes(REPO, TAG, name)) == sha(data), name
    assert result.uploaded == tuple(sorted(files)) and result.skipped == ()
    assert (result.id, result.tag, result.html_url) == (release["id"], TAG, release["html_url"])
    assert result.html_url.endswith(f"/releases/tag/{TAG}")
    # created as a draft, filled, then published: never a published release without its assets
    writes = [(c.method, c.host) for c in emu.calls if "/releases" in c.path and c.method != "GET"]
    assert writes == [("POST", "api.github.com"), *[("POST", UPLOADS)] * len(files), ("PATCH", "api.github.com")]
    created = next(c.json for c in emu.calls if c.method == "POST" and c.path.endswith("/releases"))
    assert created["draft"] is True and created["target_commitish"] == head
    assert {a["name"]: a["content_type"] for a in release["assets"]}["config.json"] == "application/json"


def test_progress_is_logged_per_asset_with_sizes_and_never_a_token(github, settings, tmp_path, caplog) -> None:
    emu, _ = github
    export(tmp_path / "export")
    with caplog.at_level("INFO"):
        publish(settings, tmp_path / "export", commit_sha=emu.head(REPO))
    assert "uploading model.safetensors (3,145,728 bytes) to release" in caplog.text
    assert f"published release {TAG}" in caplog.text
    minted = list(emu.tokens._tokens)
    assert minted and not any(token in caplog.text for token in minted)


def test_publishing_again_duplicates_nothing(github, settings, tmp_path) -> None:
    emu, _ = github
    files = export(tmp_path / "export")
    publish(settings, tmp_path / "export", commit_sha=emu.head(REPO))
    before = len(uploads(emu))
    again = publish(settings, tmp_path / "export", commit_sha=emu.head(REPO))
    assert again.uploaded == () and again.skipped == tuple(sorted(files))
    assert len(uploads(emu)) == before  # not one byte sent again
    [release] = emu.releases(REPO)
    assert len(release["assets"]) == len(files)


def test_a_draft_left_half_filled_is_completed_and_a_partial_asset_replaced(github, settings, tmp_path) -> None:
    """A session that died mid-publishing: its draft holds one whole asset and one cut short."""
    emu, _ = github
    files = export(tmp_path / "export")

    async def start() -> int:
        async with installation_client(settings, INSTALLATION_ID) as gh:
            draft = await GitHubReleases(gh).create_release(REPO, tag=TAG, commit_sha=emu.head(REPO), name="x",
                                                            notes=CARD)
            return draft.id

    draft_id = asyncio.run(start())
    emu.add_release_asset(REPO, draft_id, "config.json", files["config.json"], content_type="application/json")
    emu.add_release_asset(REPO, draft_id, "model.safetensors", files["model.safetensors"][:1000], state="open")
    result = publish(settings, tmp_path / "export", commit_sha=emu.head(REPO))
    assert result.skipped == ("config.json",)
    assert result.uploaded == ("README.md", "model.safetensors", "tokenizer.json")
    [release] = emu.releases(REPO)
    assert release["id"] == draft_id and not release["draft"]
    assert sorted(a["name"] for a in release["assets"]) == sorted(files)
    assert all(a["state"] == "uploaded" for a in release["assets"])
    assert emu.asset_bytes(REPO, TAG, "model.safetensors") == files["model.safetensors"]


def test_a_file_over_the_limit_is_refused_before_anything_is_published(github, settings, tmp_path) -> None:
    emu, _ = github
    export(tmp_path / "export", weights_bytes=5000)
    with pytest.raises(AssetTooLarge, match=r"model\.safetensors is 5,000 bytes.*under 2 GiB"):
        publish(settings, tmp_path / "export", commit_sha=emu.head(REPO), max_asset_bytes=4999)
    assert emu.releases(REPO) == [] and uploads(emu) == []
    assert not [c for c in emu.calls if "/releases" in c.path]


def test_lost_answers_make_one_release_and_one_asset_each(github, settings, tmp_path) -> None:
    emu, _ = github
    files = export(tmp_path / "export")
    emu.inject_fault("POST", r"/repos/octo/demo/releases", DROP_CONNECTION, after=True)
    emu.inject_fault("POST", r"/repos/octo/demo/releases/\d+/assets", 502, after=True)  # the first upload
    emu.inject_fault("PATCH", r"/repos/octo/demo/releases/\d+", DROP_CONNECTION, after=True)
    result = publish(settings, tmp_path / "export", commit_sha=emu.head(REPO))
    [release] = emu.releases(REPO)
    assert not release["draft"] and sorted(a["name"] for a in release["assets"]) == sorted(files)
    assert [c.fault for c in uploads(emu)] == [True, False, False, False]  # the lost one was not sent again
    assert result.uploaded == tuple(sorted(files))
    for name, data in files.items():
        assert emu.asset_bytes(REPO, TAG, name) == data
    assert emu.faults.pending() == 0


def test_immutable_releases_still_get_their_assets(github, settings, tmp_path) -> None:
    emu, _ = github
    emu.set_immutable_releases(REPO)
    files = export(tmp_path / "export")
    publish(settings, tmp_path / "export", commit_sha=emu.head(REPO))
    [release] = emu.releases(REPO)
    assert release["immutable"] and len(release["assets"]) == len(files)


def test_long_notes_are_cut_with_a_note(github, settings, tmp_path) -> None:
    emu, _ = github
    export(tmp_path / "export")
    publish(settings, tmp_path / "export", commit_sha=emu.head(REPO), notes="x" * (MAX_RELEASE_BODY_CHARS + 10))
    [release] = emu.releases(REPO)
    assert MAX_RELEASE_BODY_CHARS - 10 < len(release["body"]) <= MAX_RELEASE_BODY_CHARS
    assert "(cut: GitHub takes at most 125,000" in release["body"]


@pytest.mark.parametrize("bad", ["symlink", "subfolder", "renamed", "empty"])
def test_what_is_not_a_plain_file_github_keeps_is_refused_before_anything(github, settings, tmp_path, bad) -> None:
    emu, _ = github
    folder = tmp_path / "export"
    if bad != "empty":
        export(folder)
    else:
        folder.mkdir()
    if bad == "symlink":
        (folder / "secrets.txt").symlink_to("/etc/hostname")
    elif bad == "subfolder":
        (folder / "extra").mkdir()
    elif bad == "renamed":
        (folder / "my weights.bin").write_bytes(b"x")
    with pytest.raises(PublishError):
        publish(settings, folder, commit_sha=emu.head(REPO))
    assert not [c for c in emu.calls if "/releases" in c.path]


def test_the_token_goes_to_no_upload_host_but_the_configured_one(github, settings, tmp_path) -> None:
    emu, _ = github
    export(tmp_path / "export")
    elsewhere = settings.model_copy(update={"github_uploads_url": "http://127.0.0.1:9"})
    with pytest.raises(PublishError, match="names an upload host"):
        publish(elsewhere, tmp_path / "export", commit_sha=emu.head(REPO))
    assert uploads(emu) == []
