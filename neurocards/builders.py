"""Builders of the running bot's parts. Each makes one part from the config and puts its cleanup
on the AsyncExitStack it is given, as soon as the part exists: a start that fails half-way (a
port taken, a corrupt database) releases exactly what was made, in reverse order. The CLI's
Telegram commands use the same builders."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from neurocards.bot.activity import ActivityMiddleware
from neurocards.bot.digest import DailyDigest
from neurocards.bot.fsm_storage import SQLiteStorage
from neurocards.bot.handlers import (
    admin,
    albums,
    broadcast,
    create,
    format_step,
    menu,
    orders,
    payments,
    profile,
    promo,
    statement,
    support,
)
from neurocards.bot.middlewares import (
    ThrottlingMiddleware,
    UserTrackingMiddleware,
)
from neurocards.bot.rate_limit import TelegramPacing
from neurocards.bot.session import JsonBodySession, RotatingProxySession
from neurocards.config import Config, ConfigError
from neurocards.jobs.alerts import Alerts, BalanceWatch, Watchdog
from neurocards.jobs.chain import ChainEntry, ProviderChain
from neurocards.jobs.engine import Engine
from neurocards.jobs.gpt_keys import GptWatch
from neurocards.jobs.notifier import JobNotifier
from neurocards.jobs.prompting import PromptBuilder
from neurocards.jobs.templates import TemplateCatalog
from neurocards.metrics import Metrics
from neurocards.providers.base import BalanceSource, KeyRotation, VideoProvider
from neurocards.providers.kie_callbacks import callback_urls
from neurocards.proxies import ProxyConfigError, ProxyPool, RotatingProxyTransport, load_proxies
from neurocards.services import Services
from neurocards.store.backup import AlreadyRunning, RunLock, backup_database_async
from neurocards.store.costs import CostStore
from neurocards.store.db import Database
from neurocards.store.jobs import JobStore
from neurocards.store.prompt_cache import PromptCache
from neurocards.store.users import ProductStore, UserStore

log = logging.getLogger("neurocards")

@dataclass(frozen=True)
class Network:
    """Separate proxy pools for Telegram and for the other APIs (a KIE outage must not bench
    Telegram's proxies), and the httpx transport over the API pool."""

    telegram_pool: ProxyPool | None = None
    api_pool: ProxyPool | None = None
    api_transport: RotatingProxyTransport | None = None

    @property
    def pools(self) -> dict[str, ProxyPool]:
        return {name: pool for name, pool in (("telegram", self.telegram_pool), ("api", self.api_pool))
                if pool is not None}


def build_network(config: Config, stack: AsyncExitStack) -> Network:
    path = config.network.proxies_file
    try:
        proxies = load_proxies(path) if path else []
    except ProxyConfigError as exc:
        raise ConfigError(f"config: {exc}") from None
    if not proxies:
        return Network()
    net = config.network
    api_pool = ProxyPool(proxies, net.proxy_cooldown_s, net.proxy_fallback_direct)
    transport = RotatingProxyTransport(api_pool)
    stack.push_async_callback(transport.aclose)
    return Network(ProxyPool(proxies, net.proxy_cooldown_s, net.proxy_fallback_direct), api_pool, transport)


def acquire_run_lock(config: Config, stack: AsyncExitStack) -> None:
    """One bot per database: a second copy would deliver every video twice."""
    config.storage.dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(config.storage.dir / "neurocards.lock").acquire()
    except AlreadyRunning:
        raise ConfigError(f"another neurocards process is already running on {config.storage.dir}") from None
    stack.callback(lock.release)


async def open_database(config: Config, stack: AsyncExitStack, *, create: bool = True) -> Database:
    db = await Database.open(config.storage.database, create=create)
    stack.push_async_callback(db.close)
    return db


def build_pacing(config: Config) -> TelegramPacing:
    tg = config.telegram
    return TelegramPacing(tg.send_per_s, tg.chat_burst, tg.chat_period_s, background_per_s=config.broadcast.per_s)


def build_bot(config: Config, stack: AsyncExitStack, network: Network,
              pacing: TelegramPacing | None = None) -> Bot:
    """`pacing`: the rate limiter of the bot's sends, when the caller shares it (status edits)."""
    tg = config.telegram
    api = TelegramAPIServer.from_base(tg.api_base)
    session: AiohttpSession = (
        RotatingProxySession(network.telegram_pool, api=api, timeout=tg.request_timeout_s)
        if network.telegram_pool is not None
        else JsonBodySession(api=api, timeout=tg.request_timeout_s))
    stack.push_async_callback(session.close)
    session.middleware(pacing or build_pacing(config))
    return Bot(tg.token.get_secret_value(), session=session,
               default=DefaultBotProperties(parse_mode=ParseMode.HTML))


def build_chain(config: Config, stack: AsyncExitStack, transport: httpx.AsyncBaseTransport | None = None,
                kie_backend: VideoProvider | None = None) -> ProviderChain:
    """One backend per kind, shared by the chain entries that use it (one KIE client, one sandbox).

    Each entry carries what the engine must know about its provider (keys, callbacks, polling,
    upload caching), so the engine never asks which provider it is talking to."""
    kie: VideoProvider | None = kie_backend
    if kie_backend is not None:  # given by the caller, closed with the rest
        stack.push_async_callback(kie_backend.aclose)
    sandbox: VideoProvider | None = None
    kcfg = config.kie
    callbacks = callback_urls(kcfg.callback_url, kcfg.callback_secret.get_secret_value()) if kcfg.callback_url else None
    entries: list[ChainEntry] = []
    for index, name in enumerate(config.generation.providers):
        common = {"name": name, "cost": config.credits.price(name), "simple": index > 0 and name == "sandbox",
                  "poll_interval_s": kcfg.poll_interval_s, "timeout_s": kcfg.timeout_s}
        if name == "sandbox":
            if sandbox is None:
                from neurocards.providers.sandbox import SandboxProvider

                sandbox = SandboxProvider(config.storage.dir / "sandbox")
                stack.push_async_callback(sandbox.aclose)
            entries.append(ChainEntry(backend=sandbox, fixed_model=None, default_model="sandbox", **common))
            continue
        if kie is None:
            from neurocards.providers.kie import KieProvider

            kie = KieProvider(kcfg, transport=transport, accounts=kcfg.key_accounts() or None)
            stack.push_async_callback(kie.aclose)
        entries.append(ChainEntry(
            backend=kie, fixed_model=(name.split(":", 1)[1] or None) if ":" in name else None,
            default_model=kcfg.model, keys=kie if isinstance(kie, KeyRotation) else None,
            balance=kie if isinstance(kie, BalanceSource) else None, callbacks=callbacks,
            callback_poll_interval_s=kcfg.callback_poll_interval_s, cache_uploads=True,
            takes_template_model=name == "kie", **common))
    return ProviderChain(entries, failures_to_switch=config.generation.fallback_failures,
                         cooldown_s=config.generation.fallback_cooldown_s,
                         format_surcharge=dict(config.formats.surcharge))


def build_prompts(config: Config, stack: AsyncExitStack, db: Database, network: Network,
                  alerts: Alerts, metrics: Metrics, costs: CostStore | None = None) -> PromptBuilder:
    # OpenAI is often reachable only through the proxies; the app owns (and closes) this client.
    http: httpx.AsyncClient | None = None
    if network.api_transport is not None and config.openai.keys:
        http = httpx.AsyncClient(transport=network.api_transport, timeout=config.openai.timeout_s)
        stack.push_async_callback(http.aclose)
    watch = GptWatch(alerts, metrics, failure_rate=config.openai.failure_rate_alert,
                     min_calls=config.openai.failure_rate_min_calls)
    prompts = PromptBuilder(config.openai, cache=PromptCache(db), http_client=http, watch=watch, costs=costs)
    stack.push_async_callback(prompts.aclose)
    metrics.bind_gpt_keys(prompts.keys.available)
    return prompts


def build_engine(config: Config, stack: AsyncExitStack, *, db: Database, chain: ProviderChain,
                 notifier: JobNotifier, templates: TemplateCatalog, prompts: PromptBuilder,
                 alerts: Alerts, metrics: Metrics, costs: CostStore | None = None) -> Engine:
    """The engine, not yet started (its hooks are set first); stopped with the stack."""
    engine = Engine(config=config, jobs=JobStore(db), users=UserStore(db), products=ProductStore(db),
                    chain=chain, notifier=notifier, templates=templates, prompts=prompts, alerts=alerts,
                    metrics=metrics, costs=costs)
    stack.push_async_callback(engine.stop)
    return engine


def build_dispatcher(config: Config, db: Database, services: Services) -> Dispatcher:
    """Handlers get the services as `svc` through aiogram's workflow data, for every kind of
    update (pre-checkout queries included)."""
    tg = config.telegram
    dp = Dispatcher(storage=SQLiteStorage(db), svc=services)
    for observer in (dp.message, dp.callback_query):
        observer.outer_middleware(ThrottlingMiddleware(tg.user_rate_per_s, tg.user_burst))
        observer.outer_middleware(UserTrackingMiddleware(services))
        observer.outer_middleware(ActivityMiddleware(services))
    # Pre-checkout queries pass no middleware, so they are never throttled or dropped: Telegram
    # cancels the payment unless it is answered within 10 s.
    dp.include_routers(admin.make_router(tg.admin_ids), menu.make_router(),
                       payments.make_router(tg.admin_ids), profile.make_router(), promo.make_router(),
                       broadcast.make_router(tg.admin_ids), statement.make_router(), orders.make_router(),
                       albums.make_router(), format_step.make_router(), support.make_router(),
                       create.make_router())
    return dp


def build_scheduler(config: Config, stack: AsyncExitStack, *, engine: Engine, watchdog: Watchdog,
                    balance_watch: BalanceWatch | None, digest: DailyDigest | None = None) -> AsyncIOScheduler:
    """Periodic work, started."""
    scheduler = AsyncIOScheduler()
    every: dict[str, Any] = {"max_instances": 1, "coalesce": True}
    notice_every = max(0.2, min(30.0, config.generation.retry.queue_notice_after_s / 3))
    scheduler.add_job(engine.notify_long_waits, "interval", seconds=notice_every, id="long-waits", **every)
    if balance_watch is not None and (config.kie.low_balance_alert > 0 or config.kie.low_balance_days > 0):
        scheduler.add_job(balance_watch.check, "interval", seconds=config.kie.balance_check_interval_s,
                          id="kie-balance", next_run_time=datetime.now(), **every)
    scheduler.add_job(sweep_storage, "interval", hours=24, args=[config], id="sweep", **every)
    scheduler.add_job(watchdog.check, "interval", seconds=60, id="watchdog", **every)
    if digest is not None and digest.due_s is not None and config.telegram.admin_ids:
        # Also at start-up: a restart after the digest time sends the day's digest if it is due.
        scheduler.add_job(digest.run_due, "interval", seconds=60, id="digest", next_run_time=datetime.now(), **every)
    ops = config.ops
    if ops.backup_interval_h > 0 and ops.backup_dir is not None:
        scheduler.add_job(backup_database_async, "interval", hours=ops.backup_interval_h,
                          args=[config.storage.database, ops.backup_dir, ops.backup_keep], id="backup", **every)
    scheduler.start()
    stack.callback(_shut_down, scheduler)
    return scheduler


def _shut_down(scheduler: AsyncIOScheduler) -> None:
    with contextlib.suppress(Exception):  # already stopped: nothing left to release
        scheduler.shutdown(wait=False)


def sweep_storage(config: Config, now: float | None = None) -> int:
    """Delete stored photos and videos older than storage.retention_days; returns files removed.
    sandbox/ (the local provider's uploads, renders and scratch, in sandbox mode or after a
    fall-over) is swept the same way, folders and all."""
    cutoff = (now or time.time()) - config.storage.retention_days * 86400
    removed = 0
    for folder in (config.storage.photos_dir, config.storage.outputs_dir, config.storage.dir / "sandbox"):
        if not folder.is_dir():
            continue
        for root, dirs, files in os.walk(folder, topdown=False):
            for name in files:
                path = Path(root) / name
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except OSError:
                    continue
            for name in dirs:
                old_folder = Path(root) / name
                with contextlib.suppress(OSError):  # rmdir refuses a folder that is not empty
                    if old_folder.stat().st_mtime < cutoff:
                        old_folder.rmdir()
    if removed:
        log.info("storage sweep removed %d old files", removed)
    return removed
