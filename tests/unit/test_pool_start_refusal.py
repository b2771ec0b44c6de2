"""Which Ray Serve pool states a front-end starts on (and reports ready with), and the fix named."""

from __future__ import annotations

import pytest

from streamscribe.pool.client import start_refusal


def test_a_running_pool_is_served() -> None:
    assert start_refusal("p", "RUNNING", "", 2) is None


def test_an_unhealthy_pool_with_a_running_replica_is_served_while_serve_replaces_one() -> None:
    # a replica was killed or failed its health check; its twin still decodes
    assert start_refusal("p", "UNHEALTHY", "A replica's health check failed.", 1) is None


def test_an_unhealthy_pool_with_no_running_replica_is_refused_naming_the_fix() -> None:
    reason = start_refusal("p", "UNHEALTHY", "replica out of memory", 0)
    assert reason is not None
    assert "'p' is UNHEALTHY: replica out of memory" in reason
    assert "streamscribe pool up" in reason


def test_a_missing_pool_names_the_command_that_starts_it() -> None:
    reason = start_refusal("my-pool", "NOT_STARTED", "", 0)
    assert reason is not None and "--app-name my-pool" in reason


@pytest.mark.parametrize("status", ["DEPLOYING", "UPGRADING", "DEPLOYING_OR_UPGRADING"])
def test_a_pool_still_starting_says_wait(status: str) -> None:
    reason = start_refusal("p", status, "", 1)
    assert reason is not None and "still starting" in reason and status in reason


@pytest.mark.parametrize("status", ["DEPLOY_FAILED", "DELETING"])
def test_a_failed_or_deleted_pool_is_refused_even_with_replicas_left(status: str) -> None:
    reason = start_refusal("p", status, "boom", 1)
    assert reason is not None and status in reason and "boom" in reason
