"""`neurocards run|credits|user|statement|stats|backup|restore|doctor|...` — the operator's entry point.

Only `run` and `payments` talk to Telegram or KIE and need the secrets; the other commands work
on the database alone. Every refusal is one line (a JSON object with `--json`) and a non-zero
exit code."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

from neurocards.config import Config, ConfigError, load_config

OFFLINE_COMMANDS = ("credits", "user", "statement", "stats", "promo", "broadcast", "backup", "restore", "doctor")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (JSON with --json), not a usage block."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        line = f"{self.prog}: {message} (see --help)"  # prog starts with "neurocards"
        if OneLineParser.json_errors:
            print(json.dumps({"error": line}, ensure_ascii=False))
        else:
            print(line, file=sys.stderr)
        sys.exit(2)


def _refuse(message: str, *, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({"error": message}, ensure_ascii=False))
    else:
        print(f"neurocards: {message}", file=sys.stderr)


def _number(check: Callable[[int], int]) -> Callable[[str], int]:
    def parse(text: str) -> int:
        from neurocards.services.credits import BadAdminInput

        try:
            return check(int(text))
        except BadAdminInput as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None

    parse.__name__ = "number"
    return parse


def _user_id(text: str) -> int:
    from neurocards.services.credits import check_user_id

    return _number(check_user_id)(text)


def _amount(text: str) -> int:
    from neurocards.services.credits import check_amount

    return _number(check_amount)(text)


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="neurocards", description="Product photo → marketing video bot")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the bot (long polling + generation engine)")
    run.add_argument("--config", default="config.toml")
    run.add_argument("--sandbox", action="store_true", help="make videos locally with ffmpeg instead of KIE")

    credits = sub.add_parser("credits", help="show or change a user's credits")
    credits_sub = credits.add_subparsers(dest="action", required=True)
    add = credits_sub.add_parser("add", help="add credits (a negative amount removes)")
    add.add_argument("user_id", type=_user_id)
    add.add_argument("amount", type=_amount)
    add.add_argument("--reason", default="manual adjustment")
    add.add_argument("--config", default="config.toml")
    show = credits_sub.add_parser("show", help="show balance and recent ledger rows")
    show.add_argument("user_id", type=_user_id)
    show.add_argument("--json", action="store_true")
    show.add_argument("--config", default="config.toml")
    user = sub.add_parser("user", help="look up, ban or unban a user")
    user_sub = user.add_subparsers(dest="action", required=True)
    for action, text in (("info", "profile, balance, jobs, last errors"), ("ban", "ban (queued jobs refunded)"),
                         ("unban", "lift a ban")):
        cmd = user_sub.add_parser(action, help=text)
        cmd.add_argument("user_id", type=_user_id)
        cmd.add_argument("--json", action="store_true")
        cmd.add_argument("--config", default="config.toml")

    payments = sub.add_parser("payments", help="Telegram Stars payments")
    payments_sub = payments.add_subparsers(dest="action", required=True)
    refund = payments_sub.add_parser("refund", help="return the Stars of a payment and take back its credits")
    refund.add_argument("user_id", type=_user_id)
    refund.add_argument("charge_id", help="telegram_payment_charge_id")
    refund.add_argument("--config", default="config.toml")

    backup = sub.add_parser("backup", help="online backup of the database (safe while the bot runs)")
    backup.add_argument("--config", default="config.toml")
    restore = sub.add_parser("restore", help="restore a backup (refused while the bot runs)")
    restore.add_argument("file")
    restore.add_argument("--config", default="config.toml")

    promo = sub.add_parser("promo", help="promo codes: create, list, disable")
    promo_sub = promo.add_subparsers(dest="action", required=True)
    create = promo_sub.add_parser("create", help="a new code worth --credits, for --uses sellers")
    create.add_argument("code", help="3-32 of A-Z, 0-9, _ and - (case-insensitive)")
    create.add_argument("--credits", type=int, required=True)
    create.add_argument("--uses", type=int, help="how many sellers may redeem it (default: no cap)")
    create.add_argument("--expires", help="last day it works, YYYY-MM-DD (UTC)")
    create.add_argument("--json", action="store_true")
    create.add_argument("--config", default="config.toml")
    listing = promo_sub.add_parser("list", help="every code with its uses")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--config", default="config.toml")
    disable = promo_sub.add_parser("disable", help="stop a code from being redeemed")
    disable.add_argument("code")
    disable.add_argument("--config", default="config.toml")
    statement = sub.add_parser("statement", help="a user's whole credit history (offline: no token needed)")
    statement.add_argument("user_id", type=int)
    statement.add_argument("--csv", action="store_true", help="CSV, as the seller downloads it")
    statement.add_argument("--json", action="store_true")
    statement.add_argument("--config", default="config.toml")

    broadcast = sub.add_parser("broadcast", help="broadcasts sent from the bot")
    broadcast_sub = broadcast.add_subparsers(dest="action", required=True)
    bc_list = broadcast_sub.add_parser("list", help="every broadcast with its counts")
    bc_list.add_argument("--json", action="store_true")
    bc_list.add_argument("--config", default="config.toml")

    doctor = sub.add_parser("doctor", help="check everything an operator can get wrong, one line per check")
    doctor.add_argument("--config", default="config.toml")
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--offline", action="store_true", help="skip the checks that need the network")
    doctor.add_argument("--env-file", help="read the secrets from this file too (the unit's EnvironmentFile)")
    doctor.add_argument("--unit", help="the systemd unit to check (default /etc/systemd/system/neurocards.service)")

    stats = sub.add_parser("stats", help="today and 7 days: users, videos, failures, credits")
    stats.add_argument("--json", action="store_true")
    stats.add_argument("--png", metavar="FILE", help="also write the 14-day chart as a PNG")
    stats.add_argument("--config", default="config.toml")
    return parser


async def _user(config: Config, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from neurocards.services.admin import ban_user, unban_user
    from neurocards.store.db import Database
    from neurocards.store.jobs import JobStore
    from neurocards.store.stats import user_report
    from neurocards.store.users import UserStore

    db = await Database.open(config.storage.database, create=False)
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
            _refuse(f"user {args.user_id} has never used the bot", as_json=args.json)
            return 1
        if args.json:
            print(json.dumps(asdict(report), ensure_ascii=False))
        else:
            if not report.seen:
                print(f"user {report.user_id} has not started the bot yet (credited or banned ahead)")
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

    from neurocards.services.costs import margin
    from neurocards.store.db import Database
    from neurocards.store.stats import period_stats

    db = await Database.open(config.storage.database, create=False)
    try:
        periods = [await period_stats(db, 1), await period_stats(db, 7)]
        if args.png:
            from neurocards.services.digest_chart import render_chart
            from neurocards.store.stats import daily_numbers

            png = await asyncio.to_thread(render_chart, await daily_numbers(db, 14))
            Path(args.png).write_bytes(png)
    finally:
        await db.close()
    if args.json:
        print(json.dumps({"today": asdict(periods[0]), "week": asdict(periods[1])}, ensure_ascii=False))
        return 0
    for title, p in zip(("today", "7 days"), periods, strict=True):
        print(f"{title}: new users {p.new_users}, delivered {p.delivered}, failures {p.failures_by_class},"
              f" credits charged {p.credits_charged}, refunded {p.credits_refunded}"
              + (f", promo redemptions {p.promo_redemptions}" if p.promo_redemptions else ""))
        print(f"  KIE tasks {p.kie_tasks} ({p.kie_credits:g} credits), OpenAI tokens {p.openai_tokens},"
              f" stars received {p.stars_received}")
        m = margin(p, config)
        if m.delivered:
            print(f"  per delivered video: revenue ${m.revenue_per_video:.3f}, cost ${m.cost_per_video:.3f},"
                  f" margin ${m.margin_per_video:.3f}; {m.wasted_share:.0%} of the KIE cost went to failed"
                  " and doubled tasks")
    if args.png:
        print(f"chart of the last 14 days: {args.png}")
    return 0


PROMO_ERRORS = {
    "code": "the code must be 3-32 of A-Z, 0-9, _ and -",
    "credits": "--credits must be a whole number from 1 to 1000000",
    "uses": "--uses must be a whole number from 1 to 1000000",
    "expires": "--expires must be a date YYYY-MM-DD, today or later (UTC)",
    "exists": "this code exists already",
}


async def _promo(config: Config, args: argparse.Namespace) -> int:
    from neurocards.services.promo import PromoInputError, Promos, as_json
    from neurocards.store.db import Database
    from neurocards.store.promo import PromoStore

    db = await Database.open(config.storage.database, create=False)
    try:
        promos = Promos(PromoStore(db))
        if args.action == "create":
            try:
                promo = await promos.create(args.code, args.credits, args.uses, args.expires)
            except PromoInputError as exc:
                print(f"error: {PROMO_ERRORS[exc.what]}: {exc.value!r}; nothing created", file=sys.stderr)
                return 2
            items = [promo]
        elif args.action == "disable":
            disabled = await promos.disable(args.code)
            if disabled is None:
                print(f"error: no promo code {args.code!r}", file=sys.stderr)
                return 1
            print(f"promo {disabled.code}: disabled ({disabled.used} used)")
            return 0
        else:
            items = await promos.list()
    finally:
        await db.close()
    if getattr(args, "json", False):
        data = [as_json(p) for p in items]
        print(json.dumps(data if args.action == "list" else data[0], ensure_ascii=False))
        return 0
    for p in items:
        info = as_json(p)
        print(f"{p.code}: +{p.credits} credits, used {p.used}/{p.max_uses or '∞'}"
              + (f", expires after {info['expires']}" if info["expires"] else "")
              + (" DISABLED" if p.disabled else ""))
    if not items:
        print("no promo codes yet")
    return 0


async def _broadcasts(config: Config, args: argparse.Namespace) -> int:
    import datetime as dt
    from dataclasses import asdict

    from neurocards.store.broadcasts import BroadcastStore
    from neurocards.store.db import Database

    db = await Database.open(config.storage.database, create=False)
    try:
        store = BroadcastStore(db)
        items = [(b, await store.counts(b.id)) for b in await store.all()]
    finally:
        await db.close()
    rows = [{"id": b.id, "created_at": dt.datetime.fromtimestamp(b.created_at, dt.UTC).isoformat(timespec="seconds"),
             "admin_id": b.admin_id, "kind": b.kind, "segment": b.segment, "state": b.state, **asdict(c)}
            for b, c in items]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    for r in rows:
        print(f"#{r['id']} {r['created_at']} {r['kind']} to {r['segment']}: {r['state']}; sent {r['sent']},"
              f" blocked {r['blocked']}, failed {r['failed']}, unknown {r['unknown']}, left {r['pending']}"
              f" of {r['total']}")
    if not rows:
        print("no broadcasts yet")
    return 0


async def _statement(config: Config, args: argparse.Namespace) -> int:
    from neurocards.bot import statement
    from neurocards.store.db import Database
    from neurocards.store.statement import StatementStore
    from neurocards.store.users import UserStore

    if not config.storage.database.exists():  # a typo in the path must not answer "no history"
        print(f"error: no database at {config.storage.database}", file=sys.stderr)
        return 1
    db = await Database.open(config.storage.database, create=False)
    try:
        rows = await StatementStore(db).rows(args.user_id)
        balance = await UserStore(db).balance(args.user_id)
    finally:
        await db.close()
    if args.json:
        print(json.dumps(statement.to_json(args.user_id, balance, rows), ensure_ascii=False))
    elif args.csv:
        sys.stdout.write(statement.to_csv(rows).decode("utf-8").lstrip("\ufeff"))
    else:
        print(f"user {args.user_id}: balance {balance}, {len(rows)} ledger rows")
        for r in rows:
            print(f"  {statement.iso(r.at)}  {r.amount:+d}  -> {r.balance_after}  {r.kind}"
                  f"  {statement.row_ref(r)}  {statement.row_text(r)}")
    return 0


async def _credits(config: Config, args: argparse.Namespace) -> int:
    from neurocards.services.credits import NotEnoughToRemove, add_credits
    from neurocards.store.db import Database
    from neurocards.store.users import UserStore

    db = await Database.open(config.storage.database, create=False)
    try:
        users = UserStore(db)
        if args.action == "add":
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
                "seen": bool(user and user.seen),
                "balance": balance,
                "ledger_sum": await users.ledger_sum(args.user_id),
                "banned": bool(user and user.is_banned),
                "ledger": [{"id": r.id, "delta": r.delta, "reason": r.reason, "job_id": r.job_id,
                            "note": r.note, "created_at": r.created_at} for r in ledger],
            }, ensure_ascii=False))
        else:
            note = "" if user and user.seen else " (has not started the bot yet)" if user else " (never used the bot)"
            print(f"user {args.user_id}: balance {balance}{note}")
            for r in ledger:
                print(f"  #{r.id} {r.delta:+d} {r.reason}" + (f" job {r.job_id}" if r.job_id else "")
                      + (f" — {r.note}" if r.note else ""))
        return 0
    finally:
        await db.close()


async def _payments(config: Config, args: argparse.Namespace) -> int:
    """Refunds need Telegram: the bot's own builders, with its token, API server and proxies."""
    from contextlib import AsyncExitStack

    from neurocards.bot.billing import star_refunder, tell_refunded
    from neurocards.builders import build_bot, build_chain, build_network, open_database
    from neurocards.jobs.templates import TemplateCatalog
    from neurocards.services import build_services
    from neurocards.services.payments import CreditsSpent, RefundRefused

    async with AsyncExitStack() as stack:
        network = build_network(config, stack)
        bot = build_bot(config, stack, network)
        db = await open_database(config, stack, create=False)
        services = build_services(config, db, build_chain(config, stack),
                                  TemplateCatalog.load(config.generation.prompts_file))
        try:
            done = await services.payments.refund(args.user_id, args.charge_id, admin_id=None,
                                                  refund_stars=star_refunder(bot))
        except CreditsSpent as exc:
            print(f"error: refused: credits already spent (balance {exc.balance} < {exc.credits});"
                  ' set payments.refund_when_spent = "allow" to refund anyway', file=sys.stderr)
            return 1
        except RefundRefused as exc:
            print(f"error: refused: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"user {args.user_id}: refunded {done.payment.stars} stars, -{done.removed} credits,"
              f" balance {done.balance}")
        await tell_refunded(bot, done)
        return 0


def _backup_or_restore(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from neurocards.store.backup import (
        BackupError,
        RestoreRefused,
        backup_database,
        restore_database,
    )

    backup_dir = config.ops.backup_dir or config.storage.dir / "backups"
    if args.command == "backup":
        try:
            path = backup_database(config.storage.database, backup_dir, config.ops.backup_keep)
        except BackupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"backup written: {path}")
        return 0
    try:
        set_aside = restore_database(Path(args.file), config.storage.database,
                                     lock_path=config.storage.dir / "neurocards.lock")
    except RestoreRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"restored {args.file}" + (f"; the previous database was kept as {set_aside}" if set_aside else ""))
    return 0


def _run_on_fastest_loop(main_coro: Coroutine[Any, Any, int]) -> int:
    """uvloop where it exists (Linux, macOS): bench/ measured the same work for less CPU, and
    socket I/O and the loop itself are most of the bot's CPU under load."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows: the standard loop works, only slower
        return asyncio.run(main_coro)
    return uvloop.run(main_coro)


def _read_env_file(path: str) -> dict[str, str]:
    """systemd's EnvironmentFile format: KEY=VALUE lines, # comments, optional quotes."""
    from pathlib import Path

    values: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def _doctor(args: argparse.Namespace) -> int:
    import os

    from neurocards.doctor import Check, failed, run_doctor

    checks: list[Check]
    try:
        env = {**os.environ, **(_read_env_file(args.env_file) if args.env_file else {})}
        config = load_config(args.config, env=env, online=False)
    except (ConfigError, OSError) as exc:
        detail = str(exc) if isinstance(exc, ConfigError) else f"{args.env_file}: {exc.strerror or exc}"
        checks = [Check("config", "fail", detail, "fix the line named above, then run doctor again")]
    else:
        checks = asyncio.run(run_doctor(config, offline=args.offline,
                                        unit_path=Path(args.unit) if args.unit else None))
    if args.json:
        print(json.dumps({"ok": not failed(checks), "checks": [c.as_dict() for c in checks]}, ensure_ascii=False))
    else:
        print("\n".join(c.line() for c in checks))
    return 1 if failed(checks) else 0


def _offline(config: Config, args: argparse.Namespace) -> int:
    from neurocards.store.db import DatabaseUnavailable

    try:
        command = {"credits": _credits, "user": _user, "statement": _statement, "stats": _stats,
                   "promo": _promo, "broadcast": _broadcasts, "payments": _payments}.get(args.command)
        if command is not None:
            return asyncio.run(command(config, args))
        return _backup_or_restore(config, args)
    except DatabaseUnavailable as exc:
        _refuse(str(exc), as_json=getattr(args, "json", False))
        return 1
    except sqlite3.OperationalError as exc:  # e.g. locked past the busy timeout by a stuck writer
        _refuse(f"database {config.storage.database}: {exc} (the bot may be busy writing); try again",
                as_json=getattr(args, "json", False))
        return 1


def main(argv: list[str] | None = None) -> int:
    from neurocards.store.privacy import restrict_umask

    restrict_umask()  # the database, backups, photos and videos are private whatever the shell's umask
    argv = sys.argv[1:] if argv is None else argv
    OneLineParser.json_errors = "--json" in argv
    args = _parser().parse_args(argv)
    if args.command in ("run", "payments"):  # the commands that talk to Telegram through aiogram
        from neurocards import speedups

        speedups.install()
    as_json = getattr(args, "json", False)
    if args.command == "doctor":
        return _doctor(args)
    try:
        # Only the commands that talk to Telegram or run the bot need the token and the KIE keys.
        config = load_config(args.config, sandbox=getattr(args, "sandbox", False),
                             online=args.command not in OFFLINE_COMMANDS)
    except ConfigError as exc:
        _refuse(str(exc), as_json=as_json)
        return 2
    if args.command != "run":
        return _offline(config, args)

    from neurocards.app import Application
    from neurocards.logs import setup_logging, setup_sentry
    from neurocards.startup import StartupFailed
    from neurocards.store.db import DatabaseUnavailable

    setup_logging(config)
    setup_sentry(config)
    try:
        return _run_on_fastest_loop(Application(config).run_until_signal())
    except ConfigError as exc:
        print(f"neurocards: {exc}", file=sys.stderr)
        return 2
    except StartupFailed as exc:
        print(f"neurocards: {exc}", file=sys.stderr)
        return exc.exit_code
    except DatabaseUnavailable as exc:
        print(f"neurocards: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
