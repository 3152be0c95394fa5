"""Table-driven: real KIE error texts → one failure class each, and the retry policy of that class."""

from __future__ import annotations

import pytest

from neurocards.config import RetryConfig
from neurocards.jobs.failures import FailureClass as F
from neurocards.jobs.failures import classify, policy_for
from neurocards.providers.base import ErrorKind as K
from neurocards.providers.base import ProviderError

CASES = [
    # (kind, http_status, code, message, expected)
    (K.TASK_FAILED, None, "400", "Your prompt was flagged by Website as violating content policies.", F.USER_VIOLATION),
    (K.TASK_FAILED, None, "400", "public error unsafe image upload.", F.USER_VIOLATION),
    (K.TASK_FAILED, None, "400", "public error minor upload", F.USER_VIOLATION),
    (K.TASK_FAILED, None, "400", "public error prominent people upload", F.USER_VIOLATION),
    (K.TASK_FAILED, None, "500", "This content may violate our guardrails concerning similarity to third-party content.", F.USER_VIOLATION),
    (K.TASK_FAILED, None, "422", "Invalid prompt: prompt contains prohibited content", F.USER_VIOLATION),
    (K.TASK_FAILED, None, "501", "Generation failed due to content policy", F.USER_VIOLATION),
    (K.TASK_FAILED, None, "500", "Internal Error - Timeout", F.TEMPORARY),
    (K.TASK_FAILED, None, "501", "Generation Failed", F.GENERATION_FAILED),  # final (api-notes §2)
    (K.TASK_FAILED, None, "451", "Failed to fetch the image. Kindly verify any access limits set by you or your service provider.", F.TEMPORARY),
    (K.API, 200, 500, "Server Error", F.TEMPORARY),
    (K.API, 200, 455, "Service Unavailable – maintenance", F.TEMPORARY),
    (K.API, 502, None, "Bad Gateway", F.TEMPORARY),
    (K.NETWORK, None, None, "connection reset by peer", F.TEMPORARY),
    (K.TIMEOUT, None, None, "read timeout", F.TEMPORARY),
    (K.MALFORMED, 200, None, "response is not JSON: <html>", F.TEMPORARY),
    (K.DOWNLOAD, 404, None, "result download failed", F.TEMPORARY),
    (K.API, 200, 429, "Rate limited", F.RATE_LIMIT),
    (K.API, 429, None, "Too Many Requests", F.RATE_LIMIT),
    (K.API, 200, 402, "The current credits are insufficient. Please top up.", F.BILLING),
    (K.API, 200, 401, "You do not have access permissions", F.BILLING),
    (K.API, 200, 433, "sub-key usage exceeded limit", F.BILLING),
    (K.API, 200, 422, "The page does not exist or is not published", F.OUR_BUG),
    (K.API, 200, 422, "image_urls is required", F.OUR_BUG),
    (K.API, 200, 505, "Feature Disabled", F.OUR_BUG),
    (K.TASK_FAILED, None, "400", "Only English prompts are supported at this time.", F.OUR_BUG),
    (K.API, 200, 418, "I'm a teapot", F.UNKNOWN),
    (K.TASK_FAILED, None, "", "something odd happened", F.UNKNOWN),
]


@pytest.mark.parametrize(("kind", "status", "code", "message", "expected"), CASES)
def test_classify(kind: K, status: int | None, code: int | str | None, message: str, expected: F) -> None:
    err = ProviderError(message, kind=kind, http_status=status, code=code)
    assert classify(err).cls is expected


def test_policies() -> None:
    retry = RetryConfig()
    assert policy_for(F.TEMPORARY, retry).delays_s == (5, 10, 20, 40)
    assert policy_for(F.UNKNOWN, retry).delays_s == (5, 10, 20, 40)
    assert policy_for(F.RATE_LIMIT, retry).delays_s == (60, 120, 240)
    for no_retry in (F.USER_VIOLATION, F.BILLING, F.OUR_BUG, F.TIMEOUT):
        assert not policy_for(no_retry, retry).retries
    assert policy_for(F.BILLING, retry).alert_admins and policy_for(F.OUR_BUG, retry).alert_admins


def test_download_status_is_not_an_api_code() -> None:
    err = ProviderError("result download failed", kind=K.DOWNLOAD, http_status=401)
    assert classify(err).cls is F.TEMPORARY
