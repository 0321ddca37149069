"""docs/reference.md is rendered from the settings, config and command models: it must match them."""

from __future__ import annotations

from pathlib import Path

from app.config.repo_config import Profile, RepoConfig
from app.config.settings import Settings
from app.writing.reference import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "reference.md"


def test_the_reference_is_up_to_date() -> None:
    assert DOC.read_text() == render(), "regenerate: .venv/bin/python -m app.writing.reference > docs/reference.md"


def test_every_setting_and_config_field_is_documented() -> None:
    text = render()
    for name in Settings.model_fields:
        assert f"RETRAIN_{name.upper()}" in text
    for model in (RepoConfig, Profile):
        for name, info in model.model_fields.items():
            assert f"| `{name}` |" in text and info.description, f"{model.__name__}.{name} has no description"


def test_the_readme_lists_every_limit_with_its_real_default() -> None:
    """The security section's table is a claim: each limit's variable and default are the Settings'."""
    import re

    from app.config.limits import Limits

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = dict(re.findall(r"^\| [^|]+ \| `RETRAIN_([A-Z_0-9]+)` \| ([^ |]+) \|$", readme, re.M))
    names = {f.upper() for f in Limits.__dataclass_fields__} | {"MAX_SESSION_S"}
    assert set(rows) == names
    for name, default in rows.items():
        assert default == str(Settings.model_fields[name.lower()].default), name
