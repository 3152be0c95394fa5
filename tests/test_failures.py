"""The failure classifier as a table: an error as KIE (or its CDN, or our HTTP client) sends it → one class.

The class decides money: USER_VIOLATION is never retried (a new paid task would be refused again),
BILLING alerts the admin and takes the key out of rotation, TEMPORARY/RATE_LIMIT are retried on
their own schedules, OUR_BUG alerts and stops. Every rule of `RULES` and every alternative of its
pattern has a named case here whose text only that alternative matches, so dropping a rule, a word
or a code fails a named case. Texts marked [doc] are quoted from shared/kie/api-notes.md (KIE's docs,
OpenAI's moderation texts KIE passes through); [fake] from tests/fakes; [seen] from clients of KIE;
the others are that refusal worded on its own. New error texts seen in production go into this table.
"""

from __future__ import annotations

import pytest

from neurocards.config import RetryConfig
from neurocards.jobs.failures import FailureClass as F
from neurocards.jobs.failures import classify, jittered, policy_for
from neurocards.providers.base import ErrorKind as K
from neurocards.providers.base import ProviderError

# (case, kind, http_status, body code / failCode, message, class)
# A moderation text comes with failCode "500" (or 422), so without its rule it would be retried as a
# server error: the case fails when the rule or the word is gone.
MODERATION = [
    ("[doc] Veo: prompt flagged", K.TASK_FAILED, None, "400",
     "Your prompt was flagged by Website as violating content policies.", F.USER_VIOLATION),
    ("word: flagged", K.TASK_FAILED, None, "500", "The input image was flagged by the safety system.", F.USER_VIOLATION),
    ("word: violat", K.TASK_FAILED, None, "500", "The request violates our usage rules.", F.USER_VIOLATION),
    ("word: guardrail", K.TASK_FAILED, None, "500", "Blocked by the model's guardrails.", F.USER_VIOLATION),
    ("word: content polic", K.TASK_FAILED, None, "500", "Rejected under our content policies.", F.USER_VIOLATION),
    ("[doc] prohibited content under 422", K.TASK_FAILED, None, "422",
     "Invalid prompt: prompt contains prohibited content", F.USER_VIOLATION),
    ("word: nsfw", K.TASK_FAILED, None, "500", "NSFW content detected in the input image", F.USER_VIOLATION),
    ("word: nudity", K.TASK_FAILED, None, "500", "Input image rejected: nudity detected", F.USER_VIOLATION),
    ("word: sexual", K.TASK_FAILED, None, "500", "Sexual content is not allowed", F.USER_VIOLATION),
    ("[doc] Sora: nudity guardrail", K.TASK_FAILED, None, "500",
     "This content may violate our guardrails around nudity, sexuality, or erotic content.", F.USER_VIOLATION),
    ("[doc] Veo: public error unsafe image", K.TASK_FAILED, None, "400", "public error unsafe image upload.",
     F.USER_VIOLATION),
    ("[doc] Veo: public error minor", K.TASK_FAILED, None, "400", "public error minor upload", F.USER_VIOLATION),
    ("[doc] Veo: public error prominent people", K.TASK_FAILED, None, "400", "public error prominent people upload",
     F.USER_VIOLATION),
    ("short form: public error minor", K.TASK_FAILED, None, "500", "public error minor", F.USER_VIOLATION),
    ("words: unsafe image", K.TASK_FAILED, None, "500", "Unsafe image detected", F.USER_VIOLATION),
    ("words: minor upload", K.TASK_FAILED, None, "500", "Minor upload is not permitted", F.USER_VIOLATION),
    ("words: prominent people", K.TASK_FAILED, None, "500", "The image shows prominent people", F.USER_VIOLATION),
    ("[doc] Sora: third-party content", K.TASK_FAILED, None, "500",
     "This content may violate our guardrails concerning similarity to third-party content.", F.USER_VIOLATION),
    ("words: third party content", K.TASK_FAILED, None, "500", "Output resembles third party content",
     F.USER_VIOLATION),
    ("[doc] OpenAI: faces of humans", K.TASK_FAILED, None, "500",
     "Input images with faces of humans are currently rejected", F.USER_VIOLATION),
    ("words: face of real people", K.TASK_FAILED, None, "500", "The photo contains the face of real people",
     F.USER_VIOLATION),
    ("word: celebrity", K.TASK_FAILED, None, "500", "Celebrity likeness detected", F.USER_VIOLATION),
    ("word: policy", K.TASK_FAILED, None, "500", "Request blocked by safety policy", F.USER_VIOLATION),
    ("words: unsupported image", K.TASK_FAILED, None, "500", "Unsupported image format", F.USER_VIOLATION),
    ("words: invalid image", K.TASK_FAILED, None, "500", "Invalid image", F.USER_VIOLATION),
    ("[seen] PIL: cannot identify image", K.TASK_FAILED, None, "500",
     "cannot identify image file <_io.BytesIO object at 0x7f>", F.USER_VIOLATION),
    ("words: image is corrupt", K.TASK_FAILED, None, "500", "The image is corrupt", F.USER_VIOLATION),
    ("words: image corrupt", K.TASK_FAILED, None, "500", "Error: image corrupted", F.USER_VIOLATION),
    ("words: decode image", K.TASK_FAILED, None, "500", "Failed to decode image", F.USER_VIOLATION),
    ("[doc] policy text wins over 501", K.TASK_FAILED, None, "501", "Generation failed due to content policy",
     F.USER_VIOLATION),
]

OUR_BUG = [
    ("[doc] unknown model (422)", K.API, 200, 422, "The page does not exist or is not published", F.OUR_BUG),
    ("unknown model under a 500", K.API, 200, 500, "The page does not exist or is not published", F.OUR_BUG),
    ("[doc] Veo: only English prompts", K.TASK_FAILED, None, "400",
     "Only English prompts are supported at this time.", F.OUR_BUG),
    ("[fake] validation error 422", K.API, 200, 422, "image_urls is required", F.OUR_BUG),
    ("[doc] feature disabled 505", K.API, 200, 505, "Feature Disabled", F.OUR_BUG),
    ("[doc] upload API: 400 bad request", K.API, 400, None, "Missing required parameter: uploadPath", F.OUR_BUG),
    ("a task's own 400 is not our request", K.TASK_FAILED, None, "400", "something odd happened", F.UNKNOWN),
]

BILLING = [
    ("[doc] 402 insufficient credits", K.API, 200, 402, "The current credits are insufficient. Please top up.",
     F.BILLING),
    ("bare 402", K.API, 200, 402, "", F.BILLING),
    ("[doc] 401 no access", K.API, 200, 401, "You do not have access permissions", F.BILLING),
    ("[doc] 433 sub-key limit", K.API, 200, 433, "sub-key usage exceeded limit", F.BILLING),
    ("out of credits without 402: credits are insufficient", K.TASK_FAILED, None, "500",
     "The current credits are insufficient", F.BILLING),
    ("out of credits without 402: insufficient credits", K.TASK_FAILED, None, "500",
     "Insufficient credits for this model", F.BILLING),
    ("out of credits without 402: top up", K.TASK_FAILED, None, "500", "Please top up your account", F.BILLING),
    ("HTTP 402 inside body code 200", K.API, 402, 200, "", F.BILLING),
]

RATE_LIMIT = [
    ("[fake] body code 429", K.API, 200, 429, "Rate limited", F.RATE_LIMIT),
    ("HTTP 429", K.API, 429, None, "Too Many Requests", F.RATE_LIMIT),
    ("HTTP 429 inside body code 200", K.API, 429, 200, "Too Many Requests", F.RATE_LIMIT),
]

TEMPORARY = [
    ("[doc] Veo: internal error - timeout", K.TASK_FAILED, None, "500", "Internal Error - Timeout", F.TEMPORARY),
    ("words: internal error", K.TASK_FAILED, None, "", "Internal error", F.TEMPORARY),
    ("words: timed out", K.TASK_FAILED, None, "", "Generation timed out", F.TEMPORARY),
    ("word: timeout", K.TASK_FAILED, None, "", "upstream timeout", F.TEMPORARY),
    ("words: time out", K.TASK_FAILED, None, "", "render time out", F.TEMPORARY),
    ("words: try again", K.TASK_FAILED, None, "", "Please try again later", F.TEMPORARY),
    ("word: temporary", K.TASK_FAILED, None, "", "A temporary glitch", F.TEMPORARY),
    ("word: busy", K.TASK_FAILED, None, "", "Server busy", F.TEMPORARY),
    ("word: overloaded", K.TASK_FAILED, None, "", "Model overloaded", F.TEMPORARY),
    ("word: unavailable", K.API, 200, None, "Service Unavailable", F.TEMPORARY),
    ("[doc] Veo: failed to fetch the image", K.TASK_FAILED, None, "",
     "Failed to fetch the image. Kindly verify any access limits set by you or your service provider.",
     F.TEMPORARY),
    ("[doc] 451 fetch failure", K.TASK_FAILED, None, "451", "", F.TEMPORARY),
    ("[doc] 455 maintenance", K.API, 200, 455, "", F.TEMPORARY),
    ("[doc] 500 server error", K.API, 200, 500, "Server Error", F.TEMPORARY),
    ("HTTP 502 bad gateway", K.API, 502, None, "Bad Gateway", F.TEMPORARY),
    ("HTTP 503", K.API, 503, None, "", F.TEMPORARY),
    ("HTTP 504", K.API, 504, None, "Gateway Time-out", F.TEMPORARY),
    ("Cloudflare 520", K.API, 520, None, "error code: 520", F.TEMPORARY),
    ("Cloudflare 522", K.API, 522, None, "error code: 522", F.TEMPORARY),
    ("Cloudflare 524", K.API, 524, None, "error code: 524", F.TEMPORARY),
    ("connect: refused before sending", K.CONNECT, None, None, "connection refused", F.TEMPORARY),
    ("network: connection reset", K.NETWORK, None, None, "connection reset by peer", F.TEMPORARY),
    ("our HTTP timeout (httpx says nothing)", K.TIMEOUT, None, None, "", F.TEMPORARY),
    ("malformed answer", K.MALFORMED, 200, None, "response is not JSON: <html>", F.TEMPORARY),
    ("result download failed", K.DOWNLOAD, 404, None, "result download failed", F.TEMPORARY),
    ("a CDN's 401 on a download is not our key", K.DOWNLOAD, 401, None, "result download failed", F.TEMPORARY),
    ("a CDN's 402 on a download is not our bill", K.NETWORK, 402, None, "", F.TEMPORARY),
]

# KIE 501 "Generation Failed" is final (api-notes §2): refunded with its own message, no blind retry.
GENERATION_FAILED = [
    ("[doc] 501 generation failed", K.TASK_FAILED, None, "501", "Generation Failed", F.GENERATION_FAILED),
    ("[seen] 501 envelope of a failed playground task", K.API, 200, 501, "Playground task failed.",
     F.GENERATION_FAILED),
    ("generation failed with no code", K.TASK_FAILED, None, "", "Generation Failed", F.GENERATION_FAILED),
    ("generation failed inside a longer text is not the 501", K.TASK_FAILED, None, "",
     "Generation failed: upstream busy", F.TEMPORARY),
]

UNKNOWN = [
    ("[fake] teapot", K.API, 200, 418, "I'm a teapot", F.UNKNOWN),
    ("a task failure with no code", K.TASK_FAILED, None, "", "something odd happened", F.UNKNOWN),
    ("a code that is not a number", K.TASK_FAILED, None, "E_ODD", "something odd happened", F.UNKNOWN),
]

CASES = MODERATION + OUR_BUG + BILLING + RATE_LIMIT + TEMPORARY + GENERATION_FAILED + UNKNOWN


@pytest.mark.parametrize(("case", "kind", "status", "code", "message", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_classify(case: str, kind: K, status: int | None, code: int | str | None, message: str,
                  expected: F) -> None:
    err = ProviderError(message, kind=kind, http_status=status, code=code)
    failure = classify(err)
    assert failure.cls is expected, case
    assert failure.text == message  # the raw text reaches the admin alert and the error report


@pytest.mark.parametrize(("code", "status", "reported"), [
    ("402", 200, 402),  # failCode as a string
    (" 433 ", 200, 433),  # with stray spaces
    (200, 429, 429),  # body says 200, the HTTP status tells the truth
    (None, 503, 503),
    ("E_ODD", 502, 502),
])
def test_the_code_in_the_admin_alert_is_the_one_that_decided(code: int | str | None, status: int,
                                                             reported: int) -> None:
    assert classify(ProviderError("x", kind=K.API, http_status=status, code=code)).code == reported


def test_a_download_error_reports_no_code() -> None:
    assert classify(ProviderError("result download failed", kind=K.DOWNLOAD, http_status=401)).code is None


def test_each_class_has_its_retry_schedule_and_alerting() -> None:
    retry = RetryConfig(temporary_delays_s=(1, 2, 3, 4), rate_limit_delays_s=(60, 120))
    assert policy_for(F.TEMPORARY, retry).delays_s == (1, 2, 3, 4)
    assert policy_for(F.UNKNOWN, retry).delays_s == (1, 2, 3, 4)
    assert policy_for(F.RATE_LIMIT, retry).delays_s == (60, 120)
    for no_retry in (F.USER_VIOLATION, F.BILLING, F.OUR_BUG, F.TIMEOUT, F.PHOTO_GONE, F.GENERATION_FAILED):
        assert not policy_for(no_retry, retry).retries
    for alerting in (F.BILLING, F.OUR_BUG):
        assert policy_for(alerting, retry).alert_admins
    for silent in (F.TEMPORARY, F.UNKNOWN, F.RATE_LIMIT, F.USER_VIOLATION, F.TIMEOUT, F.PHOTO_GONE,
                   F.GENERATION_FAILED):
        assert not policy_for(silent, retry).alert_admins


def test_default_retry_schedules() -> None:
    retry = RetryConfig()
    assert policy_for(F.TEMPORARY, retry).delays_s == (5, 10, 20, 40)
    assert policy_for(F.RATE_LIMIT, retry).delays_s == (60, 120, 240)


def test_jitter_spreads_retries_within_its_bounds_and_never_below_zero() -> None:
    assert jittered(10.0, 0.0) == 10.0
    spread = [jittered(10.0, 0.5) for _ in range(200)]
    assert all(5.0 <= d <= 15.0 for d in spread) and len(set(spread)) > 1
    assert all(jittered(10.0, 3.0) >= 0.0 for _ in range(200))
