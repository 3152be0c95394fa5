"""`neurocards run|credits` — the operator's entry point."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from neurocards.config import Config, ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurocards", description="Product photo → marketing video bot")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the bot (long polling + generation engine)")
    run.add_argument("--config", default="config.toml")
    run.add_argument("--sandbox", action="store_true", help="make videos locally with ffmpeg instead of KIE")

    credits = sub.add_parser("credits", help="show or change a user's credits")
    credits_sub = credits.add_subparsers(dest="action", required=True)
    add = credits_sub.add_parser("add", help="add credits (a negative amount removes)")
    add.add_argument("user_id", type=int)
    add.add_argument("amount", type=int)
    add.add_argument("--reason", default="manual adjustment")
    add.add_argument("--config", default="config.toml")
    show = credits_sub.add_parser("show", help="show balance and recent ledger rows")
    show.add_argument("user_id", type=int)
    show.add_argument("--json", action="store_true")
    show.add_argument("--config", default="config.toml")
    user = sub.add_parser("user", help="look up, ban or unban a user")
    user_sub = user.add_subparsers(dest="action", required=True)
    for action, text in (("info", "profile, balance, jobs, last errors"), ("ban", "ban (queued jobs refunded)"),
                         ("unban", "lift a ban")):
        cmd = user_sub.add_parser(action, help=text)
        cmd.add_argument("user_id", type=int)
        cmd.add_argument("--json", action="store_true")
        cmd.add_argument("--config", default="config.toml")

    stats = sub.add_parser("stats", help="today and 7 days: users, videos, failures, credits")
    stats.add_argument("--json", action="store_true")
    stats.add_argument("--config", default="config.toml")
    return parser


async def _user(config: Config, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from neurocards.jobs.admin import ban_user, unban_user
    from neurocards.store.db import Database
    from neurocards.store.jobs import JobStore
    from neurocards.store.stats import user_report
    from neurocards.store.users import UserStore

    db = await Database.open(config.storage.database)
    try:
        users = UserStore(db)
        if args.action == "ban":
            result = await ban_user(db, users, JobStore(db), args.user_id, admin_id=None)
            print(f"user {args.user_id}: {'banned' if result.changed else 'already banned'}"
                  f", {len(result.cancelled_jobs)} queued jobs cancelled and refunded")
            return 0
        if args.action == "unban":
            changed = await unban_user(db, users, args.user_id, admin_id=None)
            print(f"user {args.user_id}: {'unbanned' if changed else 'was not banned'}")
            return 0
        report = await user_report(db, args.user_id)
        if report is None:
            print(f"user {args.user_id} has never used the bot", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(asdict(report), ensure_ascii=False))
        else:
            print(f"user {report.user_id} @{report.username or '-'} {report.first_name or ''}")
            print(f"  balance {report.balance}{'  BANNED' if report.banned else ''}; referrer {report.referrer_id}")
            print(f"  jobs: {report.jobs_by_state}")
            for job_id, cls, text in report.last_errors:
                print(f"  failed job {job_id}: {cls}: {text[:120]}")
        return 0
    finally:
        await db.close()


async def _stats(config: Config, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from neurocards.store.db import Database
    from neurocards.store.stats import period_stats

    db = await Database.open(config.storage.database)
    try:
        periods = [await period_stats(db, 1), await period_stats(db, 7)]
    finally:
        await db.close()
    if args.json:
        print(json.dumps({"today": asdict(periods[0]), "week": asdict(periods[1])}, ensure_ascii=False))
        return 0
    for title, p in zip(("today", "7 days"), periods, strict=True):
        print(f"{title}: new users {p.new_users}, delivered {p.delivered}, failures {p.failures_by_class},"
              f" credits charged {p.credits_charged}, refunded {p.credits_refunded}")
    return 0


async def _credits(config: Config, args: argparse.Namespace) -> int:
    from neurocards.jobs.credits import NotEnoughToRemove, add_credits
    from neurocards.store.db import Database
    from neurocards.store.users import UserStore

    db = await Database.open(config.storage.database)
    try:
        users = UserStore(db)
        if args.action == "add":
            if args.amount == 0:
                print("error: amount must not be 0", file=sys.stderr)
                return 2
            try:
                change = await add_credits(db, users, args.user_id, args.amount, reason="admin", note=args.reason)
            except NotEnoughToRemove as exc:
                print(f"error: cannot remove {-args.amount}: balance is {exc.balance}", file=sys.stderr)
                return 1
            print(f"user {change.user_id}: {change.delta:+d} credits, balance {change.balance}")
            return 0
        user = await users.get(args.user_id)
        balance = user.balance if user else 0
        ledger = await users.ledger(args.user_id, limit=20)
        if args.json:
            print(json.dumps({
                "user_id": args.user_id,
                "exists": user is not None,
                "balance": balance,
                "ledger_sum": await users.ledger_sum(args.user_id),
                "banned": bool(user and user.is_banned),
                "ledger": [{"id": r.id, "delta": r.delta, "reason": r.reason, "job_id": r.job_id,
                            "note": r.note, "created_at": r.created_at} for r in ledger],
            }, ensure_ascii=False))
        else:
            print(f"user {args.user_id}: balance {balance}" + ("" if user else " (never used the bot)"))
            for r in ledger:
                print(f"  #{r.id} {r.delta:+d} {r.reason}" + (f" job {r.job_id}" if r.job_id else "")
                      + (f" — {r.note}" if r.note else ""))
        return 0
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, sandbox=getattr(args, "sandbox", False))
    except ConfigError as exc:
        print(f"neurocards: {exc}", file=sys.stderr)
        return 2
    if args.command == "credits":
        return asyncio.run(_credits(config, args))
    if args.command == "user":
        return asyncio.run(_user(config, args))
    if args.command == "stats":
        return asyncio.run(_stats(config, args))

    from neurocards.app import Application
    from neurocards.logs import setup_logging

    setup_logging(config)
    try:
        asyncio.run(Application(config).run_until_signal())
    except ConfigError as exc:
        print(f"neurocards: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
