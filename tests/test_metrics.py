"""Metrics: the typed methods move the exposed numbers; the ops server serves them over HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from neurocards.metrics import Metrics, OpsServer, engine_health, pool_states, proxy_label
from neurocards.store.db import Database
from neurocards.store.jobs import JobStore
from neurocards.store.orders import OrderStore
from neurocards.store.users import ProductStore, UserStore

SECRET = "sk-live-THIS-IS-A-SECRET-KEY"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    text = metrics.exposition()[0].decode()
    return samples(text).get((name, tuple(sorted(labels.items()))))


def key_states() -> list[dict]:
    return [
        {"key_id": "a1b2c3d4e5", "account": "main", "state": "active", "cooldown_until": None,
         "reason": "", "requests": 12, "errors": 1, "secret": SECRET},
        {"key_id": "ffee001122", "account": "main", "state": "disabled",
         "cooldown_until": time.time() + 100, "reason": f"Bearer {SECRET} is out of credits",
         "requests": 3, "errors": 3, "key": SECRET},
    ]


class FakePool:
    def __init__(self, states: list[dict]) -> None:
        self._states = states

    def states(self) -> list[dict]:
        return self._states


def test_methods_change_the_exposition() -> None:
    m = Metrics(process=False)
    assert value(m, "neurocards_jobs_delivered_total") == 0
    m.job_delivered(generation_s=95.0, delivery_s=2.5)
    m.job_delivered(generation_s=None, delivery_s=0.4)
    m.generation_finished(700.0)
    m.job_failed("temporary", refunded_credits=10)
    m.job_failed("delivery", refunded_credits=0)
    m.job_retry("rate_limit")
    m.job_retry("rate_limit")
    m.credits_charged(30)
    m.telegram_send_error("network")
    m.set_engine(in_flight=3, waiting=7)

    assert value(m, "neurocards_jobs_delivered_total") == 2
    assert value(m, "neurocards_generation_seconds_count") == 2
    assert value(m, "neurocards_generation_seconds_sum") == 795.0
    assert value(m, "neurocards_generation_seconds_bucket", le="120.0") == 1
    assert value(m, "neurocards_delivery_seconds_count") == 2
    assert value(m, "neurocards_delivery_seconds_bucket", le="0.5") == 1
    assert value(m, "neurocards_job_failures_total", **{"class": "temporary"}) == 1
    assert value(m, "neurocards_job_failures_total", **{"class": "delivery"}) == 1
    assert value(m, "neurocards_refunds_total") == 1
    assert value(m, "neurocards_credits_refunded_total") == 10
    assert value(m, "neurocards_job_retries_total", **{"class": "rate_limit"}) == 2
    assert value(m, "neurocards_credits_charged_total") == 30
    assert value(m, "neurocards_telegram_send_errors_total", kind="network") == 1
    assert value(m, "neurocards_jobs_in_flight") == 3
    assert value(m, "neurocards_jobs_waiting_for_slot") == 7


def test_heartbeat_age_grows_and_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("neurocards.metrics.time.monotonic", lambda: clock[0])
    m = Metrics(process=False)
    clock[0] += 42
    assert value(m, "neurocards_engine_heartbeat_age_seconds") == 42
    m.beat()
    clock[0] += 1.5
    assert value(m, "neurocards_engine_heartbeat_age_seconds") == 1.5


def test_bind_engine_reads_the_engine_at_scrape_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [500.0]
    monkeypatch.setattr("neurocards.metrics.time.monotonic", lambda: clock[0])
    engine = {"running": 4, "heartbeat": 490.0}
    m = Metrics(process=False)
    m.bind_engine(lambda: engine["running"], lambda: engine["heartbeat"])
    assert value(m, "neurocards_jobs_in_flight") == 4
    assert value(m, "neurocards_engine_heartbeat_age_seconds") == 10
    engine["running"], engine["heartbeat"] = 1, 499.5
    assert value(m, "neurocards_jobs_in_flight") == 1
    assert m.heartbeat_age() == 0.5


def test_two_instances_do_not_collide() -> None:
    a, b = Metrics(), Metrics()
    a.job_retry("unknown")
    assert value(a, "neurocards_job_retries_total", **{"class": "unknown"}) == 1
    assert value(b, "neurocards_job_retries_total", **{"class": "unknown"}) is None


def test_state_collectors_never_output_secrets() -> None:
    proxies = pool_states({
        "telegram": FakePool([{"label": "10.0.0.1:1080", "healthy": True, "failures": 0},
                              {"label": "user:hunter2@10.0.0.2:1080", "healthy": False, "failures": 4}]),
        "api": FakePool([{"label": "10.0.0.1:1080", "healthy": False, "failures": 2}]),
    })
    m = Metrics(kie_key_states=key_states, proxy_states=proxies, process=False)
    text = m.exposition()[0].decode()
    assert SECRET not in text and "hunter2" not in text and "user:" not in text and "main" not in text
    assert value(m, "neurocards_kie_key_requests_total", key_id="a1b2c3d4e5") == 12
    assert value(m, "neurocards_kie_key_errors_total", key_id="ffee001122") == 3
    assert value(m, "neurocards_kie_key_cooling", key_id="a1b2c3d4e5") == 0
    assert value(m, "neurocards_kie_key_cooling", key_id="ffee001122") == 1
    assert value(m, "neurocards_kie_key_state", key_id="ffee001122", state="disabled") == 1
    assert value(m, "neurocards_kie_key_state", key_id="ffee001122", state="active") == 0
    assert 90 < (value(m, "neurocards_kie_key_cooldown_seconds", key_id="ffee001122") or 0) <= 100
    # The same proxy in two pools stays two distinct series.
    assert value(m, "neurocards_proxy_healthy", pool="telegram", proxy="10.0.0.1:1080") == 1
    assert value(m, "neurocards_proxy_healthy", pool="api", proxy="10.0.0.1:1080") == 0
    assert value(m, "neurocards_proxy_healthy", pool="telegram", proxy="10.0.0.2:1080") == 0
    assert value(m, "neurocards_proxy_failures_total", pool="telegram", proxy="10.0.0.2:1080") == 4


def test_proxy_label_strips_credentials_and_scheme() -> None:
    assert proxy_label("socks5://u:p@1.2.3.4:1080") == "1.2.3.4:1080"
    assert proxy_label("1.2.3.4:1080") == "1.2.3.4:1080"


def test_broken_state_source_does_not_break_the_scrape() -> None:
    def boom() -> list[dict]:
        raise RuntimeError("provider closed")

    m = Metrics(kie_key_states=boom, process=False)
    m.credits_charged(5)
    assert value(m, "neurocards_credits_charged_total") == 5


async def test_refresh_counts_jobs_by_state_and_is_rate_limited(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "m.sqlite3")
    try:
        users, products, jobs = UserStore(db), ProductStore(db), JobStore(db)
        await users.touch(1, username="u", first_name="U", language="ru", welcome_credits=100)
        pid = await products.create(1, "file-1", str(tmp_path / "p.jpg"))
        created = await OrderStore(db).create_charged(user_id=1, chat_id=1, request_key="r1", product_ids=[pid],
                                                      per_product=3, template="t", wishes="", provider="sandbox",
                                                      model="m", cost_each=10)
        await jobs.update(created.job_ids[0], state="generating", claimed=1)
        m = Metrics(refresh_interval_s=60, process=False)
        assert await m.refresh(db)
        assert value(m, "neurocards_jobs", state="queued") == 2
        assert value(m, "neurocards_jobs", state="generating") == 1
        assert value(m, "neurocards_jobs", state="done") == 0
        assert value(m, "neurocards_jobs_waiting_for_slot") == 2  # due, unclaimed
        await jobs.update(created.job_ids[1], state="generating")
        assert not await m.refresh(db)  # within the interval: no query, old numbers
        assert value(m, "neurocards_jobs", state="generating") == 1
        assert await m.refresh(db, force=True)
        assert value(m, "neurocards_jobs", state="generating") == 2
    finally:
        await db.close()


@pytest.fixture
async def ops() -> AsyncIterator[tuple[OpsServer, dict]]:
    state = {"polling": True, "age": 1.0}
    metrics = Metrics(kie_key_states=key_states, proxy_states=None)
    scrapes: list[int] = []

    async def before_scrape() -> None:
        scrapes.append(1)

    server = OpsServer(
        "127.0.0.1", 0, metrics,
        lambda: engine_health(polling_alive=state["polling"], heartbeat_age_s=state["age"], max_age_s=60),
        before_scrape=before_scrape)
    state["scrapes"] = scrapes
    await server.start()
    try:
        yield server, state
    finally:
        await server.stop()


async def test_ops_server_serves_metrics(ops: tuple[OpsServer, dict]) -> None:
    server, state = ops
    assert server.port != 0
    server.metrics.job_failed("billing", refunded_credits=10)
    server.metrics.telegram_send_error("forbidden")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{server.port}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=")
            text = await resp.text()
    got = samples(text)
    assert got[("neurocards_job_failures_total", (("class", "billing"),))] == 1
    assert got[("neurocards_telegram_send_errors_total", (("kind", "forbidden"),))] == 1
    assert got[("neurocards_kie_key_requests_total", (("key_id", "a1b2c3d4e5"),))] == 12
    families = {f.name for f in text_string_to_metric_families(text)}
    for name in ("neurocards_jobs_delivered", "neurocards_generation_seconds", "neurocards_delivery_seconds",
                 "neurocards_jobs_in_flight", "neurocards_jobs_waiting_for_slot", "neurocards_jobs",
                 "neurocards_engine_heartbeat_age_seconds", "neurocards_refunds",
                 "neurocards_credits_charged", "neurocards_credits_refunded"):
        assert name in families, name
    assert ("neurocards_jobs", (("state", "queued"),)) in got
    assert SECRET not in text
    assert state["scrapes"] == [1]


async def test_ops_server_speaks_openmetrics_when_asked(ops: tuple[OpsServer, dict]) -> None:
    server, _ = ops
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{server.port}/metrics",
                            headers={"Accept": "application/openmetrics-text; version=1.0.0"}) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await resp.text()).rstrip().endswith("# EOF")


async def test_healthz_200_then_503(ops: tuple[OpsServer, dict]) -> None:
    server, state = ops
    url = f"http://127.0.0.1:{server.port}/healthz"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["ok"] is True and body["polling"] is True
        state["age"] = 61.0
        async with http.get(url) as resp:
            assert resp.status == 503
            body = await resp.json()
            assert body["ok"] is False and body["engine_heartbeat_age_s"] == 61.0
        state["age"], state["polling"] = 1.0, False
        async with http.get(url) as resp:
            assert resp.status == 503
            assert (await resp.json())["polling"] is False


async def test_healthz_503_when_health_raises() -> None:
    def broken() -> tuple[bool, dict]:
        raise RuntimeError("no engine")

    server = OpsServer("127.0.0.1", 0, Metrics(process=False), broken)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{server.port}/healthz") as resp:
                assert resp.status == 503
                assert (await resp.json())["ok"] is False
    finally:
        await server.stop()
