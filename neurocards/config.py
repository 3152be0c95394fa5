"""Configuration: one TOML file, secrets optionally from the environment.

A wrong or missing key stops the start with one line naming the key
(`ConfigError`), never a traceback. Relative paths are relative to the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem, phrased for the operator (one line)."""


@dataclass(frozen=True)
class TelegramConfig:
    token: str
    api_base: str = "https://api.telegram.org"
    admin_ids: tuple[int, ...] = ()
    support_username: str = ""
    # A local Bot API server accepts uploads up to 2000 MB, the cloud one 50 MB.
    max_upload_mb: int = 50
    request_timeout_s: float = 60.0
    polling_timeout_s: int = 30
    # Per-user flood protection: sustained updates per second and the burst allowed on top.
    user_rate_per_s: float = 3.0
    user_burst: int = 10
    # Outgoing pacing: messages per second in total (0: off) and a burst per chat per period.
    send_per_s: float = 30.0
    chat_burst: int = 3
    chat_period_s: float = 3.0


@dataclass(frozen=True)
class KieConfig:
    api_keys: tuple[str, ...]
    base_url: str = "https://api.kie.ai"
    upload_base_url: str = "https://kieai.redpandaai.co"
    model: str = "veo3_fast"
    poll_interval_s: float = 10.0
    timeout_s: float = 900.0
    http_timeout_s: float = 60.0
    callback_url: str = ""
    callback_secret: str = ""
    callback_listen: str = "127.0.0.1:8085"
    callback_hmac_key: str = ""
    # With callbacks on, polling is only a safety net and can be slow.
    callback_poll_interval_s: float = 60.0
    low_balance_alert: float = 500.0
    balance_check_interval_s: float = 600.0
    # (key, account) pairs: KIE limits new tasks per account, so keys of one account share a limit.
    accounts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OpsConfig:
    enabled: bool = True
    listen: str = "127.0.0.1:9108"  # /metrics and /healthz; keep it on loopback
    heartbeat_max_age_s: float = 60.0
    backup_dir: Path | None = None
    backup_keep: int = 7
    backup_interval_h: float = 24.0  # 0: no scheduled backups
    failure_rate_alert: float = 0.5  # share of failed videos over 15 min that alerts the admins (0: off)
    failure_rate_min_jobs: int = 10
    sentry_dsn: str = ""


@dataclass(frozen=True)
class LimitsConfig:
    """Per-user limits; 0 switches a limit off."""

    videos_per_day: int = 30
    min_seconds_between_orders: int = 20
    max_jobs_in_flight: int = 10


@dataclass(frozen=True)
class NetworkConfig:
    proxies_file: Path | None = None
    proxy_cooldown_s: float = 300.0
    # All proxies down: go direct (true) or fail the request with a clear error (false).
    proxy_fallback_direct: bool = True
    # Telegram and OpenAI always use the proxies when there are any; KIE only when asked.
    proxy_for_kie: bool = False


@dataclass(frozen=True)
class OpenAIConfig:
    api_key: str = ""
    model: str = "gpt-4o-mini"
    base_url: str = ""
    timeout_s: float = 15.0


@dataclass(frozen=True)
class StorageConfig:
    dir: Path
    database: Path
    retention_days: int = 7

    @property
    def photos_dir(self) -> Path:
        return self.dir / "photos"

    @property
    def outputs_dir(self) -> Path:
        return self.dir / "outputs"


@dataclass(frozen=True)
class CreditsConfig:
    welcome: int = 10
    per_video: int = 10
    # Price per video for a chain entry other than the default, e.g. {"sandbox": 2}.
    per_provider: tuple[tuple[str, int], ...] = ()
    # The seller is warned when the balance covers fewer videos than this (the checklist's "below 3").
    low_balance_videos: int = 3

    def price(self, provider: str) -> int:
        return dict(self.per_provider).get(provider, self.per_video)


@dataclass(frozen=True)
class RetryConfig:
    """Backoff schedules in seconds; tests shrink them, the policy stays the same."""

    temporary_delays_s: tuple[float, ...] = (5, 10, 20, 40)
    rate_limit_delays_s: tuple[float, ...] = (60, 120, 240)
    jitter: float = 0.2
    delivery_delays_s: tuple[float, ...] = (3, 10)
    queue_notice_after_s: float = 300.0


@dataclass(frozen=True)
class GenerationConfig:
    max_parallel: int = 50
    prompts_file: Path | None = None
    dispatch_interval_s: float = 1.0
    retry: RetryConfig = field(default_factory=RetryConfig)
    providers: tuple[str, ...] = ("kie",)
    fallback_failures: int = 5
    fallback_cooldown_s: float = 300.0


@dataclass(frozen=True)
class BroadcastConfig:
    # Broadcast messages per second at most; they also yield to every other send.
    per_s: float = 20.0
    progress_every_s: float = 5.0  # how often the admin's progress message is edited


@dataclass(frozen=True)
class Config:
    path: Path
    telegram: TelegramConfig
    kie: KieConfig
    openai: OpenAIConfig
    storage: StorageConfig
    credits: CreditsConfig
    generation: GenerationConfig
    network: NetworkConfig = field(default_factory=NetworkConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)
    broadcast: BroadcastConfig = field(default_factory=BroadcastConfig)
    sandbox: bool = False
    # lambdas: the two classes are defined further down, next to their parsing.
    payments: PaymentsConfig = field(default_factory=lambda: PaymentsConfig())
    referrals: ReferralsConfig = field(default_factory=lambda: ReferralsConfig())


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"config: [{name}] must be a table")
    return value


def _get(sec: dict[str, Any], section: str, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in sec:
        if default is ...:
            raise ConfigError(f"config: missing key {section}.{key}")
        return default
    value = sec[key]
    # bool is an int in Python; a number key must not accept true/false.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"config: {section}.{key} has the wrong type")
    if not isinstance(value, kind):
        raise ConfigError(f"config: {section}.{key} has the wrong type")
    return value


def _positive(value: float, name: str) -> float:
    if value <= 0:
        raise ConfigError(f"config: {name} must be greater than 0")
    return value


def _delays(sec: dict[str, Any], section: str, key: str, default: tuple[float, ...]) -> tuple[float, ...]:
    value = _get(sec, section, key, list, list(default))
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ConfigError(f"config: {section}.{key} must be a list of non-negative numbers")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class CreditPack:
    id: str
    credits: int
    stars: int
    label: str


DEFAULT_PACKS = (
    CreditPack("s", 50, 50, "50 кредитов"),
    CreditPack("m", 120, 100, "120 кредитов"),
    CreditPack("l", 300, 225, "300 кредитов"),
)
REFUND_POLICIES = ("refuse", "allow")
REFERRAL_TRIGGERS = ("first_payment", "first_video")


@dataclass(frozen=True)
class PaymentsConfig:
    packs: tuple[CreditPack, ...] = DEFAULT_PACKS
    # An admin refund of a payment whose credits were partly spent: "refuse" it, or
    # "allow" it (the Stars go back, only the credits that are left are removed).
    refund_when_spent: str = "refuse"
    terms_text: str = ""

    def pack(self, pack_id: str) -> CreditPack | None:
        return next((p for p in self.packs if p.id == pack_id), None)


@dataclass(frozen=True)
class ReferralsConfig:
    bonus_credits: int = 20
    bonus_on: str = "first_payment"  # first_payment | first_video


def _packs(sec: dict[str, Any]) -> tuple[CreditPack, ...]:
    raw = _get(sec, "payments", "packs", list, None)
    if raw is None:
        return DEFAULT_PACKS
    if not raw:
        raise ConfigError("config: payments.packs must list at least one pack")
    packs: list[CreditPack] = []
    for number, item in enumerate(raw, start=1):
        name = f"payments.packs[{number}]"
        if not isinstance(item, dict):
            raise ConfigError(f"config: {name} must be a table {{id, credits, stars, label}}")
        pack_id = _get(item, name, "id", str)
        # The id travels in callback data and in the invoice payload: short and plain.
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", pack_id):
            raise ConfigError(f"config: {name}.id must be 1-16 letters, digits, _ or -")
        if any(p.id == pack_id for p in packs):
            raise ConfigError(f"config: {name}.id {pack_id!r} is used twice")
        credits = int(_positive(_get(item, name, "credits", int), f"{name}.credits"))
        label = _get(item, name, "label", str, "") or f"{credits} кредитов"
        if len(label) > 32:  # it becomes the invoice title, which Telegram limits to 32
            raise ConfigError(f"config: {name}.label must be at most 32 characters")
        packs.append(CreditPack(id=pack_id, credits=credits, label=label,
                                stars=int(_positive(_get(item, name, "stars", int), f"{name}.stars"))))
    return tuple(packs)


def _payments(raw: dict[str, Any]) -> tuple[PaymentsConfig, ReferralsConfig]:
    pay = _section(raw, "payments")
    policy = _get(pay, "payments", "refund_when_spent", str, "refuse")
    if policy not in REFUND_POLICIES:
        raise ConfigError('config: payments.refund_when_spent must be "refuse" or "allow"')
    payments = PaymentsConfig(packs=_packs(pay), refund_when_spent=policy,
                              terms_text=_get(pay, "payments", "terms_text", str, "").strip())
    ref = _section(raw, "referrals")
    bonus = _get(ref, "referrals", "bonus_credits", int, 20)
    if bonus < 0:
        raise ConfigError("config: referrals.bonus_credits must not be negative")
    bonus_on = _get(ref, "referrals", "bonus_on", str, "first_payment")
    if bonus_on not in REFERRAL_TRIGGERS:
        raise ConfigError('config: referrals.bonus_on must be "first_payment" or "first_video"')
    return payments, ReferralsConfig(bonus_credits=bonus, bonus_on=bonus_on)


def _low_balance_videos(cr: dict[str, Any]) -> int:
    value = _get(cr, "credits", "low_balance_videos", int, 3)
    if value < 0:
        raise ConfigError("config: credits.low_balance_videos must not be negative")
    return value


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None, *,
                sandbox: bool = False) -> Config:
    env = dict(os.environ) if env is None else env
    cfg_path = Path(path).resolve()
    try:
        raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config: file not found: {cfg_path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {cfg_path.name} is not valid TOML: {exc}") from None
    base = cfg_path.parent

    def rel(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (base / q).resolve()

    tg = _section(raw, "telegram")
    token = env.get("NEUROCARDS_TELEGRAM_TOKEN") or _get(tg, "telegram", "token", str, "")
    if not token or ":" not in token:
        raise ConfigError("config: telegram.token is missing or malformed (or set NEUROCARDS_TELEGRAM_TOKEN)")
    admin_ids = _get(tg, "telegram", "admin_ids", list, [])
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in admin_ids):
        raise ConfigError("config: telegram.admin_ids must be a list of numeric Telegram user ids")
    telegram = TelegramConfig(
        token=token,
        api_base=_get(tg, "telegram", "api_base", str, TelegramConfig.api_base).rstrip("/"),
        admin_ids=tuple(admin_ids),
        support_username=_get(tg, "telegram", "support_username", str, "").lstrip("@"),
        max_upload_mb=int(_positive(_get(tg, "telegram", "max_upload_mb", int, 50), "telegram.max_upload_mb")),
        request_timeout_s=float(_positive(_get(tg, "telegram", "request_timeout_s", (int, float), 60.0), "telegram.request_timeout_s")),
        polling_timeout_s=int(_get(tg, "telegram", "polling_timeout_s", int, 30)),
        user_rate_per_s=float(_positive(_get(tg, "telegram", "user_rate_per_s", (int, float), 3.0), "telegram.user_rate_per_s")),
        user_burst=int(_positive(_get(tg, "telegram", "user_burst", int, 10), "telegram.user_burst")),
        send_per_s=float(_get(tg, "telegram", "send_per_s", (int, float), 30.0)),
        chat_burst=int(_get(tg, "telegram", "chat_burst", int, 3)),
        chat_period_s=float(_positive(_get(tg, "telegram", "chat_period_s", (int, float), 3.0), "telegram.chat_period_s")),
    )

    kie_sec = _section(raw, "kie")
    env_keys = env.get("NEUROCARDS_KIE_API_KEYS", "")
    keys = [k.strip() for k in env_keys.split(",") if k.strip()] if env_keys else _get(kie_sec, "kie", "api_keys", list, [])
    if not all(isinstance(k, str) and k.strip() for k in keys):
        raise ConfigError("config: kie.api_keys must be a list of non-empty strings")
    accounts_raw = _get(kie_sec, "kie", "accounts", dict, {})
    accounts: list[tuple[str, str]] = []
    for account, account_keys in accounts_raw.items():
        if not isinstance(account_keys, list) or not all(isinstance(k, str) and k.strip() for k in account_keys):
            raise ConfigError(f"config: kie.accounts.{account} must be a list of API keys")
        accounts.extend((k.strip(), account) for k in account_keys)
    keys = list(dict.fromkeys([*(k.strip() for k in keys), *(k for k, _ in accounts)]))
    sandbox = sandbox or bool(_get(_section(raw, "generation"), "generation", "sandbox", bool, False))
    kie = KieConfig(
        api_keys=tuple(keys),
        base_url=_get(kie_sec, "kie", "base_url", str, KieConfig.base_url).rstrip("/"),
        upload_base_url=_get(kie_sec, "kie", "upload_base_url", str, KieConfig.upload_base_url).rstrip("/"),
        model=_get(kie_sec, "kie", "model", str, KieConfig.model),
        poll_interval_s=float(_positive(_get(kie_sec, "kie", "poll_interval_s", (int, float), 10.0), "kie.poll_interval_s")),
        timeout_s=float(_positive(_get(kie_sec, "kie", "timeout_s", (int, float), 900.0), "kie.timeout_s")),
        http_timeout_s=float(_positive(_get(kie_sec, "kie", "http_timeout_s", (int, float), 60.0), "kie.http_timeout_s")),
        callback_url=_get(kie_sec, "kie", "callback_url", str, ""),
        callback_secret=env.get("NEUROCARDS_KIE_CALLBACK_SECRET") or _get(kie_sec, "kie", "callback_secret", str, ""),
        callback_listen=_get(kie_sec, "kie", "callback_listen", str, "127.0.0.1:8085"),
        callback_hmac_key=env.get("NEUROCARDS_KIE_HMAC_KEY") or _get(kie_sec, "kie", "callback_hmac_key", str, ""),
        callback_poll_interval_s=float(_positive(_get(kie_sec, "kie", "callback_poll_interval_s", (int, float), 60.0), "kie.callback_poll_interval_s")),
        low_balance_alert=float(_get(kie_sec, "kie", "low_balance_alert", (int, float), 500.0)),
        balance_check_interval_s=float(_positive(_get(kie_sec, "kie", "balance_check_interval_s", (int, float), 600.0), "kie.balance_check_interval_s")),
        accounts=tuple(accounts),
    )
    if kie.callback_url:
        if not kie.callback_url.startswith(("http://", "https://")):
            raise ConfigError("config: kie.callback_url must be an http(s) URL")
        if len(kie.callback_secret) < 16:
            raise ConfigError("config: kie.callback_secret must be set (16+ characters) when kie.callback_url is set")
        host, _, port = kie.callback_listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError("config: kie.callback_listen must look like 127.0.0.1:8085")

    oa = _section(raw, "openai")
    openai = OpenAIConfig(
        api_key=env.get("OPENAI_API_KEY") or _get(oa, "openai", "api_key", str, ""),
        model=_get(oa, "openai", "model", str, OpenAIConfig.model),
        base_url=_get(oa, "openai", "base_url", str, ""),
        timeout_s=float(_positive(_get(oa, "openai", "timeout_s", (int, float), 15.0), "openai.timeout_s")),
    )

    st = _section(raw, "storage")
    storage_dir = rel(_get(st, "storage", "dir", str, "storage"))
    storage = StorageConfig(
        dir=storage_dir,
        database=rel(_get(st, "storage", "database", str, str(storage_dir / "neurocards.sqlite3"))),
        retention_days=int(_positive(_get(st, "storage", "retention_days", int, 7), "storage.retention_days")),
    )

    cr = _section(raw, "credits")
    welcome = _get(cr, "credits", "welcome", int, 10)
    if welcome < 0:
        raise ConfigError("config: credits.welcome must not be negative")
    per_provider = _get(cr, "credits", "per_provider", dict, {})
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in per_provider.values()):
        raise ConfigError("config: credits.per_provider values must be positive integers")
    credits = CreditsConfig(
        welcome=welcome,
        per_video=int(_positive(_get(cr, "credits", "per_video", int, 10), "credits.per_video")),
        per_provider=tuple(per_provider.items()),
        low_balance_videos=_low_balance_videos(cr),
    )

    gen = _section(raw, "generation")
    rt = _section(gen, "retry") if "retry" in gen else {}
    retry = RetryConfig(
        temporary_delays_s=_delays(rt, "generation.retry", "temporary_delays_s", RetryConfig.temporary_delays_s),
        rate_limit_delays_s=_delays(rt, "generation.retry", "rate_limit_delays_s", RetryConfig.rate_limit_delays_s),
        jitter=float(_get(rt, "generation.retry", "jitter", (int, float), 0.2)),
        delivery_delays_s=_delays(rt, "generation.retry", "delivery_delays_s", RetryConfig.delivery_delays_s),
        queue_notice_after_s=float(_get(rt, "generation.retry", "queue_notice_after_s", (int, float), 300.0)),
    )
    prompts = _get(gen, "generation", "prompts_file", str, "")
    providers = _get(gen, "generation", "providers", list, ["kie"])
    if sandbox:
        providers = ["sandbox"]
    if not providers or not all(isinstance(p, str) and (p in ("kie", "sandbox") or p.startswith("kie:"))
                                for p in providers):
        raise ConfigError('config: generation.providers must list "kie", "kie:<model>" or "sandbox"')
    if any(p.startswith("kie") for p in providers) and not keys:
        raise ConfigError("config: kie.api_keys is empty (or set NEUROCARDS_KIE_API_KEYS, or run with --sandbox)")
    generation = GenerationConfig(
        max_parallel=int(_positive(_get(gen, "generation", "max_parallel", int, 50), "generation.max_parallel")),
        prompts_file=rel(prompts) if prompts else None,
        dispatch_interval_s=float(_positive(_get(gen, "generation", "dispatch_interval_s", (int, float), 1.0), "generation.dispatch_interval_s")),
        retry=retry,
        providers=tuple(dict.fromkeys(providers)),
        fallback_failures=int(_positive(_get(gen, "generation", "fallback_failures", int, 5), "generation.fallback_failures")),
        fallback_cooldown_s=float(_positive(_get(gen, "generation", "fallback_cooldown_s", (int, float), 300.0), "generation.fallback_cooldown_s")),
    )
    net = _section(raw, "network")
    proxies_file = _get(net, "network", "proxies_file", str, "")
    network = NetworkConfig(
        proxies_file=rel(proxies_file) if proxies_file else None,
        proxy_cooldown_s=float(_positive(_get(net, "network", "proxy_cooldown_s", (int, float), 300.0), "network.proxy_cooldown_s")),
        proxy_fallback_direct=bool(_get(net, "network", "proxy_fallback_direct", bool, True)),
        proxy_for_kie=bool(_get(net, "network", "proxy_for_kie", bool, False)),
    )
    lim = _section(raw, "limits")

    def _limit(key: str, default: int) -> int:
        value = _get(lim, "limits", key, int, default)
        if value < 0:
            raise ConfigError(f"config: limits.{key} must not be negative")
        return value

    limits = LimitsConfig(
        videos_per_day=_limit("videos_per_day", 30),
        min_seconds_between_orders=_limit("min_seconds_between_orders", 20),
        max_jobs_in_flight=_limit("max_jobs_in_flight", 10),
    )
    payments, referrals = _payments(raw)
    ops_sec = _section(raw, "ops")
    listen = _get(ops_sec, "ops", "listen", str, "127.0.0.1:9108")
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("config: ops.listen must look like 127.0.0.1:9108")
    backup_keep = _get(ops_sec, "ops", "backup_keep", int, 7)
    if backup_keep < 1:
        raise ConfigError("config: ops.backup_keep must be at least 1")
    ops = OpsConfig(
        enabled=bool(_get(ops_sec, "ops", "enabled", bool, True)),
        listen=listen,
        heartbeat_max_age_s=float(_positive(_get(ops_sec, "ops", "heartbeat_max_age_s", (int, float), 60.0), "ops.heartbeat_max_age_s")),
        backup_dir=rel(_get(ops_sec, "ops", "backup_dir", str, str(storage_dir / "backups"))),
        backup_keep=backup_keep,
        backup_interval_h=float(_get(ops_sec, "ops", "backup_interval_h", (int, float), 24.0)),
        failure_rate_alert=float(_get(ops_sec, "ops", "failure_rate_alert", (int, float), 0.5)),
        failure_rate_min_jobs=int(_positive(_get(ops_sec, "ops", "failure_rate_min_jobs", int, 10), "ops.failure_rate_min_jobs")),
        sentry_dsn=env.get("NEUROCARDS_SENTRY_DSN") or _get(ops_sec, "ops", "sentry_dsn", str, ""),
    )
    bc = _section(raw, "broadcast")
    broadcast = BroadcastConfig(
        per_s=float(_positive(_get(bc, "broadcast", "per_s", (int, float), 20.0), "broadcast.per_s")),
        progress_every_s=float(_positive(_get(bc, "broadcast", "progress_every_s", (int, float), 5.0),
                                         "broadcast.progress_every_s")),
    )
    return Config(
        path=cfg_path,
        broadcast=broadcast,
        ops=ops,
        payments=payments,
        referrals=referrals,
        network=network,
        limits=limits,
        telegram=telegram,
        kie=kie,
        openai=openai,
        storage=storage,
        credits=credits,
        generation=generation,
        sandbox=sandbox,
    )
