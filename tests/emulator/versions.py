"""REST API versions: the `X-GitHub-Api-Version` request header as api.github.com reads it.

From GitHub's documentation ("API Versions"): requests without the header use 2022-11-28; a version that
is not supported is answered 400. The body, seen from a live call in 2026 (quoted in a public project's
notes), is {"message": "Bad Request", "errors": "The version you specified in the \\"X-GitHub-API-Version\\"
request header, \\"1999-01-01\\", is not a supported version. The following versions are currently
supported: \\"2026-03-10\\" (most recent) and \\"2022-11-28\\".", "status": "400"} (`errors` is a string
here, not the usual list), and a supported version comes back in `x-github-api-version-selected`.
GitHub compares the requested version lowercased and without whitespace, and does not read the header
on /graphql (GraphQL is not versioned this way), nor on github.com's web pages.
"""

from __future__ import annotations

from collections.abc import Mapping

HEADER = "X-GitHub-Api-Version"
SELECTED_HEADER = "x-github-api-version-selected"
SUPPORTED = ("2026-03-10", "2022-11-28")  # newest first, as GitHub lists them
DEFAULT = "2022-11-28"


def versioned(path: str) -> bool:
    """Whether GitHub reads the version header on this path (REST calls, not GraphQL or web pages)."""
    return not (path == "/graphql" or path.endswith("/settings/apps/new"))


def requested(headers: Mapping[str, str]) -> str | None:
    """The version the request asks for, as sent; None when it sends no header."""
    return headers.get(HEADER)


def selected(raw: str | None) -> str | None:
    """The version GitHub serves: the default when none is asked for, None when the one asked for is unknown."""
    wanted = "".join((raw or "").lower().split())
    if not wanted:
        return DEFAULT
    return wanted if wanted in SUPPORTED else None


def unsupported_message(raw: str) -> str:
    """GitHub's `errors` text for a version it does not support (the message itself is "Bad Request")."""
    newest, *others = SUPPORTED
    listed = _sentence([f'"{newest}" (most recent)', *(f'"{v}"' for v in others)])
    return (f'The version you specified in the "X-GitHub-API-Version" request header, "{raw}", is not a supported '
            f"version. The following versions are currently supported: {listed}.")


def _sentence(items: list[str]) -> str:
    """Rails' to_sentence, which GitHub's message uses: "a", "a and b", "a, b, and c"."""
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]
