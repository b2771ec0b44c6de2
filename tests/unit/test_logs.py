"""Credentials never reach the logs, whatever logger writes the URL that carried them."""

from __future__ import annotations

import logging

from streamscribe.logs import RedactSecretsFilter, redact


def test_credential_parameters_are_masked_and_the_rest_kept():
    line = '127.0.0.1:5 - "WebSocket /v3/ws?sample_rate=16000&token=abc.def&Authorization=sk_1" 101'
    out = redact(line)
    assert "abc.def" not in out and "sk_1" not in out
    assert "sample_rate=16000" in out and "token=***" in out and "Authorization=***" in out


def test_the_filter_rewrites_a_record_built_from_arguments():
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5", "/v2/realtime/ws?token=secret123"), None,
    )  # fmt: skip
    assert RedactSecretsFilter().filter(record)
    assert "secret123" not in record.getMessage() and "token=***" in record.getMessage()
