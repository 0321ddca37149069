"""`.github/retrain.yml`: defaults, merging, and errors that name the field."""

import pytest

from app.errors import ConfigError
from app.repo_config import DEFAULT_PROFILES, parse_repo_config


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
