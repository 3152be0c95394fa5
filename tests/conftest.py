"""Shared fixtures. After every test, every database the test created must keep the ledger rules."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from neurocards import speedups

speedups.install()  # as `neurocards run` does, before anything imports aiogram

from tests.engine_kit import EngineKit, running_kit  # noqa: E402 (after speedups.install)
from tests.fakes.kie import FakeKie  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402
from tests.harness import TOKEN, Harness  # noqa: E402


def ledger_violations(db_path: Path) -> list[str]:
    """Balance = sum of ledger rows for every user; no job charged or refunded twice."""
    problems: list[str] = []
    conn = sqlite3.connect(db_path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "users" not in tables:
            return problems
        for user_id, balance, total in conn.execute(
            "SELECT u.id, u.balance, COALESCE((SELECT SUM(delta) FROM credit_ledger l WHERE l.user_id = u.id), 0)"
            " FROM users u"
        ):
            if balance != total:
                problems.append(f"user {user_id}: balance {balance} != ledger sum {total}")
        for job_id, reason, n in conn.execute(
            "SELECT job_id, reason, COUNT(*) FROM credit_ledger WHERE job_id IS NOT NULL"
            " GROUP BY job_id, reason HAVING COUNT(*) > 1"
        ):
            problems.append(f"job {job_id}: {n} rows of {reason}")
        for (job_id,) in conn.execute(
            "SELECT id FROM jobs j WHERE state = 'failed' AND EXISTS (SELECT 1 FROM credit_ledger"
            " WHERE job_id = j.id AND reason = 'job_charge') AND NOT EXISTS (SELECT 1 FROM credit_ledger"
            " WHERE job_id = j.id AND reason = 'job_refund')"
        ):
            problems.append(f"job {job_id}: failed but not refunded")
        for (job_id,) in conn.execute(
            "SELECT id FROM jobs j WHERE state = 'done' AND EXISTS (SELECT 1 FROM credit_ledger"
            " WHERE job_id = j.id AND reason = 'job_refund')"
        ):
            problems.append(f"job {job_id}: delivered and refunded")
        problems += _price_adjustment_violations(conn)
    finally:
        conn.close()
    return problems


def _price_adjustment_violations(conn: sqlite3.Connection) -> list[str]:
    """A delivered job made by a cheaper provider got the difference back once; no other job did."""
    if "price" not in {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}:
        return []
    problems = []
    for job_id, state, cost, price, charged, adjusted in conn.execute(
        "SELECT j.id, j.state, j.cost, j.price,"
        " (SELECT -SUM(delta) FROM credit_ledger WHERE job_id = j.id AND reason = 'job_charge'),"
        " (SELECT SUM(delta) FROM credit_ledger WHERE job_id = j.id AND reason = 'price_adjustment')"
        " FROM jobs j"
    ):
        due = (charged or 0) - price if state == "done" and price is not None and charged \
            and price < charged else None
        if adjusted != due:
            problems.append(f"job {job_id} ({state}, cost {cost}, price {price}): "
                            f"price adjustment {adjusted}, expected {due}")
    return problems


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """In a mutation run, the fastest tests first: mutmut stops a mutant's run at its first failing
    test, so a killed mutant costs the cheapest test that notices it, not a minute of end-to-end
    tests that happened to come first (mutmut hands pytest the tests as an unordered set)."""
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return
    stats = Path("mutmut-stats.json")  # mutmut runs the tests from inside mutants/
    if not stats.exists():
        return
    duration = json.loads(stats.read_text(encoding="utf-8")).get("duration_by_test", {})
    items.sort(key=lambda item: duration.get(item.nodeid, float("inf")))


@pytest.fixture(autouse=True)
def ledger_invariant(tmp_path: Path):
    yield
    for db_path in tmp_path.rglob("*.sqlite3"):
        problems = ledger_violations(db_path)
        assert not problems, f"ledger invariant broken in {db_path.name}: {problems}"


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """Fake Telegram + fake KIE running; the bot is started by the test (in-process or as a subprocess)."""
    tg = FakeTelegram(token=TOKEN)
    kie = FakeKie()
    await tg.start()
    await kie.start()
    h = Harness(tmp_path, tg, kie)
    try:
        yield h
    finally:
        if h.process is not None:
            h.process.kill()
            h.process.wait(timeout=10)
        await h.stop()
        await kie.stop()
        await tg.stop()
    tg.assert_no_rejections()


@pytest.fixture
async def engine_kit(tmp_path: Path) -> AsyncIterator[EngineKit]:
    """The real engine over a real SQLite file, with an in-memory provider (see tests/engine_kit.py)."""
    async with running_kit(tmp_path) as kit:
        yield kit


@pytest.fixture
def service_dir() -> Iterator[Path]:
    """Like /opt/neurocards: traversable by the service user (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="nc-opt-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
