"""Argument parsing and the run order of the scenarios."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import botproc, orders, scenarios
from .report import build_details, build_table
from .scenarios import Settings

SCENARIOS = ("throughput", "throughput_unpaced", "hold", "resume", "throughput_stock", "orders",
             "orders_no_edits")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="neurocards benchmark (real bot process, fake servers)")
    p.add_argument("--quick", action="store_true", help="smaller numbers, finishes in < 2 minutes")
    p.add_argument("--keys", type=int, help="KIE API keys in the bot config (default 32)")
    p.add_argument("--throughput-users", type=int)
    p.add_argument("--videos-per-user", type=int, choices=(1, 2, 3, 5))
    p.add_argument("--hold-users", type=int, help="users launching jobs to hold (× videos per user)")
    p.add_argument("--hold-delay", type=float, help="generation delay while holding, s (default 60)")
    p.add_argument("--poll-interval", type=float, help="kie.poll_interval_s of the bot (default 10)")
    p.add_argument("--latency-rate", type=float, help="updates per second (default 200)")
    p.add_argument("--latency-seconds", type=float)
    p.add_argument("--resume-jobs", type=int)
    p.add_argument("--stock-users", type=int,
                   help="users for the stock-launcher throughput check (0 = skip)")
    p.add_argument("--no-kie-limits", action="store_true",
                   help="the fake KIE answers everything (no 20/10 s and 10/s limits)")
    p.add_argument("--order-sellers", type=int, help="sellers sending a 10-photo album each (default 50)")
    p.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--keep", action="store_true", help="keep the work directories (bot logs, DBs)")
    p.add_argument("--bot-src", type=Path,
                   help="run the bot from this source tree (a scratch copy with a fix to try)")
    return p


def settings_from(args: argparse.Namespace, workdir: Path) -> Settings:
    if args.quick:
        s = Settings(throughput_users=40, hold_users=60, hold_delay_s=28.0, latency_s=5.0,
                     resume_jobs=300, single_account_users=2, order_sellers=10, order_delay_s=10.0)
    else:
        s = Settings()
    s.workdir = workdir
    for arg, attr in (("keys", "keys"), ("throughput_users", "throughput_users"),
                      ("videos_per_user", "videos_per_user"), ("hold_users", "hold_users"),
                      ("hold_delay", "hold_delay_s"), ("poll_interval", "poll_interval_s"),
                      ("latency_rate", "latency_rate"), ("latency_seconds", "latency_s"),
                      ("resume_jobs", "resume_jobs"), ("stock_users", "single_account_users"),
                      ("order_sellers", "order_sellers")):
        value = getattr(args, arg)
        if value is not None:
            setattr(s, attr, value)
    s.poll_window_s = max(s.poll_interval_s, 5.0)  # one whole poll cycle: polls come in waves
    s.enforce_kie_limits = not args.no_kie_limits
    s.max_parallel = max(1200, s.hold_users * s.videos_per_user + 200)
    return s


async def run_all(settings: Settings, only: set[str], results: dict[str, Any]) -> None:
    plan = [
        ("throughput", lambda: scenarios.throughput(
            settings, users_n=settings.throughput_users, accounts=True, name="throughput")),
        ("throughput_unpaced", lambda: scenarios.throughput(
            settings, users_n=settings.throughput_users, accounts=True, name="unpaced", send_per_s=0)),
        ("hold", lambda: scenarios.hold_and_latency(settings)),
        ("resume", lambda: scenarios.resume(settings)),
        ("throughput_stock", lambda: scenarios.throughput(
            settings, users_n=settings.single_account_users, accounts=False, name="stock")),
        ("orders", lambda: orders.orders(
            settings, sellers=settings.order_sellers, delay_s=settings.order_delay_s, edits=True,
            name="orders", latency_rate=min(50, settings.order_sellers), latency_s=settings.order_delay_s / 2)),
        ("orders_no_edits", lambda: orders.orders(
            settings, sellers=settings.order_sellers, delay_s=settings.order_delay_s, edits=False,
            name="orders-off", latency_rate=min(50, settings.order_sellers),
            latency_s=settings.order_delay_s / 2)),
    ]
    for name, run in plan:
        if name not in only or (name == "throughput_stock" and settings.single_account_users <= 0):
            continue
        started = time.monotonic()
        print(f"[bench] {name} ...", flush=True)
        try:
            results[name] = await run()
        except Exception as exc:  # one broken scenario must not hide the others
            traceback.print_exc()
            results[name] = f"{type(exc).__name__}: {exc}"
        print(f"[bench] {name} done in {time.monotonic() - started:.0f} s", flush=True)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="neurocards-bench-"))
    if args.bot_src:
        botproc.BOT_SRC = str(args.bot_src.resolve())
    settings = settings_from(args, workdir)
    only = set(args.only or (s for s in SCENARIOS if s != "throughput_unpaced" or not args.quick))
    limit_s = 150 if args.quick else 570  # hard stops; typical runs take ~100 s and ~5 min
    started = time.monotonic()
    results: dict[str, Any] = {}
    try:
        asyncio.run(_bounded(run_all(settings, only, results), limit_s))
    except TimeoutError:
        print(f"[bench] stopped after the overall limit of {limit_s} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print()
    print(f"neurocards bench — {when} — {'quick' if args.quick else 'full'} run, {elapsed:.0f} s; "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}; numbers are noisy "
          f"(shared 2-core machine, fakes in the bench process)")
    if args.bot_src:
        print(f"bot source: {botproc.BOT_SRC} (not the installed neurocards)")
    print()
    print(build_table(results, settings, args.quick))
    print()
    launchers = sorted({r.get("launcher", "?") for r in results.values() if isinstance(r, dict)})
    print(f"\\* `[kie.accounts]` in the bench config puts every key in its own KIE account. "
          f"Bot started as: {', '.join(launchers)} --config <tmp>/config.toml.")
    print()
    print(build_details(results))
    if args.keep:
        print(f"\nwork directories kept in {workdir}")
    if args.json:
        args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(settings).items()},
                                         "results": results}, indent=2, default=str))
    return 0


async def _bounded(coro: Any, limit_s: float) -> None:
    async with asyncio.timeout(limit_s):
        await coro
