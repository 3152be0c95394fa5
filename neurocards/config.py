"""Configuration: one TOML file (config.toml documents every key), secrets optionally from the
environment, validated by one frozen pydantic model per section.

A wrong, misspelt or missing key stops the start with one line naming the key (`ConfigError`),
never a traceback. Relative paths are relative to the file.

The bot token and the KIE keys are needed only to run the bot: `load_config(..., online=False)`
(the offline CLI commands: credits, user, stats, backup, restore...) accepts a file without them,
and `Config.require_online()` is the check `neurocards run` gets from `load_config(...)`.

pydantic-settings is not used: its environment source maps one prefix onto the model, while the
environment names here are fixed by deployments (OPENAI_API_KEY has no prefix, the KIE keys are
one comma-separated variable), and a TOML file relative paths must be resolved against is a
plain `tomllib` read.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


class ConfigError(Exception):
    """A configuration problem, phrased for the operator (one line)."""


# TOML already types its values: a number key must not take "10" or true.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # an integer is a float too
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
Delays = tuple[Annotated[float, Strict(), Field(ge=0)], ...]


def _relative_to_file(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str | Path):
        path = Path(value).expanduser()
        base = (info.context or {}).get("base")
        return path if path.is_absolute() or base is None else (base / path).resolve()
    return value


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


def _host_port(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("must look like 127.0.0.1:8085")
    return value


def _clock_time(value: str) -> str:
    if value and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError('must look like "09:00" (24-hour, UTC) or be ""')
    return value


FilePath = Annotated[Path, BeforeValidator(_relative_to_file)]
OptionalPath = Annotated[Path | None, BeforeValidator(_relative_to_file), BeforeValidator(_empty_is_none)]
HostPort = Annotated[str, Strict(), AfterValidator(_host_port)]
NoTrailingSlash = Annotated[str, Strict(), AfterValidator(lambda url: url.rstrip("/"))]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class TelegramConfig(Section):
    # Required to run the bot only (see require_online): offline commands work without it.
    token: SecretStr = SecretStr("")
    api_base: NoTrailingSlash = "https://api.telegram.org"
    admin_ids: tuple[Int, ...] = ()
    support_username: Annotated[Str, AfterValidator(lambda name: name.lstrip("@"))] = ""
    # Without support_username, sellers' support messages are relayed here (a group with the
    # operators; 0: to each of admin_ids). An operator's reply to one goes back to the seller.
    support_chat_id: Int = 0
    # A local Bot API server accepts uploads up to 2000 MB, the cloud one 50 MB.
    max_upload_mb: PositiveInt = 50
    request_timeout_s: PositiveFloat = 60.0
    polling_timeout_s: Int = 30
    # Per-user flood protection: sustained updates per second and the burst allowed on top.
    user_rate_per_s: PositiveFloat = 3.0
    user_burst: PositiveInt = 10
    # Outgoing pacing: messages per second in total (0: off) and a burst per chat per period.
    send_per_s: Float = 30.0
    chat_burst: Int = 3
    chat_period_s: PositiveFloat = 3.0

    @field_validator("token")
    @classmethod
    def _token_shape(cls, token: SecretStr) -> SecretStr:
        if token.get_secret_value() and ":" not in token.get_secret_value():
            raise ValueError("is malformed (expected <bot id>:<secret> from @BotFather)")
        return token


def _key_list(value: Any) -> Any:
    if isinstance(value, list | tuple):
        if not all(isinstance(k, str | SecretStr) for k in value):
            raise ValueError("must be a list of non-empty strings")
        keys = [k.get_secret_value() if isinstance(k, SecretStr) else k for k in value]
        if not all(k.strip() for k in keys):
            raise ValueError("must be a list of non-empty strings")
        return [k.strip() for k in keys]
    return value


def _account_pairs(value: Any) -> Any:
    """``{account = ["key", ...]}`` (as written in config.toml) -> ((key, account), ...)."""
    if not isinstance(value, dict):
        return value
    pairs: list[tuple[str, str]] = []
    for account, keys in value.items():
        if not isinstance(keys, list) or not all(isinstance(k, str) and k.strip() for k in keys):
            raise ValueError(f"kie.accounts.{account} must be a list of API keys")
        pairs.extend((k.strip(), account) for k in keys)
    return pairs


# KIE's list prices in credits per task at the settings the bot sends (5-10 s, 720p, no sound),
# 1 credit = $0.005; config.toml documents them. KIE changes prices: check kie.ai/pricing.
DEFAULT_TASK_COST: tuple[tuple[str, float], ...] = (
    ("veo3_fast", 60.0), ("veo3", 250.0), ("veo3_lite", 30.0),
    ("kling-2.6/image-to-video", 55.0),
    ("sora-2-image-to-video", 30.0), ("sora-2-pro-image-to-video", 150.0),
    ("wan/2-6-image-to-video", 70.0),
    ("hailuo/2-3-image-to-video-standard", 30.0), ("hailuo/2-3-image-to-video-pro", 50.0),
    ("bytedance/v1-pro-fast-image-to-video", 20.0), ("bytedance/seedance-1.5-pro", 30.0),
    ("grok-imagine/image-to-video", 20.0),
    ("default", 60.0),
)


class KieConfig(Section):
    # Required to run the bot with a KIE provider only (see require_online).
    api_keys: Annotated[tuple[SecretStr, ...], BeforeValidator(_key_list)] = ()
    base_url: NoTrailingSlash = "https://api.kie.ai"
    upload_base_url: NoTrailingSlash = "https://kieai.redpandaai.co"
    model: Str = "veo3_fast"
    poll_interval_s: PositiveFloat = 10.0
    timeout_s: PositiveFloat = 900.0
    http_timeout_s: PositiveFloat = 60.0
    callback_url: Str = ""
    callback_secret: SecretStr = SecretStr("")
    callback_listen: HostPort = "127.0.0.1:8085"
    callback_hmac_key: SecretStr = SecretStr("")
    # With callbacks on, polling is only a safety net and can be slow.
    callback_poll_interval_s: PositiveFloat = 60.0
    low_balance_alert: Float = 500.0
    balance_check_interval_s: PositiveFloat = 600.0
    # (key, account) pairs: KIE limits new tasks per account, so keys of one account share a limit.
    accounts: Annotated[tuple[tuple[SecretStr, Str], ...], BeforeValidator(_account_pairs)] = ()
    # What one task costs in KIE credits when KIE does not report creditsConsumed, per model
    # ("default" for models not listed), on top of DEFAULT_TASK_COST. Failed tasks count too.
    task_cost: Annotated[tuple[tuple[Str, NonNegativeFloat], ...],
                         BeforeValidator(lambda v: tuple(v.items()) if isinstance(v, dict) else v)] = ()
    usd_per_credit: NonNegativeFloat = 0.005
    # The low-balance alert also fires when the balance lasts fewer days than this at the recent spend.
    low_balance_days: NonNegativeFloat = 3.0

    @model_validator(mode="before")
    @classmethod
    def _keys_of_accounts(cls, data: Any) -> Any:
        """Keys listed under an account need not be repeated in api_keys; a key listed twice is
        one key. (Malformed lists are left to the field validators, which name the key.)"""
        if not isinstance(data, dict) or not isinstance(data.get("accounts"), dict):
            return data
        try:
            keys = _key_list(list(data.get("api_keys", [])))
            pairs = _account_pairs(data["accounts"])
        except (TypeError, ValueError):
            return data
        return {**data, "api_keys": list(dict.fromkeys([*keys, *(key for key, _ in pairs)]))}

    @model_validator(mode="after")
    def _callbacks(self) -> KieConfig:
        if self.callback_url:
            if not self.callback_url.startswith(("http://", "https://")):
                raise ValueError("kie.callback_url must be an http(s) URL")
        return self

    def task_price(self, model: str) -> float:
        table = dict(DEFAULT_TASK_COST) | dict(self.task_cost)
        return table.get(model, table["default"])

    def key_accounts(self) -> dict[str, str]:
        """Each key of [kie.accounts] -> its account name (for the KIE client)."""
        return {key.get_secret_value(): account for key, account in self.accounts}


class OpsConfig(Section):
    enabled: Bool = True
    listen: HostPort = "127.0.0.1:9108"  # /metrics and /healthz; keep it on loopback
    heartbeat_max_age_s: PositiveFloat = 60.0
    backup_dir: OptionalPath = None  # default: <storage.dir>/backups
    backup_keep: Annotated[int, Strict(), Field(ge=1)] = 7
    backup_interval_h: Float = 24.0  # 0: no scheduled backups
    failure_rate_alert: Float = 0.5  # share of failed videos over 15 min that alerts the admins (0: off)
    failure_rate_min_jobs: PositiveInt = 10
    sentry_dsn: SecretStr = SecretStr("")
    # The owner's daily digest (chart + numbers) to every admin at this UTC time; "" switches it off.
    digest_time: Annotated[str, Strict(), AfterValidator(_clock_time)] = "09:00"


class LimitsConfig(Section):
    """Per-user limits; 0 switches a limit off."""

    videos_per_day: NonNegativeInt = 30
    min_seconds_between_orders: NonNegativeInt = 20
    max_jobs_in_flight: NonNegativeInt = 10


class NetworkConfig(Section):
    proxies_file: OptionalPath = None
    proxy_cooldown_s: PositiveFloat = 300.0
    # All proxies down: go direct (true) or fail the request with a clear error (false).
    proxy_fallback_direct: Bool = True
    # Telegram and OpenAI always use the proxies when there are any; KIE only when asked.
    proxy_for_kie: Bool = False


class OpenAIConfig(Section):
    api_key: SecretStr = SecretStr("")  # one key; api_keys lists several, used in turn
    api_keys: Annotated[tuple[SecretStr, ...], BeforeValidator(_key_list)] = ()
    model: Str = "gpt-4o-mini"
    base_url: Str = ""
    timeout_s: PositiveFloat = 15.0
    # A key answering 429, 403 or 401 is set aside this long; the others go on.
    key_cooldown_s: PositiveFloat = 300.0
    # Admins are alerted when this share of GPT calls failed over 15 minutes (0: off)...
    failure_rate_alert: Annotated[float, Strict(), Field(ge=0, le=1)] = 0.5
    failure_rate_min_calls: PositiveInt = 10  # ...out of at least this many
    # Prices of the model, USD per million tokens (for the cost of a video; gpt-4o-mini's).
    usd_per_1m_input_tokens: NonNegativeFloat = 0.15
    usd_per_1m_output_tokens: NonNegativeFloat = 0.60

    @property
    def keys(self) -> tuple[str, ...]:
        """Every configured key, each once (api_keys first, then api_key)."""
        keys = [k.get_secret_value() for k in self.api_keys] + [self.api_key.get_secret_value()]
        return tuple(dict.fromkeys(k for k in keys if k))


class StorageConfig(Section):
    dir: FilePath = Path("storage")
    database: Path = Field(default=None)  # default: <dir>/neurocards.sqlite3
    retention_days: PositiveInt = 7

    @field_validator("database", mode="before")
    @classmethod
    def _database(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return info.data["dir"] / "neurocards.sqlite3" if "dir" in info.data else None
        return _relative_to_file(value, info)

    @property
    def photos_dir(self) -> Path:
        return self.dir / "photos"

    @property
    def outputs_dir(self) -> Path:
        return self.dir / "outputs"


class CreditsConfig(Section):
    welcome: NonNegativeInt = 10
    per_video: PositiveInt = 10
    # Price per video for a chain entry other than the default, e.g. {"sandbox": 2}.
    per_provider: Annotated[tuple[tuple[Str, PositiveInt], ...],
                            BeforeValidator(lambda v: tuple(v.items()) if isinstance(v, dict) else v)] = ()
    # The seller is warned when the balance covers fewer videos than this (the checklist's "below 3").
    low_balance_videos: NonNegativeInt = 3

    def price(self, provider: str) -> int:
        return dict(self.per_provider).get(provider, self.per_video)


FORMATS = ("9:16", "3:4", "1:1", "16:9")  # the video shapes a seller can choose
Format = Literal["9:16", "3:4", "1:1", "16:9"]
_as_pairs = BeforeValidator(lambda v: tuple(v.items()) if isinstance(v, dict) else v)


class FormatsConfig(Section):
    # Extra credits for a video in a format, on top of the provider's price, e.g. {"16:9" = 2}.
    surcharge: Annotated[tuple[tuple[Format, NonNegativeInt], ...], _as_pairs] = ()
    # Size cap of the delivered file per format in MB (re-encoded when above); the default is
    # telegram.max_upload_mb. Marketplaces differ (Ozon takes 100 MB, Wildberries is unconfirmed).
    max_mb: Annotated[tuple[tuple[Format, PositiveInt], ...], _as_pairs] = ()

    def extra(self, aspect: str | None) -> int:
        return dict(self.surcharge).get(aspect or "", 0)  # type: ignore[call-overload]

    def max_bytes(self, aspect: str | None, default_mb: int) -> int:
        return dict(self.max_mb).get(aspect or "", default_mb) * 1024 * 1024  # type: ignore[call-overload]


class RetryConfig(Section):
    """Backoff schedules in seconds; tests shrink them, the policy stays the same."""

    temporary_delays_s: Delays = (5, 10, 20, 40)
    rate_limit_delays_s: Delays = (60, 120, 240)
    jitter: Float = 0.2
    delivery_delays_s: Delays = (3, 10)
    queue_notice_after_s: Float = 300.0


class DeliveryConfig(Section):
    """Sending a finished (paid) video: keep trying through a Telegram outage before refunding."""

    give_up_after_s: PositiveFloat = 1800.0
    max_delay_s: PositiveFloat = 300.0  # the growing wait between attempts stops growing here
    # The slowest uplink we plan for: the sendVideo timeout grows by file size / this rate.
    min_upload_kbps: PositiveFloat = 1000.0


PROVIDER_NAME = re.compile(r"kie|kie:.*|sandbox")


class GenerationConfig(Section):
    max_parallel: PositiveInt = 50
    prompts_file: OptionalPath = None
    dispatch_interval_s: PositiveFloat = 1.0
    retry: RetryConfig = RetryConfig()
    # Make videos locally with ffmpeg instead of KIE (also `neurocards run --sandbox`).
    sandbox: Bool = False
    providers: tuple[Str, ...] = ("kie",)
    fallback_failures: PositiveInt = 5
    fallback_cooldown_s: PositiveFloat = 300.0

    @model_validator(mode="before")
    @classmethod
    def _sandbox_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("sandbox") is True:
            return {**data, "providers": ["sandbox"]}
        return data

    @field_validator("providers")
    @classmethod
    def _chain(cls, providers: tuple[str, ...]) -> tuple[str, ...]:
        if not providers or not all(PROVIDER_NAME.fullmatch(p) for p in providers):
            raise ValueError('generation.providers must list "kie", "kie:<model>" or "sandbox"')
        return tuple(dict.fromkeys(providers))


class CreditPack(Section):
    # The id travels in callback data and in the invoice payload: short and plain.
    id: Annotated[Str, Field(pattern=r"^[A-Za-z0-9_-]{1,16}$")]
    credits: PositiveInt
    stars: PositiveInt
    # It becomes the invoice title, which Telegram limits to 32 characters.
    label: Annotated[Str, Field(max_length=32)] = ""

    @model_validator(mode="before")
    @classmethod
    def _default_label(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("label") and isinstance(data.get("credits"), int):
            return {**data, "label": f"{data['credits']} кредитов"}
        return data


class PaymentsConfig(Section):
    packs: Annotated[tuple[CreditPack, ...], Field(min_length=1)] = (
        CreditPack(id="s", credits=50, stars=50),
        CreditPack(id="m", credits=120, stars=100),
        CreditPack(id="l", credits=300, stars=225),
    )
    # An admin refund of a payment whose credits were partly spent: "refuse" it, or
    # "allow" it (the Stars go back, only the credits that are left are removed).
    refund_when_spent: Literal["refuse", "allow"] = "refuse"
    terms_text: Annotated[Str, AfterValidator(str.strip)] = ""
    # What the bot gets for one Telegram Star, USD (for the margin per video in the stats).
    usd_per_star: NonNegativeFloat = 0.013

    @field_validator("packs")
    @classmethod
    def _unique_ids(cls, packs: tuple[CreditPack, ...]) -> tuple[CreditPack, ...]:
        ids = [p.id for p in packs]
        if twice := next((i for i in ids if ids.count(i) > 1), None):
            raise ValueError(f"id {twice!r} is used twice")
        return packs

    def pack(self, pack_id: str) -> CreditPack | None:
        return next((p for p in self.packs if p.id == pack_id), None)


class ReferralsConfig(Section):
    bonus_credits: NonNegativeInt = 20
    bonus_on: Literal["first_payment", "first_video"] = "first_payment"


class BroadcastConfig(Section):
    # Broadcast messages per second at most; they also yield to every other send.
    per_s: PositiveFloat = 20.0
    progress_every_s: PositiveFloat = 5.0  # how often the admin's progress message is edited


class OrdersConfig(Section):
    # An album's photos come as separate updates: it is answered once the chat is quiet this long.
    album_settle_s: PositiveFloat = 1.5
    # The live status message: at most one edit per message per this many seconds.
    status_edit_interval_s: PositiveFloat = 5.0
    # How often open orders are looked at (a job's state change also wakes the status at once).
    status_tick_s: PositiveFloat = 1.0


class Config(Section):
    path: Path  # the file itself (set by load_config)
    telegram: TelegramConfig = TelegramConfig()
    kie: KieConfig = KieConfig()
    openai: OpenAIConfig = OpenAIConfig()
    storage: StorageConfig = Field(default_factory=dict)  # type: ignore[assignment]  # validated: paths need the file
    credits: CreditsConfig = CreditsConfig()
    generation: GenerationConfig = GenerationConfig()
    network: NetworkConfig = NetworkConfig()
    limits: LimitsConfig = LimitsConfig()
    ops: OpsConfig = OpsConfig()
    broadcast: BroadcastConfig = BroadcastConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    formats: FormatsConfig = FormatsConfig()
    payments: PaymentsConfig = PaymentsConfig()
    referrals: ReferralsConfig = ReferralsConfig()
    orders: OrdersConfig = OrdersConfig()

    @model_validator(mode="before")
    @classmethod
    def _backups_next_to_storage(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        ops, storage = data.get("ops", {}), data.get("storage", {})
        if not isinstance(ops, dict) or not isinstance(storage, dict) or "backup_dir" in ops:
            return data
        storage_dir = storage.get("dir", StorageConfig.model_fields["dir"].default)
        if not isinstance(storage_dir, str | Path):
            return data
        return {**data, "ops": {**ops, "backup_dir": Path(storage_dir) / "backups"}}

    @property
    def sandbox(self) -> bool:
        return self.generation.sandbox

    def require_online(self) -> None:
        """What running the bot needs on top of a valid file: the bot token, KIE keys when the chain
        uses KIE, and the callback secret when callbacks are on. Raises ConfigError."""
        if not self.telegram.token.get_secret_value():
            raise ConfigError("config: telegram.token is missing or malformed (or set NEUROCARDS_TELEGRAM_TOKEN)")
        if any(p.startswith("kie") for p in self.generation.providers) and not self.kie.api_keys:
            raise ConfigError("config: kie.api_keys is empty (or set NEUROCARDS_KIE_API_KEYS, or run with --sandbox)")
        if self.kie.callback_url and len(self.kie.callback_secret.get_secret_value()) < 16:
            raise ConfigError("config: kie.callback_secret must be set (16+ characters) when kie.callback_url is set"
                              " (or set NEUROCARDS_KIE_CALLBACK_SECRET)")


# Secrets the environment may set instead of the file (a set variable wins over the file).
ENV_OVERRIDES = {
    "NEUROCARDS_TELEGRAM_TOKEN": ("telegram", "token"),
    "NEUROCARDS_KIE_CALLBACK_SECRET": ("kie", "callback_secret"),
    "NEUROCARDS_KIE_HMAC_KEY": ("kie", "callback_hmac_key"),
    "OPENAI_API_KEY": ("openai", "api_key"),
    "NEUROCARDS_SENTRY_DSN": ("ops", "sentry_dsn"),
}


def _apply_environment(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for variable, (section, key) in ENV_OVERRIDES.items():
        if env.get(variable) and isinstance(raw.setdefault(section, {}), dict):
            raw[section][key] = env[variable]
    keys = [k.strip() for k in env.get("NEUROCARDS_KIE_API_KEYS", "").split(",") if k.strip()]
    if keys and isinstance(raw.setdefault("kie", {}), dict):
        raw["kie"]["api_keys"] = keys
    openai_keys = [k.strip() for k in env.get("OPENAI_API_KEYS", "").split(",") if k.strip()]
    if openai_keys and isinstance(raw.setdefault("openai", {}), dict):
        raw["openai"]["api_keys"] = openai_keys


def _one_line(exc: ValidationError) -> ConfigError:
    """The first problem, named by its key: `config: credits.per_video: Input should be ...`."""
    error = exc.errors(include_url=False, include_input=False)[0]
    key = ""
    for part in error["loc"]:
        if isinstance(part, str) and ("[" in part or "(" in part):  # pydantic's own step, e.g. a union member
            continue
        key += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return ConfigError(f"config: unknown key {key} (a typo? config.toml lists every key)")
    if error["type"] == "missing":
        return ConfigError(f"config: missing key {key}")
    if not key or message.startswith(key):  # a rule that names its keys itself
        return ConfigError(f"config: {message}")
    return ConfigError(f"config: {key} {message}" if message[:1].islower() else f"config: {key}: {message}")


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *,
                sandbox: bool = False, online: bool = True) -> Config:
    """Read and validate the file. `online`: also require what running the bot needs
    (`Config.require_online`); offline CLI commands pass False."""
    env = os.environ if env is None else env
    cfg_path = Path(path).resolve()
    try:
        raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config: file not found: {cfg_path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {cfg_path.name} is not valid TOML: {exc}") from None
    if "path" in raw:
        raise ConfigError("config: unknown key path (a typo? config.toml lists every key)")
    _apply_environment(raw, env)
    if sandbox and isinstance(raw.setdefault("generation", {}), dict):
        raw["generation"]["sandbox"] = True
    try:
        config = Config.model_validate({**raw, "path": cfg_path}, context={"base": cfg_path.parent})
    except ValidationError as exc:
        raise _one_line(exc) from None
    if online:
        config.require_online()
    return config
