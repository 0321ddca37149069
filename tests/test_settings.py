"""Settings: secrets stay secret, GitHub Enterprise URLs derive correctly, clear errors when unset."""

from pathlib import Path

import pytest

from app.config.settings import Settings


def test_secrets_never_show_in_repr_or_str() -> None:
    settings = Settings(_env_file=None, webhook_secret="hunter2", private_key="-----BEGIN KEY-----abc")
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert "hunter2" not in text and "BEGIN KEY" not in text


@pytest.mark.parametrize(
    ("api", "graphql"),
    [
        ("https://api.github.com", "https://api.github.com/graphql"),
        ("https://ghe.example.com/api/v3", "https://ghe.example.com/api/graphql"),
        ("http://127.0.0.1:9999/", "http://127.0.0.1:9999/graphql"),
    ],
)
def test_graphql_endpoint_follows_the_rest_base(api: str, graphql: str) -> None:
    assert Settings(_env_file=None, github_api_url=api).graphql_url == graphql


@pytest.mark.parametrize(
    ("api", "uploads"),
    [
        ("https://api.github.com", "https://uploads.github.com"),
        ("https://ghe.example.com/api/v3", "https://ghe.example.com/api/uploads"),
        ("http://127.0.0.1:9999/", "http://127.0.0.1:9999"),
    ],
)
def test_the_upload_host_follows_the_rest_base_unless_set(api: str, uploads: str) -> None:
    assert Settings(_env_file=None, github_api_url=api).uploads_url == uploads
    assert Settings(_env_file=None, github_api_url=api, github_uploads_url="http://127.0.0.1:1/").uploads_url == \
        "http://127.0.0.1:1"


def test_environment_and_aliases(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("RETRAIN_APP_ID", "99")
    key = tmp_path / "k.pem"
    key.write_text("PEM")
    monkeypatch.setenv("RETRAIN_PRIVATE_KEY_PATH", str(key))
    settings = Settings(_env_file=None)
    assert settings.redis_url == "redis://example:6380/2"
    assert settings.require_app() == ("99", "PEM")


def test_missing_app_configuration_is_named() -> None:
    with pytest.raises(ValueError, match="RETRAIN_APP_ID"):
        Settings(_env_file=None).require_app()
    with pytest.raises(ValueError, match="RETRAIN_PRIVATE_KEY_PATH"):
        Settings(_env_file=None, app_id="1").require_app()
    with pytest.raises(ValueError, match="cannot read"):
        Settings(_env_file=None, app_id="1", private_key_path=Path("/nonexistent.pem")).require_app()
    with pytest.raises(ValueError, match="not both"):
        Settings(_env_file=None, private_key="x", private_key_path=Path("/x.pem"))
