"""Log lines: JSON with the delivery and session ids of the work in hand, and no secret in any line,
tracebacks included."""

from __future__ import annotations

import json
import logging

import pytest

from app.log_setup import REDACTED, bound, configure_logging, redact


@pytest.fixture(autouse=True)
def root_logger_restored():
    """configure_logging replaces the root logger's handlers: give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


TOKEN = "ghs_" + "A1b2" * 9
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiI0MjQyIiwiZXhwIjoxfQ.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize("secret", [TOKEN, "github_pat_" + "x1" * 20, "v1." + "ab" * 20, JWT, PEM,
                                    "ghp_" + "Z" * 36])
def test_secrets_are_redacted(secret: str) -> None:
    assert redact(f"before {secret} after") == f"before {REDACTED} after"


def test_an_authorization_header_is_redacted_without_eating_the_json_around_it() -> None:
    line = json.dumps({"message": "headers {'Authorization: token abc.def'}", "n": 1})
    assert json.loads(redact(line))["message"] == f"headers {{'Authorization: {REDACTED}'}}"


def test_json_lines_carry_the_bound_ids_and_redact_tracebacks(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging(logging.INFO, "json")
    log = logging.getLogger("retrain.test")
    with bound(delivery_id="d-7", session_id="s-7"):
        log.info("minted %s", TOKEN)
        try:
            raise RuntimeError(f"GitHub refused {TOKEN}")
        except RuntimeError:
            log.exception("call failed")
    log.info("outside")
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert [(line["message"], line.get("delivery_id"), line.get("session_id")) for line in lines] == [
        (f"minted {REDACTED}", "d-7", "s-7"), ("call failed", "d-7", "s-7"), ("outside", None, None),
    ]
    assert TOKEN not in lines[1]["exc_info"] and REDACTED in lines[1]["exc_info"]
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "retrain.test"


def test_text_lines_for_a_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging(logging.INFO, "text")
    with bound(session_id="s-8"):
        logging.getLogger("retrain.test").warning("token %s", TOKEN)
    err = capfd.readouterr().err
    assert err.rstrip().endswith(f"retrain.test: token {REDACTED} [session_id=s-8]")
