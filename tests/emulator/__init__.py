"""A GitHub API emulator for Retrain's tests (DESIGN.md §10): real git repos, real auth rules,
GitHub's own OpenAPI description and GraphQL schema as the judge of every call."""

from .emulator import GitHubEmulator, RecordedCall

__all__ = ["GitHubEmulator", "RecordedCall"]
