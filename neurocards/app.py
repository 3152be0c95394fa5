"""Wiring: one process, one event loop, the bot's long polling and the engine side by side."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import time
from datetime import datetime

import httpx
from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from neurocards.bot.activity import ActivityMiddleware
from neurocards.bot.billing import announce_referral_bonus
from neurocards.bot.broadcaster import Broadcaster
from neurocards.bot.fsm_storage import SQLiteStorage
from neurocards.bot.handlers import (
    admin,
    broadcast,
    create,
    format_step,
    menu,
    payments,
    profile,
    promo,
)
from neurocards.bot.middlewares import (
    ServicesMiddleware,
    ThrottlingMiddleware,
    UserTrackingMiddleware,
)
from neurocards.bot.notifier import TelegramNotifier
from neurocards.bot.rate_limit import TelegramPacing
from neurocards.bot.session import JsonBodySession, RotatingProxySession
from neurocards.config import Config, ConfigError
from neurocards.jobs.alerts import Alerts, BalanceWatch, JobsResumed, Watchdog
from neurocards.jobs.chain import ChainEntry, ProviderChain
from neurocards.jobs.engine import Engine
from neurocards.jobs.gpt_keys import GptWatch
from neurocards.jobs.prompting import PromptBuilder
from neurocards.jobs.templates import TemplateCatalog
from neurocards.metrics import Metrics, OpsServer, engine_health, pool_states
from neurocards.providers.base import BalanceSource, KeyRotation, VideoProvider
from neurocards.providers.kie_callbacks import CallbackServer, callback_urls
from neurocards.proxies import ProxyConfigError, ProxyPool, RotatingProxyTransport, load_proxies
from neurocards.services import Services
from neurocards.services.orders import Orders
from neurocards.store.backup import AlreadyRunning, RunLock, backup_database_async
from neurocards.store.db import Database
from neurocards.store.jobs import JobStore
from neurocards.store.prompt_cache import PromptCache
from neurocards.store.users import ProductStore, UserStore

GC_YOUNG_THRESHOLD = 10_000

log = logging.getLogger("neurocards")


def build_chain(config: Config, transport: httpx.AsyncBaseTransport | None = None,
                kie_backend: VideoProvider | None = None) -> ProviderChain:
    """One backend per kind, shared by the chain entries that use it (one KIE client, one sandbox).

    Each entry carries what the engine must know about its provider (keys, callbacks, polling,
    upload caching), so the engine never asks which provider it is talking to."""
    kie: VideoProvider | None = kie_backend
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
            entries.append(ChainEntry(backend=sandbox, fixed_model=None, default_model="sandbox", **common))
            continue
        if kie is None:
            from neurocards.providers.kie import KieProvider

            kie = KieProvider(kcfg, transport=transport, accounts=kcfg.key_accounts() or None)
        entries.append(ChainEntry(
            backend=kie, fixed_model=(name.split(":", 1)[1] or None) if ":" in name else None,
            default_model=kcfg.model, keys=kie if isinstance(kie, KeyRotation) else None,
            balance=kie if isinstance(kie, BalanceSource) else None, callbacks=callbacks,
            callback_poll_interval_s=kcfg.callback_poll_interval_s, cache_uploads=True, **common))
    return ProviderChain(entries, failures_to_switch=config.generation.fallback_failures,
                         cooldown_s=config.generation.fallback_cooldown_s,
                         format_surcharge=dict(config.formats.surcharge))


def proxy_pools(config: Config) -> tuple[ProxyPool | None, ProxyPool | None]:
    """Separate pools for Telegram and for the other APIs: a KIE outage must not bench Telegram's proxies."""
    path = config.network.proxies_file
    try:
        proxies = load_proxies(path) if path else []
    except ProxyConfigError as exc:
        raise ConfigError(f"config: {exc}") from None
    if not proxies:
        return None, None
    net = config.network
    return (ProxyPool(proxies, net.proxy_cooldown_s, net.proxy_fallback_direct),
            ProxyPool(proxies, net.proxy_cooldown_s, net.proxy_fallback_direct))


def sweep_storage(config: Config, now: float | None = None) -> int:
    """Delete stored photos and videos older than storage.retention_days; returns files removed."""
    cutoff = (now or time.time()) - config.storage.retention_days * 86400
    removed = 0
    for folder in (config.storage.photos_dir, config.storage.outputs_dir):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
    if removed:
        log.info("storage sweep removed %d old files", removed)
    return removed


class Application:
    def __init__(self, config: Config, provider: VideoProvider | None = None) -> None:
        self.config = config
        self._provider = provider
        self._polling: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        cfg = self.config
        cfg.storage.dir.mkdir(parents=True, exist_ok=True)
        try:  # one bot per database: a second copy would deliver every video twice
            self.run_lock: RunLock | None = RunLock(cfg.storage.dir / "neurocards.lock").acquire()
        except AlreadyRunning:
            raise ConfigError(f"another neurocards process is already running on {cfg.storage.dir}") from None
        await asyncio.to_thread(sweep_storage, cfg)
        self.db = await Database.open(cfg.storage.database)
        self.templates = TemplateCatalog.load(cfg.generation.prompts_file)
        telegram_pool, api_pool = proxy_pools(cfg)
        self.proxy_pools = [p for p in (telegram_pool, api_pool) if p is not None]
        self.api_transport = RotatingProxyTransport(api_pool) if api_pool is not None else None
        self.chain = build_chain(cfg, self.api_transport if cfg.network.proxy_for_kie else None, self._provider)
        self.provider = self.chain.primary.backend
        self.kie = next((b for b in self.chain.backends() if b.name == "kie"), None)
        self.users = UserStore(self.db)
        self.products = ProductStore(self.db)
        self.jobs = JobStore(self.db)
        api = TelegramAPIServer.from_base(cfg.telegram.api_base)
        session: AiohttpSession = (
            RotatingProxySession(telegram_pool, api=api, timeout=cfg.telegram.request_timeout_s)
            if telegram_pool is not None
            else JsonBodySession(api=api, timeout=cfg.telegram.request_timeout_s))
        session.middleware(TelegramPacing(cfg.telegram.send_per_s, cfg.telegram.chat_burst,
                                          cfg.telegram.chat_period_s, background_per_s=cfg.broadcast.per_s))
        self.bot = Bot(cfg.telegram.token.get_secret_value(), session=session,
                       default=DefaultBotProperties(parse_mode=ParseMode.HTML))
        self.notifier = TelegramNotifier(
            self.bot, admin_ids=cfg.telegram.admin_ids, support_username=cfg.telegram.support_username,
            max_upload_bytes=cfg.telegram.max_upload_mb * 1024 * 1024,
            balance_view=lambda balance: self.orders.balance_view(balance))
        # OpenAI is often reachable only through the proxies; the app owns (and closes) this client.
        self.openai_http = (httpx.AsyncClient(transport=self.api_transport, timeout=cfg.openai.timeout_s)
                            if self.api_transport is not None and cfg.openai.keys else None)
        self.alerts = Alerts(self.notifier)
        self.metrics = Metrics(
            kie_key_states=getattr(self.kie, "key_states", None),
            proxy_states=pool_states({k: p for k, p in (("telegram", telegram_pool), ("api", api_pool)) if p}))
        gpt_watch = GptWatch(self.alerts, self.metrics, failure_rate=cfg.openai.failure_rate_alert,
                             min_calls=cfg.openai.failure_rate_min_calls)
        self.prompts = PromptBuilder(cfg.openai, cache=PromptCache(self.db), http_client=self.openai_http,
                                     watch=gpt_watch)
        self.metrics.bind_gpt_keys(self.prompts.keys.available)
        self.engine = Engine(
            config=cfg, jobs=self.jobs, users=self.users, products=self.products, chain=self.chain,
            notifier=self.notifier, templates=self.templates, prompts=self.prompts, alerts=self.alerts,
            metrics=self.metrics)
        self.balance_watch = BalanceWatch(next(iter(self.chain.balance_sources()), None), self.alerts,
                                          cfg.kie.low_balance_alert)
        self.orders = Orders(cfg, self.jobs, self.templates, self.chain, on_new_jobs=self.engine.wake,
                             metrics=self.metrics)
        services = Services(config=cfg, db=self.db, users=self.users, products=self.products, jobs=self.jobs,
                            orders=self.orders, templates=self.templates,
                            key_states=getattr(self.kie, "key_states", None),
                            on_referral_bonus=functools.partial(announce_referral_bonus, self.bot))
        if cfg.referrals.bonus_on == "first_video" and cfg.referrals.bonus_credits > 0:
            referrals = services.referrals

            async def referral_on_first_video(user_id: int) -> None:
                await referrals.on_video_delivered(user_id)

            self.engine.delivery.on_delivered = referral_on_first_video
        self.broadcaster = Broadcaster(self.bot, services.broadcasts, cfg.broadcast)
        services.broadcaster = self.broadcaster
        self.services = services
        self.dp = Dispatcher(storage=SQLiteStorage(self.db))
        for observer in (self.dp.message, self.dp.callback_query):
            observer.outer_middleware(ThrottlingMiddleware(cfg.telegram.user_rate_per_s, cfg.telegram.user_burst))
            observer.outer_middleware(ServicesMiddleware(services))
            observer.outer_middleware(UserTrackingMiddleware(services))
            observer.outer_middleware(ActivityMiddleware(services))
        # Never throttled or dropped: Telegram cancels the payment unless it is answered within 10 s.
        self.dp.pre_checkout_query.outer_middleware(ServicesMiddleware(services))
        self.dp.include_routers(admin.make_router(cfg.telegram.admin_ids), menu.make_router(),
                                payments.make_router(cfg.telegram.admin_ids), profile.make_router(),
                                promo.make_router(), broadcast.make_router(cfg.telegram.admin_ids),
                                format_step.make_router(), create.make_router())

        self.callbacks: CallbackServer | None = None
        if cfg.kie.callback_url and self.kie is not None:
            host, _, port = cfg.kie.callback_listen.rpartition(":")
            self.callbacks = CallbackServer(host, int(port), cfg.kie.callback_secret.get_secret_value(),
                                            cfg.kie.callback_hmac_key.get_secret_value() or None,
                                            self.engine.on_task_callback)
            await self.callbacks.start()

        resumed = await self.engine.start()
        await self.broadcaster.start()
        self.metrics.bind_engine(lambda: self.engine.in_flight, lambda: self.engine.heartbeat)
        self.ops: OpsServer | None = None
        if cfg.ops.enabled:
            host, _, port = cfg.ops.listen.rpartition(":")
            self.ops = OpsServer(host, int(port), self.metrics, self._health,
                                 before_scrape=lambda: self.metrics.refresh(self.db))
            await self.ops.start()
        if resumed:
            await self.alerts.send("engine:resumed", JobsResumed(resumed))
        self.scheduler = AsyncIOScheduler()
        notice_every = max(0.2, min(30.0, cfg.generation.retry.queue_notice_after_s / 3))
        self.scheduler.add_job(self.engine.notify_long_waits, "interval", seconds=notice_every, id="long-waits",
                               max_instances=1, coalesce=True)
        if self.kie is not None and cfg.kie.low_balance_alert > 0:
            self.scheduler.add_job(self.balance_watch.check, "interval", seconds=cfg.kie.balance_check_interval_s,
                                   id="kie-balance", max_instances=1, coalesce=True,
                                   next_run_time=datetime.now())
        self.scheduler.add_job(sweep_storage, "interval", hours=24, args=[cfg], id="sweep",
                               max_instances=1, coalesce=True)
        self.watchdog = Watchdog(self.db, self.alerts, failure_rate=cfg.ops.failure_rate_alert,
                                 min_jobs=cfg.ops.failure_rate_min_jobs, heartbeat_age=self.metrics.heartbeat_age,
                                 max_heartbeat_age_s=cfg.ops.heartbeat_max_age_s)
        self.scheduler.add_job(self.watchdog.check, "interval", seconds=60, id="watchdog",
                               max_instances=1, coalesce=True)
        if cfg.ops.backup_interval_h > 0 and cfg.ops.backup_dir is not None:
            self.scheduler.add_job(backup_database_async, "interval", hours=cfg.ops.backup_interval_h,
                                   args=[cfg.storage.database, cfg.ops.backup_dir, cfg.ops.backup_keep],
                                   id="backup", max_instances=1, coalesce=True)
        self.scheduler.start()
        self._polling = asyncio.create_task(
            self.dp.start_polling(self.bot, handle_signals=False, close_bot_session=False,
                                  polling_timeout=cfg.telegram.polling_timeout_s),
            name="polling")
        log.info("neurocards started (provider %s, %d jobs resumed)", self.provider.name, resumed)
        # Import-time objects live forever: keep them out of every later full collection.
        gc.collect()
        gc.freeze()
        # With 1,000 jobs in flight and hundreds of updates/s, the default threshold of 700 runs the
        # collector ~3 times a second, with 5-15 ms pauses for the older generations. At 10,000 it
        # runs once in 20 s of the same load (bench/), for ~1 MB more of young objects.
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)

    async def stop(self) -> None:
        if self._polling is not None:
            with contextlib.suppress(Exception):
                await self.dp.stop_polling()
            self._polling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._polling
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        await self.broadcaster.stop()
        await self.engine.stop()
        if self.ops is not None:
            await self.ops.stop()
        if self.callbacks is not None:
            await self.callbacks.stop()
        with contextlib.suppress(Exception):
            await self.services.activity.flush()
        await self.prompts.aclose()
        if self.openai_http is not None:
            await self.openai_http.aclose()
        for backend in self.chain.backends():
            await backend.aclose()
        if self.api_transport is not None:
            await self.api_transport.aclose()
        await self.bot.session.close()
        await self.db.close()
        if self.run_lock is not None:
            self.run_lock.release()
            self.run_lock = None
        self._stopped.set()

    def _health(self) -> tuple[bool, dict[str, object]]:
        return engine_health(
            polling_alive=self._polling is not None and not self._polling.done(),
            heartbeat_age_s=self.metrics.heartbeat_age(),
            max_age_s=self.config.ops.heartbeat_max_age_s,
            in_flight=self.engine.in_flight)

    async def run_until_signal(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        polling = self._polling
        assert polling is not None
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, polling}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        log.info("neurocards stopping")
        await self.stop()
