"""`.github/retrain.yml`: defaults, merging, and errors that name the field."""

import contextlib
import time

import pytest

from app.config.repo_config import DEFAULT_PROFILES, parse_repo_config
from app.errors import ConfigError


def test_missing_file_gives_the_seed_profiles() -> None:
    config = parse_repo_config(None)
    assert set(config.profiles) == {"ci", "scheduled", "full"}
    assert (config.profiles["ci"].n_layer, config.profiles["ci"].max_iters) == (4, 500)
    assert config.run_name("ci") == "nanecho-cached-ci"


def test_profile_overrides_merge_over_defaults_and_new_profiles_are_allowed() -> None:
    config = parse_repo_config("profiles:\n  ci: {max_iters: 7}\n  tiny: {n_layer: 1, n_embd: 32, n_head: 2}\n")
    assert config.profiles["ci"].max_iters == 7
    assert config.profiles["ci"].n_embd == DEFAULT_PROFILES["ci"].n_embd
    assert config.profiles["tiny"].n_layer == 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("profiles: {ci: {n_layer: 0}}", "profiles.ci.n_layer"),
        ("retention: {max_checkpoints: many}", "retention.max_checkpoints"),
        ("colour: blue", "colour"),
        ("permission: owner", "permission"),
        ("data: [1", "not valid YAML"),
        ("- a\n- b", "mapping at the top level"),
        ("profiles: {ci: 3}", "profiles.ci must be a mapping"),
        # names that would climb out of their folders, or carry a path, into store keys and API paths
        ('run_prefix: "../../victim/repo/x-"', "run_prefix: '../../victim/repo/x-' is not a valid run_prefix"),
        ('run_prefix: "a/b-"', "is not a valid run_prefix"),
        ('profiles: {"../../../etc": {}}', "is not a valid profile name"),
        ("profiles: {'ci/x': {}}", "is not a valid profile name"),
        ("progress_dir: /etc", "progress_dir: '/etc' is not a valid progress_dir"),
        ("progress_dir: a/../b", "is not a valid progress_dir"),
        ("progress_dir: ''", "is not a valid progress_dir"),
        ('branch: "a..b"', "branch: 'a..b' is not a valid branch name"),
        ('branch: "-x"', "is not a valid branch name"),
        ('branch: "a b"', "is not a valid branch name"),
        ('branch: "x.lock"', "is not a valid branch name"),
        ('workflows: ["../../etc/passwd"]', "workflows.0: '../../etc/passwd' is not a valid workflow file"),
        ('schedule: [{cron: "0 * * * *", profile: "../x"}]', "schedule.0.profile"),
        # what the worker would refuse later
        ('schedule: [{cron: "0 * * * *", profile: "nightly"}]', "schedule.0.profile: unknown profile `nightly`"),
        ("profiles: {ci: {n_head: 3}}", "profiles.ci: n_head (3) must divide n_embd (256)"),
        ("profiles: {ci: {min_lr: 0.1}}", "profiles.ci: min_lr (0.1) must not exceed learning_rate"),
        ("data: {include: []}", "data.include"),
        ("data: {include: ['']}", "data.include.0: a glob must have 1 to 256 characters"),
        (f"data: {{include: ['{'a' * 300}']}}", "a glob must have 1 to 256 characters"),
        (f"data: {{include: [{', '.join(['x'] * 65)}]}}", "data.include"),
        ("data: {include: ['# a comment']}", "is not a glob"),
        # a release's tag starts with the prefix: git's rules for a tag name, and no path
        ('publish: {tag_prefix: "v..1-"}', "publish.tag_prefix: 'v..1-' is not a valid tag_prefix"),
        ('publish: {tag_prefix: "a/b-"}', "is not a valid tag_prefix"),
        ('publish: {tag_prefix: "-x"}', "is not a valid tag_prefix"),
        ('publish: {tag_prefix: "a b"}', "is not a valid tag_prefix"),
        ('publish: {tag_prefix: "x^"}', "is not a valid tag_prefix"),
        ("publish: {releases: maybe}", "publish.releases"),
        ("publish: {huggingface: true}", "publish.huggingface"),
    ],
)
def test_invalid_config_names_the_field(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=r".") as info:
        parse_repo_config(text)
    assert needle in str(info.value)


def test_permission_threshold() -> None:
    config = parse_repo_config("permission: write")
    assert config.allows("admin") and config.allows("write") and config.allows("maintain")
    assert not config.allows("read") and not config.allows("none") and not config.allows("bogus")


def test_hostile_configs_are_refused_in_well_under_a_second() -> None:
    """`retrain config check` parses with this; no pattern may make it (or the worker's matching) slow."""
    started = time.perf_counter()
    for text in ('data: {include: ["*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b"]}', 'run_prefix: "../../x-"',
                 "profiles: {ci: {n_head: 3}}"):
        with contextlib.suppress(ConfigError):
            parse_repo_config(text)
    assert time.perf_counter() - started < 1.0


def test_names_that_fit_their_folders_are_accepted() -> None:
    config = parse_repo_config(
        "run_prefix: my.run-\nprogress_dir: .retrain/progress\nbranch: retrain/progress-v2\n"
        "workflows: [.github/workflows/train.yml]\nprofiles: {nightly_2: {}}\n"
        "schedule: [{cron: '0 3 * * *', profile: nightly_2}]\n"
    )
    assert config.run_name("nightly_2") == "my.run-nightly_2" and config.branch == "retrain/progress-v2"


def test_publishing_is_off_unless_asked_and_tags_name_the_checkpoint() -> None:
    assert parse_repo_config(None).publish.releases is False
    config = parse_repo_config("publish: {releases: true, tag_prefix: model-}")
    assert config.publish.releases is True
    tag = config.publish.release_tag("nanecho-cached-ci", "ckpt_20261201_120000_500_1a2b3c4d")
    assert tag == "model-nanecho-cached-ci-ckpt_20261201_120000_500_1a2b3c4d"
    assert parse_repo_config("publish: {tag_prefix: ''}").publish.release_tag("r", "c") == "r-c"
    with pytest.raises(ConfigError, match="not a valid tag name"):
        config.publish.release_tag("ci", "x.lock")
    with pytest.raises(ConfigError, match="not a valid tag name"):
        config.publish.release_tag("ci", "a" * 300)
