"""Wiring: one process, one event loop, the bot's long polling and the engine side by side.

`Application.start` calls the builders (neurocards/builders.py) in order; each puts its cleanup
on one AsyncExitStack, so `stop()` (or a start that failed half-way) closes exactly what exists."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
from contextlib import AsyncExitStack

from aiogram.exceptions import TelegramUnauthorizedError

from neurocards.bot.albums import AlbumCollector
from neurocards.bot.billing import announce_referral_bonus
from neurocards.bot.broadcaster import Broadcaster
from neurocards.bot.commands import publish_commands
from neurocards.bot.digest import DailyDigest
from neurocards.bot.handlers.albums import AlbumDialogue
from neurocards.bot.notifier import TelegramNotifier
from neurocards.bot.order_status import OrderStatusBoard
from neurocards.builders import (
    acquire_run_lock,
    build_bot,
    build_chain,
    build_dispatcher,
    build_engine,
    build_network,
    build_pacing,
    build_prompts,
    build_scheduler,
    open_database,
    sweep_storage,
)
from neurocards.config import Config
from neurocards.jobs.alerts import Alerts, BalanceWatch, JobsResumed, Watchdog
from neurocards.jobs.templates import TemplateCatalog
from neurocards.metrics import Metrics, OpsServer, engine_health, pool_states
from neurocards.providers.base import VideoProvider
from neurocards.providers.kie_callbacks import CallbackServer
from neurocards.services import build_services
from neurocards.startup import EXIT_CONFIG, EXIT_FAILED, TokenWatch, check_telegram
from neurocards.store.albums import AlbumStore
from neurocards.store.costs import CostStore
from neurocards.store.orders import OrderStore
from neurocards.store.privacy import restrict_umask, secure_storage

GC_YOUNG_THRESHOLD = 10_000

log = logging.getLogger("neurocards")


class Application:
    def __init__(self, config: Config, provider: VideoProvider | None = None) -> None:
        self.config = config
        self._provider = provider
        self._stack = AsyncExitStack()
        self._polling: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self.token_rejected = False

    async def start(self) -> None:
        try:
            await self._start(self._stack)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, stack: AsyncExitStack) -> None:
        cfg = self.config
        restrict_umask()  # photos, videos, the database and backups: private whatever the unit's umask
        acquire_run_lock(cfg, stack)
        secure_storage(cfg.storage.dir)
        await asyncio.to_thread(sweep_storage, cfg)
        self.db = await open_database(cfg, stack)
        self.templates = TemplateCatalog.load(cfg.generation.prompts_file)
        network = build_network(cfg, stack)
        self.proxy_pools = list(network.pools.values())
        self.chain = build_chain(cfg, stack, network.api_transport if cfg.network.proxy_for_kie else None,
                                 self._provider)
        self.provider = self.chain.primary.backend
        self.kie = next((b for b in self.chain.backends() if b.name == "kie"), None)
        self.pacing = build_pacing(cfg)
        self.bot = build_bot(cfg, stack, network, self.pacing)
        self.bot.session.middleware(TokenWatch(self._on_token_rejected))
        # Before anything else talks to Telegram: a rejected token is one line and exit 78, a
        # network that is not up yet (a VPS at boot) is waited for.
        self.bot_username = await check_telegram(self.bot, cfg)
        self.notifier = TelegramNotifier(
            self.bot, admin_ids=cfg.telegram.admin_ids, support_username=cfg.telegram.support_username,
            max_upload_bytes=cfg.telegram.max_upload_mb * 1024 * 1024,
            balance_view=lambda balance: self.services.orders.balance_view(balance),
            caption_of=OrderStore(self.db).caption_of)
        self.alerts = Alerts(self.notifier)
        key_states = getattr(self.kie, "key_states", None)
        self.metrics = Metrics(kie_key_states=key_states, proxy_states=pool_states(network.pools))
        # KIE tasks at their configured price until KIE reports what they consumed; sandbox is free.
        self.costs = CostStore(self.db, price_of=lambda backend, model:
                               cfg.kie.task_price(model) if backend == "kie" else 0.0)
        self.engine = build_engine(
            cfg, stack, db=self.db, chain=self.chain, notifier=self.notifier, templates=self.templates,
            prompts=build_prompts(cfg, stack, self.db, network, self.alerts, self.metrics, self.costs),
            alerts=self.alerts, metrics=self.metrics, costs=self.costs)
        self.services = build_services(
            cfg, self.db, self.chain, self.templates, on_new_jobs=self.engine.wake, metrics=self.metrics,
            key_states=key_states, on_referral_bonus=functools.partial(announce_referral_bonus, self.bot))
        stack.push_async_callback(self._flush_activity)
        self.users, self.products, self.jobs = self.services.users, self.services.products, self.services.jobs
        if cfg.referrals.bonus_on == "first_video" and cfg.referrals.bonus_credits > 0:
            self.engine.delivery.on_delivered = self.services.referrals.on_video_delivered
        self.broadcaster = Broadcaster(self.bot, self.services.broadcasts, cfg.broadcast)
        self.services.broadcaster = self.broadcaster
        self.dp = build_dispatcher(cfg, self.db, self.services)
        await self._start_callbacks(stack)
        await self._start_orders(stack)  # before the engine: its claims already count per seller
        resumed = await self.engine.start()
        stack.push_async_callback(self.broadcaster.stop)
        await self.broadcaster.start()
        self.metrics.bind_engine(lambda: self.engine.in_flight, lambda: self.engine.heartbeat)
        await self._start_ops(stack)
        if resumed:
            await self.alerts.send("engine:resumed", JobsResumed(resumed))
        self.balance_watch = BalanceWatch(next(iter(self.chain.balance_sources()), None), self.alerts,
                                          cfg.kie.low_balance_alert, min_days=cfg.kie.low_balance_days,
                                          daily_spend=self.costs.kie_daily_spend)
        if self.balance_watch.provider is not None:
            self.services.kie_balance = self.balance_watch.check
        self.watchdog = Watchdog(self.db, self.alerts, failure_rate=cfg.ops.failure_rate_alert,
                                 min_jobs=cfg.ops.failure_rate_min_jobs, heartbeat_age=self.metrics.heartbeat_age,
                                 max_heartbeat_age_s=cfg.ops.heartbeat_max_age_s)
        self.digest = DailyDigest(self.bot, self.db, cfg.telegram.admin_ids, cfg.ops.digest_time,
                                  svc=self.services)
        self.scheduler = build_scheduler(cfg, stack, engine=self.engine, watchdog=self.watchdog,
                                         balance_watch=self.balance_watch if self.kie is not None else None,
                                         digest=self.digest)
        await publish_commands(self.bot, cfg.telegram.admin_ids)
        self._polling = asyncio.create_task(
            self.dp.start_polling(self.bot, handle_signals=False, close_bot_session=False,
                                  polling_timeout=cfg.telegram.polling_timeout_s),
            name="polling")
        stack.push_async_callback(self._stop_polling)
        log.info("neurocards started (provider %s, %d jobs resumed)", self.provider.name, resumed)
        # Import-time objects live forever: keep them out of every later full collection.
        gc.collect()
        gc.freeze()
        # With 1,000 jobs in flight and hundreds of updates/s, the default threshold of 700 runs the
        # collector ~3 times a second, with 5-15 ms pauses for the older generations. At 10,000 it
        # runs once in 20 s of the same load (bench/), for ~1 MB more of young objects.
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)

    async def _start_orders(self, stack: AsyncExitStack) -> None:
        """Albums being collected and the live status of every order (handlers reach both through
        the dispatcher's workflow data)."""
        cfg = self.config
        self.order_status = OrderStatusBoard(self.bot, cfg, OrderStore(self.db), self.users, self.pacing)
        self.services.on_new_order = self.order_status.wake
        self.engine.jobs.on_change = lambda job: self.order_status.wake() if job.order_id is not None else None
        self.engine.jobs.per_user_running = cfg.limits.max_jobs_in_flight
        self.albums = AlbumCollector(AlbumStore(self.db), cfg.orders.album_settle_s,
                                     AlbumDialogue(self.bot, self.dp.storage, self.services).on_album)
        self.dp["albums"], self.dp["order_status"] = self.albums, self.order_status
        self.order_status.start()
        stack.push_async_callback(self.order_status.stop)
        stack.push_async_callback(self.albums.stop)
        await self.albums.resume()

    async def _start_callbacks(self, stack: AsyncExitStack) -> None:
        """The endpoint KIE calls when a task finishes, when configured."""
        cfg = self.config
        self.callbacks: CallbackServer | None = None
        if cfg.kie.callback_url and self.kie is not None:
            host, _, port = cfg.kie.callback_listen.rpartition(":")
            self.callbacks = CallbackServer(host, int(port), cfg.kie.callback_secret.get_secret_value(),
                                            cfg.kie.callback_hmac_key.get_secret_value() or None,
                                            self.engine.on_task_callback)
            await self.callbacks.start()
            stack.push_async_callback(self.callbacks.stop)

    async def _start_ops(self, stack: AsyncExitStack) -> None:
        """/metrics and /healthz, when configured."""
        cfg = self.config
        self.ops: OpsServer | None = None
        if cfg.ops.enabled:
            host, _, port = cfg.ops.listen.rpartition(":")
            self.ops = OpsServer(host, int(port), self.metrics, self._health,
                                 before_scrape=lambda: self.metrics.refresh(self.db))
            await self.ops.start()
            stack.push_async_callback(self.ops.stop)

    async def _flush_activity(self) -> None:
        with contextlib.suppress(Exception):
            await self.services.activity.flush()

    async def _stop_polling(self) -> None:
        if self._polling is None:
            return
        with contextlib.suppress(Exception):
            await self.dp.stop_polling()
        self._polling.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._polling

    async def stop(self) -> None:
        """Closes everything start made, newest first; safe to call again."""
        try:
            await self._stack.aclose()
        finally:
            self._stopped.set()

    def _health(self) -> tuple[bool, dict[str, object]]:
        return engine_health(
            polling_alive=self._polling is not None and not self._polling.done(),
            heartbeat_age_s=self.metrics.heartbeat_age(),
            max_age_s=self.config.ops.heartbeat_max_age_s,
            in_flight=self.engine.in_flight)

    def _on_token_rejected(self) -> None:
        if not self.token_rejected:
            log.error("telegram rejected the bot token (401 Unauthorized) while running: stopping")
        self.token_rejected = True
        self._stop_requested.set()

    async def run_until_signal(self) -> int:
        """Run until SIGTERM/SIGINT (exit code 0) or until polling dies for good (non-zero, so
        systemd's Restart=on-failure sees it; 78 for a revoked token, which it does not restart)."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._stop_requested.set)
        polling = self._polling
        assert polling is not None
        waiter = asyncio.create_task(self._stop_requested.wait())
        await asyncio.wait({waiter, polling}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        code = EXIT_CONFIG if self.token_rejected else 0
        if polling.done() and not self._stop_requested.is_set():
            problem = polling.exception() if not polling.cancelled() else None
            log.error("polling stopped for good (%s): exiting with an error so systemd restarts the bot",
                      type(problem).__name__ if problem else "ended")
            code = EXIT_CONFIG if isinstance(problem, TelegramUnauthorizedError) else EXIT_FAILED
        log.info("neurocards stopping")
        await self.stop()
        return code
