"""`neurocards doctor`: everything an operator can get wrong, one line per check with the fix.

Each check is ✓ (fine), ! (works, but look at it), ✗ (the bot will not work as configured) or
– (not applicable here). `--json` gives the same list for monitoring; the exit code is 1 when
any check failed. `--offline` skips the checks that need the network (token, KIE, OpenAI,
proxies, callback URL).
"""

from __future__ import annotations

import pwd
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from neurocards.config import Config
from neurocards.store.costs import kie_daily_spend_readonly
from neurocards.store.schema import MIGRATIONS

Status = Literal["ok", "warn", "fail", "skip"]
MARKS: dict[str, str] = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "–"}
DEFAULT_UNIT = Path("/etc/systemd/system/neurocards.service")
MIN_FREE_BYTES = 2 * 1024**3  # a day of videos at a busy shop, and room for a backup
NETWORK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" → {self.fix}" if self.fix and self.status in ("fail", "warn") else ""
        return f"{MARKS[self.status]} {self.name}: {self.detail}{fix}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.status != "fail"}


def _key_label(key: str) -> str:
    return f"…{key[-4:]}" if len(key) > 8 else "…"


# ---- configuration and files (no network) ------------------------------------------------------


def config_checks(config: Config) -> list[Check]:
    cfg, checks = config, []
    token = cfg.telegram.token.get_secret_value()
    checks.append(Check("config telegram.token", "ok", "set") if token and ":" in token else Check(
        "config telegram.token", "fail", "missing or malformed",
        "put NEUROCARDS_TELEGRAM_TOKEN=<token from @BotFather> into /etc/neurocards.env"))
    if any(p.startswith("kie") for p in cfg.generation.providers):
        checks.append(Check("config kie.api_keys", "ok", f"{len(cfg.kie.api_keys)} key(s)") if cfg.kie.api_keys
                      else Check("config kie.api_keys", "fail", "empty while generation.providers uses KIE",
                                 "put NEUROCARDS_KIE_API_KEYS=k1,k2 into /etc/neurocards.env"))
    checks.append(Check("config telegram.admin_ids", "ok", f"{len(cfg.telegram.admin_ids)} admin(s)")
                  if cfg.telegram.admin_ids else Check(
                      "config telegram.admin_ids", "warn", "empty: alerts and support messages reach nobody",
                      "add your numeric Telegram id (ask @userinfobot) to telegram.admin_ids"))
    support = cfg.telegram.support_username
    if support:
        checks.append(Check("config support", "ok", f"the support button links to @{support}"))
    elif cfg.telegram.support_chat_id or cfg.telegram.admin_ids:
        checks.append(Check("config support", "ok", "sellers' messages are relayed to the operators"))
    else:
        checks.append(Check("config support", "warn", "no support_username and nobody to relay to: the bot"
                            " tells sellers support is not connected", "set telegram.support_username or admin_ids"))
    return checks


def ffmpeg_check() -> Check:
    """The bot runs imageio-ffmpeg's binary (sandbox videos, shrinking a video over the upload limit)."""
    try:
        from neurocards.providers.video_tools import ffmpeg_exe

        found = ffmpeg_exe()
    except Exception as exc:  # missing wheel or binary: imageio-ffmpeg raises RuntimeError/ImportError
        return Check("ffmpeg", "warn", f"not usable ({type(exc).__name__}): sandbox videos and shrinking"
                     " large videos will fail", "venv/bin/pip install . (brings imageio-ffmpeg)")
    return Check("ffmpeg", "ok", found)


def storage_checks(config: Config) -> list[Check]:
    folder = config.storage.dir
    if not folder.is_dir():
        return [Check("storage", "fail", f"{folder} does not exist",
                      f"sudo mkdir -p {folder} && sudo chown -R neurocards:neurocards {folder}")]
    checks: list[Check] = []
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
        checks.append(Check("storage writable", "ok", str(folder)))
    except OSError as exc:
        checks.append(Check("storage writable", "fail", f"{folder}: {exc.strerror or exc}",
                            f"sudo chown -R neurocards:neurocards {folder} (and run doctor as that user)"))
    free = shutil.disk_usage(folder).free
    checks.append(Check("storage free space", "ok" if free >= MIN_FREE_BYTES else "warn",
                        f"{free / 1024**3:.1f} GB free", "free disk space or lower storage.retention_days"))
    return checks


def database_check(config: Config) -> Check:
    path = config.storage.database
    if not path.exists():
        return Check("database", "warn", f"{path} does not exist yet (the first `neurocards run` creates it)",
                     "if the bot has run before, storage.database points to the wrong file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Check("database", "fail", f"{path}: {exc}",
                     "restore the latest backup: neurocards restore FILE --config ... (bot stopped)")
    if problems != ["ok"]:
        return Check("database", "fail", f"{path}: quick_check found {problems[:3]}",
                     "restore the latest backup: neurocards restore FILE --config ... (bot stopped)")
    latest = len(MIGRATIONS)
    if version > latest:
        return Check("database", "fail", f"{path}: schema version {version} is newer than this code ({latest})",
                     "upgrade the code (git pull && venv/bin/pip install .) or restore an older backup")
    pending = f", {latest - version} migration(s) to apply on the next start" if version < latest else ""
    return Check("database", "ok", f"{path}: integrity ok, schema version {version}/{latest}{pending}")


def permission_checks(config: Config) -> list[Check]:
    exposed: list[str] = []
    db = config.storage.database
    candidates = [config.storage.dir, db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    if config.ops.backup_dir is not None:
        candidates.append(config.ops.backup_dir)
    for path in candidates:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o077:
            exposed.append(f"{path} ({stat.filemode(mode)})")
    checks = [Check("file permissions", "ok", "storage, database and backups are private") if not exposed
              else Check("file permissions", "fail", "readable by others: " + ", ".join(exposed),
                         f"sudo chmod -R go-rwx {config.storage.dir} (the bot keeps new files private)")]
    try:
        cfg_mode = config.path.stat().st_mode
    except OSError:
        cfg_mode = 0
    has_secrets = "token" in _raw_text(config.path) or "api_keys" in _raw_text(config.path)
    if cfg_mode & 0o004 and has_secrets:
        checks.append(Check("config file permissions", "fail", f"{config.path} holds secrets and is world-readable",
                            f"sudo chmod 640 {config.path}, or move the secrets to /etc/neurocards.env"))
    return checks


def _raw_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return ""
    # Only lines that give a secret a value count, not the commented documentation.
    return "\n".join(line.split("=")[0].strip() for line in text.splitlines()
                     if "=" in line and not line.lstrip().startswith("#") and line.split("=", 1)[1].strip()
                     not in ('""', "[]"))


def unit_check(config: Config, unit_path: Path | None) -> Check:
    path = unit_path or DEFAULT_UNIT
    if not path.is_file():
        return Check("systemd unit", "skip", f"{path} not installed")
    settings: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings[key.strip()] = value.strip()
    user = settings.get("User", "root")
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return Check("systemd unit", "fail", f"{path}: User={user} does not exist",
                     f"sudo useradd --system --home /opt/neurocards --shell /usr/sbin/nologin {user}")
    folder = config.storage.dir
    try:
        info = folder.stat()
    except OSError:
        return Check("systemd unit", "fail", f"storage {folder} does not exist", f"sudo mkdir -p {folder}")
    writable = account.pw_uid == 0 or (info.st_uid == account.pw_uid and info.st_mode & stat.S_IWUSR)
    if not writable:
        return Check("systemd unit", "fail", f"User={user} cannot write {folder} (owner uid {info.st_uid})",
                     f"sudo chown -R {user}:{user} {folder}")
    paths = settings.get("ReadWritePaths", "").split()
    if settings.get("ProtectSystem") == "strict" and not any(
            folder == Path(p) or Path(p) in folder.parents for p in paths):
        return Check("systemd unit", "fail", f"ProtectSystem=strict and {folder} is not in ReadWritePaths",
                     f"add ReadWritePaths={folder} to {path}")
    return Check("systemd unit", "ok", f"User={user} can write {folder}")


# ---- the network ---------------------------------------------------------------------------------

Probe = Callable[[httpx.AsyncClient], Awaitable[Check]]


async def telegram_check(client: httpx.AsyncClient, config: Config) -> Check:
    token = config.telegram.token.get_secret_value()
    if not token:
        return Check("telegram token", "skip", "no token configured")
    try:
        response = await client.get(f"{config.telegram.api_base}/bot{token}/getMe")
    except httpx.HTTPError as exc:
        return Check("telegram token", "fail", f"{config.telegram.api_base} not reachable ({type(exc).__name__})",
                     "check the network / [network] proxies; Telegram may be blocked here")
    if response.status_code in (401, 404):
        return Check("telegram token", "fail", "rejected by Telegram (401 Unauthorized)",
                     "copy the token again from @BotFather into NEUROCARDS_TELEGRAM_TOKEN")
    username = (response.json().get("result") or {}).get("username", "?") if response.is_success else None
    if username is None:
        return Check("telegram token", "fail", f"getMe answered HTTP {response.status_code}", "try again later")
    return Check("telegram token", "ok", f"@{username}")


def _days_left(credits: float, spend: float) -> str:
    return f" ≈ {credits / spend:.1f} days at the current spend ({spend:,.0f} credits/day)" if spend > 0 else ""


async def kie_checks(client: httpx.AsyncClient, config: Config) -> list[Check]:
    checks = []
    spend = kie_daily_spend_readonly(config.storage.database) if config.storage.database.exists() else 0.0
    for secret in config.kie.api_keys:
        key = secret.get_secret_value()
        name = f"kie key {_key_label(key)}"
        try:
            response = await client.get(f"{config.kie.base_url}/api/v1/chat/credit",
                                        headers={"Authorization": f"Bearer {key}"})
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            checks.append(Check(name, "fail", f"{config.kie.base_url} not reachable ({type(exc).__name__})",
                                "check the network (or network.proxy_for_kie)"))
            continue
        code = body.get("code") if isinstance(body, dict) else None
        credits = body.get("data") if isinstance(body, dict) else None
        if code == 401 or response.status_code == 401:
            checks.append(Check(name, "fail", "rejected by KIE (401)", "create a key at https://kie.ai/api-key"))
        elif code != 200 or not isinstance(credits, int | float) or isinstance(credits, bool):
            checks.append(Check(name, "fail", f"credit endpoint answered code {code}: {str(body)[:80]}",
                                "try again later; see https://kie.ai/logs"))
        elif credits < config.kie.low_balance_alert:
            checks.append(Check(name, "warn", f"balance {credits:g} credits: low (below kie.low_balance_alert"
                                f" {config.kie.low_balance_alert:g})", "top up at https://kie.ai/billing"))
        elif spend > 0 and credits / spend < config.kie.low_balance_days:
            checks.append(Check(name, "warn", f"balance {credits:g} credits{_days_left(credits, spend)}: below"
                                f" kie.low_balance_days ({config.kie.low_balance_days:g})",
                                "top up at https://kie.ai/billing"))
        else:
            checks.append(Check(name, "ok", f"balance {credits:g} credits{_days_left(credits, spend)}"))
    return checks


async def openai_checks(client: httpx.AsyncClient, config: Config) -> list[Check]:
    keys = config.openai.keys
    if not keys:
        return [Check("openai key", "skip", "not set (prompts are used as written)")]
    base = (config.openai.base_url or "https://api.openai.com/v1").rstrip("/")
    checks = []
    for key in keys:
        name = f"openai key {_key_label(key)}"
        try:
            response = await client.get(f"{base}/models", headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:
            checks.append(Check(name, "fail", f"{base} not reachable ({type(exc).__name__})",
                                "OpenAI often needs the [network] proxies"))
            continue
        if response.status_code == 401:
            checks.append(Check(name, "fail", "rejected (401)", "check OPENAI_API_KEYS / openai.api_keys"))
        else:
            checks.append(Check(name, "ok" if response.is_success else "warn", f"HTTP {response.status_code}",
                                "see https://status.openai.com"))
    return checks


async def callback_check(client: httpx.AsyncClient, config: Config) -> Check:
    url = config.kie.callback_url
    if not url:
        return Check("kie callback url", "skip", "not configured (polling only)")
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        return Check("kie callback url", "fail", f"{url} not reachable ({type(exc).__name__})",
                     "check the reverse proxy / firewall in front of kie.callback_listen")
    return Check("kie callback url", "ok", f"reachable (HTTP {response.status_code})")


async def proxy_checks(config: Config) -> list[Check]:
    """Each proxy alone (no fall-back to direct): reachable, and the credentials accepted."""
    from neurocards.proxies import ProxyConfigError, ProxyPool, RotatingProxyTransport, load_proxies

    path = config.network.proxies_file
    if path is None:
        return [Check("proxies", "skip", "none configured (direct connections)")]
    try:
        proxies = load_proxies(path)
    except ProxyConfigError as exc:
        return [Check("proxies", "fail", str(exc), f"fix the line in {path}")]
    token = config.telegram.token.get_secret_value()
    target = f"{config.telegram.api_base}/bot{token}/getMe" if token else config.telegram.api_base
    checks = []
    for proxy in proxies:
        transport = RotatingProxyTransport(ProxyPool([proxy], 60.0, fallback_direct=False))
        try:
            async with httpx.AsyncClient(transport=transport, timeout=NETWORK_TIMEOUT_S) as client:
                response = await client.get(target)
            checks.append(Check(f"proxy {proxy.label}", "ok", f"reaches Telegram (HTTP {response.status_code})"))
        except httpx.HTTPError as exc:
            checks.append(Check(f"proxy {proxy.label}", "fail", f"{type(exc).__name__}: {str(exc)[:120]}",
                                f"check host, port, user and password of {proxy.label} in {path}"))
    return checks


async def network_checks(config: Config) -> list[Check]:
    async with httpx.AsyncClient(timeout=NETWORK_TIMEOUT_S) as client:
        direct = [await telegram_check(client, config), *await kie_checks(client, config),
                  *await openai_checks(client, config), await callback_check(client, config)]
    return [*direct, *await proxy_checks(config)]


async def run_doctor(config: Config, *, offline: bool = False, unit_path: Path | None = None) -> list[Check]:
    checks = [*config_checks(config), ffmpeg_check(), *storage_checks(config), database_check(config),
              *permission_checks(config), unit_check(config, unit_path)]
    if offline:
        checks.append(Check("network checks", "skip", "--offline: token, KIE keys, OpenAI, proxies not checked"))
    else:
        checks.extend(await network_checks(config))
    scrub = _scrubber(config)
    return [Check(c.name, c.status, scrub(c.detail), scrub(c.fix)) for c in checks]


def _scrubber(config: Config) -> Callable[[str], str]:
    token = config.telegram.token.get_secret_value()
    values = (token, token.split(":", 1)[-1], *(k.get_secret_value() for k in config.kie.api_keys),
              *config.openai.keys, config.kie.callback_secret.get_secret_value(),
              config.kie.callback_hmac_key.get_secret_value())
    secrets = sorted({s for s in values if len(s) >= 6}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return scrub


def failed(checks: list[Check]) -> bool:
    return any(c.status == "fail" for c in checks)
