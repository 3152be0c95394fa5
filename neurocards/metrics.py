"""Prometheus metrics and the loopback ops server (`/metrics`, `/healthz`).

Everything lives in one `CollectorRegistry` per `Metrics` instance, never in
prometheus-client's global registry: tests run several applications in one
process, and global collectors would collide on the second instance.

Counters are pushed by the engine through small typed methods; values that
other objects already keep (KIE per-key counts, proxy health) are pulled at
scrape time by `StateCollector`, which copies only whitelisted, non-secret
fields into labels.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from neurocards.store.db import Database
from neurocards.store.jobs import JobState
from neurocards.store.monitoring import jobs_by_state, jobs_due

log = logging.getLogger("neurocards.metrics")

# KIE video tasks take minutes; sendVideo of a few-MB file takes seconds.
GENERATION_BUCKETS = (30, 60, 90, 120, 180, 240, 300, 420, 600, 900, 1200, 1800, math.inf)
GPT_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, math.inf)
DELIVERY_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300, math.inf)
KEY_STATES = ("active", "cooling", "disabled")

StatesFn = Callable[[], list[dict[str, Any]]]


class Metrics:
    def __init__(self, *, kie_key_states: StatesFn | None = None, proxy_states: StatesFn | None = None,
                 refresh_interval_s: float = 5.0, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.delivered = Counter("neurocards_jobs_delivered_total", "Jobs delivered to the chat.", registry=r)
        self.failures = Counter("neurocards_job_failures_total", "Jobs ended as failed, by failure class.",
                                ["class"], registry=r)
        self.retries = Counter("neurocards_job_retries_total", "Retries scheduled, by failure class.",
                               ["class"], registry=r)
        self.refunds = Counter("neurocards_refunds_total", "Failed jobs whose charge was refunded.", registry=r)
        self.charged = Counter("neurocards_credits_charged_total", "Credits charged for new jobs.", registry=r)
        self.refunded = Counter("neurocards_credits_refunded_total", "Credits given back by refunds.", registry=r)
        self.send_errors = Counter("neurocards_telegram_send_errors_total",
                                   "Failed sendVideo calls, by delivery error kind.", ["kind"], registry=r)
        self.orphaned = Counter("neurocards_kie_tasks_orphaned_total",
                                "createTask calls repeated while an earlier one may have created a paid task "
                                "(a possible double payment), by reason.", ["reason"], registry=r)
        self.adopted = Counter("neurocards_kie_tasks_adopted_total",
                               "Tasks of unknown createTask outcome found again through their callback.",
                               registry=r)
        self.duplicate_risk = Counter("neurocards_telegram_video_resends_total",
                                      "sendVideo repeated after an attempt of unknown outcome (the seller may "
                                      "get the video twice).", registry=r)
        self.unconfirmed = Counter("neurocards_telegram_videos_unconfirmed_total",
                                   "Jobs ended as delivered although both sendVideo attempts were cut by a stop "
                                   "(no answer either time).", registry=r)
        self.reclaimed = Counter("neurocards_jobs_reclaimed_total",
                                 "Job claims released by the watchdog (the step that held them died).", registry=r)
        self.generation = Histogram("neurocards_generation_seconds", "Provider task time, submit to result.",
                                    buckets=GENERATION_BUCKETS, registry=r)
        self.delivery = Histogram("neurocards_delivery_seconds", "Duration of a successful sendVideo.",
                                  buckets=DELIVERY_BUCKETS, registry=r)
        self.gpt_calls = Counter("neurocards_gpt_requests_total", "GPT prompt rewrites, by outcome.",
                                 ["outcome"], registry=r)
        self.gpt_failures = Counter("neurocards_gpt_failures_total", "Failed GPT prompt rewrites, by kind.",
                                    ["reason"], registry=r)
        self.gpt_latency = Histogram("neurocards_gpt_latency_seconds", "Duration of a GPT prompt rewrite.",
                                     buckets=GPT_BUCKETS, registry=r)
        self.gpt_keys = Gauge("neurocards_gpt_keys_available", "OpenAI keys not cooling down.", registry=r)
        for outcome in ("success", "failure"):
            self.gpt_calls.labels(outcome=outcome)
        self.in_flight = Gauge("neurocards_jobs_in_flight", "Jobs being driven by the engine now.", registry=r)
        self.waiting = Gauge("neurocards_jobs_waiting_for_slot",
                             "Jobs due to run but not started (no free engine slot yet).", registry=r)
        self.jobs = Gauge("neurocards_jobs", "Jobs in the table, by state.", ["state"], registry=r)
        heartbeat = Gauge("neurocards_engine_heartbeat_age_seconds",
                          "Seconds since the engine dispatcher last ran.", registry=r)
        heartbeat.set_function(self.heartbeat_age)
        # Until the first beat the age counts from construction, so a dispatcher that never
        # starts shows up as a growing age instead of a misleading 0.
        self._last_beat = time.monotonic()
        self._heartbeat_source: Callable[[], float] | None = None
        self._refresh_interval_s = refresh_interval_s
        self._refreshed_at = -math.inf
        self._states = {s.value for s in JobState}
        for state in self._states:  # every series exists from the start: no gaps in the graphs
            self.jobs.labels(state=state)
        r.register(StateCollector(kie_key_states, proxy_states))
        if process:
            ProcessCollector(registry=r)

    # ---- called by the engine / orders -------------------------------------------

    def job_delivered(self, generation_s: float | None, delivery_s: float | None) -> None:
        """A job reached DONE. Pass `generation_s` only if `generation_finished` was not called;
        `delivery_s` is None when no sendVideo answered (delivered unconfirmed)."""
        self.delivered.inc()
        if generation_s is not None:
            self.generation.observe(generation_s)
        if delivery_s is not None:
            self.delivery.observe(delivery_s)

    def generation_finished(self, generation_s: float) -> None:
        """The provider task succeeded (whether or not delivery later works)."""
        self.generation.observe(generation_s)

    def job_failed(self, cls: str, refunded_credits: int) -> None:
        self.failures.labels(**{"class": cls}).inc()
        if refunded_credits > 0:
            self.refunds.inc()
            self.refunded.inc(refunded_credits)

    def job_retry(self, cls: str) -> None:
        self.retries.labels(**{"class": cls}).inc()

    def credits_charged(self, n: int) -> None:
        if n > 0:
            self.charged.inc(n)

    def kie_task_orphaned(self, reason: str) -> None:
        self.orphaned.labels(reason=reason).inc()

    def kie_task_adopted(self) -> None:
        self.adopted.inc()

    def video_resent_unsure(self) -> None:
        self.duplicate_risk.inc()

    def video_unconfirmed(self) -> None:
        self.unconfirmed.inc()

    def claims_reclaimed(self, n: int) -> None:
        if n > 0:
            self.reclaimed.inc(n)

    def telegram_send_error(self, kind: str) -> None:
        self.send_errors.labels(kind=kind).inc()

    def gpt_call(self, ok: bool, latency_s: float, reason: str = "") -> None:
        self.gpt_calls.labels(outcome="success" if ok else "failure").inc()
        if not ok:
            self.gpt_failures.labels(reason=reason or "other").inc()
        self.gpt_latency.observe(latency_s)

    def bind_gpt_keys(self, available: Callable[[], int]) -> None:
        self.gpt_keys.set_function(lambda: float(available()))

    def set_engine(self, in_flight: int, waiting: int | None = None) -> None:
        """`waiting` is optional: `refresh` also derives it from the table."""
        self.in_flight.set(in_flight)
        if waiting is not None:
            self.waiting.set(waiting)

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def bind_engine(self, in_flight: Callable[[], int], heartbeat: Callable[[], float]) -> None:
        """Read the engine's own numbers at scrape time (`engine.in_flight`, `engine.heartbeat`,
        a time.monotonic() stamp) instead of the engine calling set_engine/beat."""
        self.in_flight.set_function(lambda: float(in_flight()))
        self._heartbeat_source = heartbeat

    def heartbeat_age(self) -> float:
        last = self._heartbeat_source() if self._heartbeat_source is not None else self._last_beat
        return max(0.0, time.monotonic() - last)

    # ---- pulled from the database -----------------------------------------------

    async def refresh(self, db: Database, *, force: bool = False) -> bool:
        """Re-read job counts; skipped (returns False) within `refresh_interval_s` of the last
        read, so frequent scrapes cost at most one small query per interval."""
        now = time.monotonic()
        if not force and now - self._refreshed_at < self._refresh_interval_s:
            return False
        self._refreshed_at = now
        counts = await jobs_by_state(db)
        self._states |= set(counts)
        for state in self._states:  # a state that emptied out must drop to 0, not stay stale
            self.jobs.labels(state=state).set(counts.get(state, 0))
        self.waiting.set(await jobs_due(db, time.time()))
        return True

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class StateCollector(Collector):
    """Scrape-time view of KIE keys and proxies. Only `key_id`, `state`, the counters and a
    host:port label are read from the state dicts, so secrets in them can never leak."""

    def __init__(self, kie_key_states: StatesFn | None, proxy_states: StatesFn | None) -> None:
        self._keys = kie_key_states
        self._proxies = proxy_states

    def collect(self) -> Iterator[Metric]:
        yield from self._collect_keys(_safe_call(self._keys))
        yield from self._collect_proxies(_safe_call(self._proxies))

    def _collect_keys(self, states: list[dict[str, Any]]) -> Iterable[Metric]:
        requests = CounterMetricFamily("neurocards_kie_key_requests", "KIE requests made with a key.",
                                       labels=["key_id"])
        errors = CounterMetricFamily("neurocards_kie_key_errors", "KIE requests with a key that failed.",
                                     labels=["key_id"])
        cooling = GaugeMetricFamily("neurocards_kie_key_cooling",
                                    "1 while a key is not used for new tasks (cooling or disabled).",
                                    labels=["key_id"])
        state_g = GaugeMetricFamily("neurocards_kie_key_state", "1 for the key's current state.",
                                    labels=["key_id", "state"])
        left = GaugeMetricFamily("neurocards_kie_key_cooldown_seconds",
                                 "Seconds until a cooling or disabled key is used again.", labels=["key_id"])
        wall = time.time()
        for s in states:
            key_id = str(s.get("key_id") or "")
            if not key_id:
                continue
            state = str(s.get("state") or "active")
            requests.add_metric([key_id], float(s.get("requests") or 0))
            errors.add_metric([key_id], float(s.get("errors") or 0))
            cooling.add_metric([key_id], 0.0 if state == "active" else 1.0)
            for name in (*KEY_STATES, *([state] if state not in KEY_STATES else [])):
                state_g.add_metric([key_id, name], 1.0 if name == state else 0.0)
            until = s.get("cooldown_until")
            left.add_metric([key_id], max(0.0, float(until) - wall) if until else 0.0)
        return requests, errors, cooling, state_g, left

    def _collect_proxies(self, states: list[dict[str, Any]]) -> Iterable[Metric]:
        healthy = GaugeMetricFamily("neurocards_proxy_healthy", "1 while a proxy is in rotation.",
                                    labels=["pool", "proxy"])
        failures = CounterMetricFamily("neurocards_proxy_failures", "Connect failures through a proxy.",
                                       labels=["pool", "proxy"])
        seen: set[tuple[str, str]] = set()
        for s in states:
            labels = (str(s.get("pool") or "default"), proxy_label(str(s.get("label") or "")))
            if not labels[1] or labels in seen:  # a duplicate series would make the scrape invalid
                continue
            seen.add(labels)
            healthy.add_metric(list(labels), 1.0 if s.get("healthy") else 0.0)
            failures.add_metric(list(labels), float(s.get("failures") or 0))
        return healthy, failures


def proxy_label(label: str) -> str:
    """host:port only. `Proxy.label` already is; this guards against a URL slipping in."""
    label = label.split("://", 1)[-1]
    return label.rsplit("@", 1)[-1].split("/", 1)[0]


def pool_states(pools: dict[str, Any]) -> StatesFn:
    """Merge `ProxyPool.states()` of named pools (e.g. telegram/api share proxies) into one callable."""
    return lambda: [dict(s, pool=name) for name, pool in pools.items() for s in pool.states()]


def _safe_call(fn: StatesFn | None) -> list[dict[str, Any]]:
    if fn is None:
        return []
    try:
        return list(fn())
    except Exception:  # a broken source must not take the whole scrape down
        log.exception("metrics state source failed")
        return []


def engine_health(*, polling_alive: bool, heartbeat_age_s: float, max_age_s: float,
                  **extra: Any) -> tuple[bool, dict[str, Any]]:
    """The app's health verdict: polling task running and the dispatcher beating recently."""
    ok = polling_alive and heartbeat_age_s < max_age_s
    return ok, {"polling": polling_alive, "engine_heartbeat_age_s": round(heartbeat_age_s, 3),
                "max_heartbeat_age_s": max_age_s, **extra}


HealthFn = Callable[[], tuple[bool, dict[str, Any]]]


class OpsServer:
    """aiohttp server in the bot's loop. Loopback by default: metrics reveal load and key ids,
    so exposing it further is a deliberate choice (reverse proxy with auth)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9108, metrics: Metrics | None = None,
                 health: HealthFn | None = None, *,
                 before_scrape: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics or Metrics()
        self._health = health or (lambda: (True, {}))
        self._before_scrape = before_scrape
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        # Scrapes every 15 s would flood the log; failures still reach the handlers' logger.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]  # resolves port 0
        log.info("ops server listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._before_scrape is not None:
            try:
                await self._before_scrape()
            except Exception:  # serve slightly stale numbers rather than no numbers
                log.exception("metrics refresh failed")
        body, content_type = self.metrics.exposition(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            ok, details = self._health()
        except Exception as exc:
            ok, details = False, {"error": f"health check raised {type(exc).__name__}"}
        payload = {**details, "ok": bool(ok)}
        return web.Response(status=200 if ok else 503, text=json.dumps(payload, default=str),
                            content_type="application/json")
