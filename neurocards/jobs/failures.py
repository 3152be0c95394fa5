"""Every provider error becomes exactly one failure class, by one table.

To teach the bot a new error text, add one `Rule` line to `RULES`. Rules are
tried top to bottom; the first that matches wins, so specific texts (policy
violations hidden behind a 422 or 500) come before broad status codes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from enum import StrEnum

from neurocards.config import RetryConfig
from neurocards.providers.base import ErrorKind, ProviderError


class FailureClass(StrEnum):
    USER_VIOLATION = "user_violation"  # the photo or prompt is not acceptable upstream
    TEMPORARY = "temporary"  # the same request may well succeed later
    RATE_LIMIT = "rate_limit"  # the account is over its request rate
    BILLING = "billing"  # the key cannot pay (out of credits, revoked, capped)
    OUR_BUG = "our_bug"  # our request is wrong; retrying cannot help
    UNKNOWN = "unknown"  # not seen before: retried like temporary, logged raw
    GENERATION_FAILED = "generation_failed"  # KIE 501: the model could not make this video
    TIMEOUT = "timeout"  # the task ran past kie.timeout_s (never resubmitted)
    PHOTO_GONE = "photo_gone"  # the stored product photo no longer exists


@dataclass(frozen=True)
class Rule:
    failure: FailureClass
    codes: frozenset[int] = frozenset()
    kinds: frozenset[ErrorKind] = frozenset()
    text: re.Pattern[str] | None = None

    def matches(self, err: ProviderError, code: int | None) -> bool:
        if self.codes and code not in self.codes:
            return False
        if self.kinds and err.kind not in self.kinds:
            return False
        if self.text is not None and not self.text.search(err.message or ""):  # pragma: no mutate - equivalent: no rule matches "XXXX" either
            return False
        return bool(self.codes or self.kinds or self.text)


def _rule(failure: FailureClass, *, codes: tuple[int, ...] = (), kinds: tuple[ErrorKind, ...] = (),
          text: str | None = None) -> Rule:  # pragma: no mutate block - runs at import, before mutmut switches a mutant on; tools/mutation.py --rules mutates the table it builds
    return Rule(failure, frozenset(codes), frozenset(kinds), re.compile(text, re.I) if text else None)


U, T, R, B, BUG = (FailureClass.USER_VIOLATION, FailureClass.TEMPORARY, FailureClass.RATE_LIMIT,
                 FailureClass.BILLING, FailureClass.OUR_BUG)
NET = (ErrorKind.CONNECT, ErrorKind.NETWORK, ErrorKind.TIMEOUT, ErrorKind.MALFORMED, ErrorKind.DOWNLOAD)

RULES: tuple[Rule, ...] = (
    # Content moderation, whatever status carries it.
    _rule(U, text=r"flagged|violat|guardrail|content polic|prohibited|nsfw|nudity|sexual"),
    _rule(U, text=r"public error minor|unsafe image|minor upload"),  # "public error prominent people": next
    _rule(U, text=r"prominent people|third[- ]party content|faces? of (real )?(humans|people)|celebrit"),
    _rule(U, text=r"\bpolicy\b"),
    _rule(U, text=r"unsupported image|invalid image|cannot identify image|image (is )?corrupt|decode image"),
    # Our own request is wrong.
    _rule(BUG, text=r"page does not exist or is not published"),
    _rule(BUG, text=r"only english prompts"),
    _rule(BUG, codes=(422, 505)),
    _rule(BUG, codes=(400,), kinds=(ErrorKind.API,)),
    # Money and keys.
    _rule(B, codes=(401, 402, 433)),
    _rule(B, text=r"credits are insufficient|insufficient credits|top up"),
    # Rate limiting: KIE drops the request, it does not queue it.
    _rule(R, codes=(429,)),
    # KIE 501 "Generation Failed": final, refunded with its own message (api-notes §2).
    _rule(FailureClass.GENERATION_FAILED, codes=(501,)),
    _rule(FailureClass.GENERATION_FAILED, text=r"^generation failed$"),
    # Transient upstream trouble.
    _rule(T, text=r"internal error|timed? ?out|try again|temporar|busy|overload|unavailable"),
    _rule(T, text=r"failed to fetch the image"),
    _rule(T, codes=(451, 455, 500, 502, 503, 504, 520, 522, 524)),
    _rule(T, kinds=NET),
)


@dataclass(frozen=True)
class Failure:
    cls: FailureClass
    text: str
    code: int | None = None


def _as_int(value: int | str | None) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def classify(err: ProviderError) -> Failure:
    # A task failure carries its own failCode; otherwise the body code, then the HTTP status.
    code = _as_int(err.code)
    if code is None or code == 200:
        code = err.http_status
    if err.kind not in (ErrorKind.API, ErrorKind.TASK_FAILED):
        code = None  # a CDN's 401 on a result download says nothing about our KIE key
    for rule in RULES:
        if rule.matches(err, code):
            return Failure(rule.failure, err.message, code)
    return Failure(FailureClass.UNKNOWN, err.message, code)


@dataclass(frozen=True)
class RetryPolicy:
    delays_s: tuple[float, ...]  # one entry per allowed retry
    alert_admins: bool = False

    @property
    def retries(self) -> bool:
        return bool(self.delays_s)


def jittered(delay: float, jitter: float) -> float:
    """Spread retries so that jobs failing together do not come back together."""
    return max(0.0, delay * (1 + random.uniform(-jitter, jitter)))  # pragma: no mutate - equivalent: the jitter is symmetric, "1 -" draws from the same range


def policy_for(failure: FailureClass, retry: RetryConfig) -> RetryPolicy:
    if failure in (FailureClass.TEMPORARY, FailureClass.UNKNOWN):
        return RetryPolicy(retry.temporary_delays_s)
    if failure is FailureClass.RATE_LIMIT:
        return RetryPolicy(retry.rate_limit_delays_s)
    if failure in (FailureClass.BILLING, FailureClass.OUR_BUG):
        return RetryPolicy((), alert_admins=True)  # pragma: no mutate - equivalent: None and () both mean "no retry" (retries is read first)
    return RetryPolicy(())  # pragma: no mutate - equivalent: None and () both mean "no retry" (retries is read first)
