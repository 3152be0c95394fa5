"""The one table (Markdown) plus the diagnostics behind each row."""

from __future__ import annotations

import math
from typing import Any

from .orders import rows as order_rows
from .scenarios import PACER_SHARE, Settings

GOAL_IN_FLIGHT = 1000
GOAL_RSS_MB = 200.0
GOAL_JOBS_PER_S = 50.0
GOAL_RESUME_S = 2.0
GOAL_P99_MS = 20.0
PER_ACCOUNT_PER_HOUR = 20 * 3600 // 10  # 7,200


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "MISS")


def _num(value: Any, fmt: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, fmt)


def build_table(results: dict[str, Any], settings: Settings, quick: bool) -> str:
    rows: list[tuple[str, str, str, str]] = []
    scale = " (quick: scaled down)" if quick else ""

    tp = results.get("throughput")
    if isinstance(tp, dict):
        ok = tp["jobs_per_s"] >= GOAL_JOBS_PER_S and tp["delivered"] == tp["jobs"]
        rows.append((
            f"End-to-end throughput, 0 s generation delay, {tp['users']} users × "
            f"{settings.videos_per_user} videos, {settings.keys} keys as {settings.keys} accounts*, "
            f"bot's default Telegram pacing",
            f"≥ {GOAL_JOBS_PER_S:.0f} jobs/s",
            f"{tp['jobs_per_s']:.1f} jobs/s ({tp['delivered']}/{tp['jobs']} videos in "
            f"{tp['elapsed_s']:.1f} s)", _verdict(ok)))
    elif tp is not None:
        rows.append(("End-to-end throughput", f"≥ {GOAL_JOBS_PER_S:.0f} jobs/s", f"ERROR: {tp}", "MISS"))

    unpaced = results.get("throughput_unpaced")
    if isinstance(unpaced, dict):
        rows.append((
            "Same with the bot's Telegram pacing off (`telegram.send_per_s = 0`; real Telegram "
            "allows ~30 messages/s)", "info",
            f"{unpaced['jobs_per_s']:.1f} jobs/s ({unpaced['delivered']}/{unpaced['jobs']} in "
            f"{unpaced['elapsed_s']:.1f} s)", "—"))
    elif unpaced is not None:
        rows.append(("Throughput, pacing off", "info", f"ERROR: {unpaced}", "—"))

    single = results.get("throughput_stock")
    if isinstance(single, dict):
        rows.append((
            f"Same with all {settings.keys} keys in one account (plain `api_keys` list), "
            f"{single['users']} users × {settings.videos_per_user}",
            "info", f"{single['jobs_per_s']:.2f} jobs/s ({single['delivered']}/{single['jobs']} in "
            f"{single['elapsed_s']:.1f} s)", "—"))
    elif single is not None:
        rows.append(("Throughput, stock launcher", "info", f"ERROR: {single}", "—"))

    hold = results.get("hold")
    if isinstance(hold, dict):
        target = min(GOAL_IN_FLIGHT, hold["jobs"]) if quick else GOAL_IN_FLIGHT
        rows.append((
            f"Most jobs in flight at once, {hold['hold_delay_s']:.0f} s generation delay, "
            f"poll interval {settings.poll_interval_s:.0f} s{scale}",
            f"≥ {target:,}", f"{hold['max_generating_db']:,} (of {hold['jobs']:,} launched)",
            _verdict(hold["max_generating_db"] >= target)))
        rows.append((
            "Bot peak RSS while holding them (VmRSS sampled every 0.2 s; VmHWM)",
            f"≤ {GOAL_RSS_MB:.0f} MB",
            f"{hold['peak_rss_mb']:.0f} MB (VmHWM {hold['vmhwm_mb']:.0f} MB)",
            _verdict(hold["peak_rss_mb"] <= GOAL_RSS_MB and hold["vmhwm_mb"] <= GOAL_RSS_MB)))
        lat = hold.get("latency") or {}
        ok_lat = lat.get("p99_ms", math.inf) <= GOAL_P99_MS and lat.get("answered") == lat.get("pushed")
        rows.append((
            f"Update→answer latency at {settings.latency_rate:.0f} updates/s for "
            f"{settings.latency_s:.0f} s, {hold['in_flight_after_latency']:,} jobs in flight, p50 / p99",
            f"p99 ≤ {GOAL_P99_MS:.0f} ms",
            f"{_num(lat.get('p50_ms'))} / {_num(lat.get('p99_ms'))} ms "
            f"({lat.get('answered', 0)}/{lat.get('pushed', 0)} answered)", _verdict(ok_lat)))
        rows.append((
            f"KIE requests/s the bot sends while holding {hold['in_flight_at_poll_window']:,} jobs",
            "info", f"{hold['kie_req_per_s']:.1f} req/s (bot CPU {hold['hold_cpu']['bot_cpu_pct']:.0f} %)",
            "—"))
    elif hold is not None:
        rows.append(("Jobs in flight / RSS / latency / KIE req/s", "", f"ERROR: {hold}", "MISS"))

    res = results.get("resume")
    if isinstance(res, dict):
        value = res["spawn_to_all_polled_s"]
        rows.append((
            f"Resume: process start → first poll of every one of {res['jobs']:,} unfinished jobs"
            f"{scale}", f"≤ {GOAL_RESUME_S:.0f} s",
            f"{_num(value, '.2f')} s (first poll at {_num(res['spawn_to_first_poll_s'], '.2f')} s; "
            f"{res['polled']:,} polled)",
            _verdict(value is not None and value <= GOAL_RESUME_S)))
    elif res is not None:
        rows.append(("Resume", f"≤ {GOAL_RESUME_S:.0f} s", f"ERROR: {res}", "MISS"))

    rows += order_rows(results)

    kie_429 = sum(r.get("kie_429", 0) for r in results.values() if isinstance(r, dict))
    tg_429 = sum(r.get("tg_429", 0) for r in results.values() if isinstance(r, dict))
    rows.append(("429s from KIE / Telegram, all scenarios (KIE fake enforces 20 creates/10 s per "
                 "account and 10 polls/s per key; Telegram fake has no flood limit)", "0",
                 f"{kie_429} / {tg_429}", _verdict(kie_429 == 0 and tg_429 == 0)))
    rows.append((
        "KIE jobs/hour ceiling from the configured accounts (20 creates / 10 s / account)", "info",
        f"1 account → {PER_ACCOUNT_PER_HOUR:,}/h "
        f"({PER_ACCOUNT_PER_HOUR * PACER_SHARE:,.0f}/h at the bot's 19/10 s pacing); bench*: "
        f"{settings.keys} accounts → {settings.keys * PER_ACCOUNT_PER_HOUR:,}/h "
        f"({settings.keys * PER_ACCOUNT_PER_HOUR * PACER_SHARE:,.0f}/h)", "—"))

    lines = ["| Metric | Goal | Measured | Result |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def build_details(results: dict[str, Any]) -> str:
    out: list[str] = []
    for name in ("throughput", "throughput_unpaced"):
        tp = results.get(name)
        if not isinstance(tp, dict):
            continue
        out.append(
            f"- {name}: bot start {tp['startup_s']:.1f} s; {tp['users']} users walked to the "
            f"confirm screen in {tp['walk_s']:.1f} s; first video {_num(tp['first_video_s'], '.2f')} s "
            f"after the first launch press; createTask rate {tp['create_rate']:.1f}/s; bot CPU "
            f"{tp['bot_cpu_pct']:.0f} %, fakes CPU {tp['fakes_cpu_pct']:.0f} % of one core; fakes' loop "
            f"lag p99 {tp['fakes_loop_lag_p99_ms']:.1f} ms; peak bot RSS {tp['peak_rss_mb']:.0f} MB; "
            f"peak Telegram sends {tp['tg_peak_sends_per_s']}/s; KIE 429s {tp['kie_429_by_endpoint']}; "
            f"DB {tp['db_states']}; Telegram errors {tp['tg_errors']}")
    single = results.get("throughput_stock")
    if isinstance(single, dict):
        out.append(
            f"- one account: createTask rate {single['create_rate']:.2f}/s (one shared pacer); bot CPU "
            f"{single['bot_cpu_pct']:.0f} %; DB {single['db_states']}")
    hold = results.get("hold")
    if isinstance(hold, dict):
        lat = hold.get("latency") or {}
        out.append(
            f"- hold: bot start {hold['startup_s']:.1f} s; walk {hold['walk_s']:.1f} s; all "
            f"{hold['jobs']} generating {_num(hold['time_to_hold_all_s'])} s after the first launch "
            f"(createTask {hold['create_rate']:.1f}/s); KIE in flight (fake's view) max "
            f"{hold['max_in_flight_kie']}; polls {hold['kie_polls_per_s']:.1f}/s; bot CPU while only "
            f"polling {hold['hold_cpu']['bot_cpu_pct']:.0f} %, fakes {hold['hold_cpu']['fakes_cpu_pct']:.0f} %; "
            f"RSS over the whole run {hold['peak_rss_whole_run_mb']:.0f} MB; KIE 429s "
            f"{hold['kie_429_by_endpoint']}; Telegram errors {hold['tg_errors']}")
        if lat:
            out.append(
                f"- latency: pushed {lat['pushed']} ({lat['pushed_by_kind']}) at "
                f"{lat['achieved_rate']:.0f}/s, answered {lat['answered']}; p50 {lat['p50_ms']:.1f}, "
                f"p90 {lat['p90_ms']:.1f}, p99 {lat['p99_ms']:.1f}, max {lat['max_ms']:.1f} ms; p50 by kind "
                f"{ {k: round(v, 1) for k, v in lat['p50_by_kind_ms'].items()} }, p99 by kind "
                f"{ {k: round(v, 1) for k, v in lat['p99_by_kind_ms'].items()} }; of which waiting "
                f"for the bot's next getUpdates p50 {_num(lat.get('to_delivery_p50_ms'))} / p99 "
                f"{_num(lat.get('to_delivery_p99_ms'))} ms; Bot API calls per update "
                f"{_num(lat.get('api_calls_per_update'), '.2f')} (getUpdates {_num(lat.get('getupdates_per_update'), '.2f')}); "
                f"bot CPU {lat['bot_cpu_pct']:.0f} % ({_num(lat.get('bot_cpu_ms_per_update'), '.2f')} ms per update), fakes CPU {lat['fakes_cpu_pct']:.0f} %; fakes' loop lag "
                f"p99 {lat['fakes_loop_lag_p99_ms']:.1f} ms; p99 per second of the test "
                f"{lat.get('p99_per_second_ms')}")
    for name in ("orders", "orders_no_edits"):
        r = results.get(name)
        if isinstance(r, dict):
            out.append(
                f"- {name}: walk (album → confirm) {r['walk_s']:.1f} s; all delivered "
                f"{_num(r['elapsed_s'])} s after the first launch; status messages {r['status_messages']}, "
                f"summaries {r['summaries']}; peak Telegram sends {r['tg_peak_sends_per_s']}/s; bot CPU "
                f"{r['bot_cpu_pct']:.0f} %; peak RSS {r['peak_rss_mb']:.0f} MB; DB {r['db_states']}; "
                f"Telegram errors {r['tg_errors']}; latency {r['latency']['answered']}/{r['latency']['pushed']}"
                f" answered at {r['latency']['achieved_rate']:.0f}/s")
    res = results.get("resume")
    if isinstance(res, dict):
        out.append(
            f"- resume: first request from the new process {_num(res['spawn_to_first_request_s'], '.2f')} s "
            f"after spawn (imports, DB open); first→last first-poll {_num(res['first_to_last_poll_s'], '.2f')} s; "
            f"client pacing alone needs {res['pacer_bound_s']:.2f} s ({res['jobs']} polls / "
            f"(keys × 9/s)); share of jobs polled by time since spawn {res.get('progress_s')}; "
            f"peak RSS {res['peak_rss_mb']:.0f} MB; KIE 429s {res['kie_429']}; KIE requests "
            f"{res.get('kie_endpoints')}; bot CPU from spawn {res.get('bot_cpu_pct', 0):.0f} %, fakes "
            f"{res.get('fakes_cpu_pct', 0):.0f} %; fakes' loop lag p99 "
            f"{_num(res.get('fakes_loop_lag_p99_ms'))} ms")
    return "\n".join(out)
