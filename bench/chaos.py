"""Chaos figures: what SIGKILLs at random moments cost in KIE tasks and duplicate videos.

    .venv/bin/python -m bench.chaos                      # 50 jobs, 20 kills, callbacks on and off
    .venv/bin/python -m bench.chaos --kills 5 --sellers 6

The real bot process (`python -m neurocards run`) against the fake KIE and Telegram servers of
tests/fakes: createTask and sendVideo take effect at once and answer 0.4 s later, the bot is
killed (SIGKILL) after a random 0.2-1.6 s and restarted, again and again, then left to finish.
Prints one Markdown table (the numbers in bench/README.md come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos import ChaosResult, run_chaos  # noqa: E402
from tests.conftest import ledger_violations  # noqa: E402
from tests.fakes.kie import FakeKie  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402
from tests.harness import TOKEN, Harness  # noqa: E402


async def one_run(*, callbacks: bool, sellers: int, kills: int, seed: int) -> tuple[ChaosResult, float, list[str]]:
    with tempfile.TemporaryDirectory(prefix="nc-chaos-") as tmp:
        tg, kie = FakeTelegram(token=TOKEN), FakeKie()
        await tg.start()
        await kie.start()
        harness = Harness(Path(tmp), tg, kie)
        started = time.monotonic()
        try:
            result = await run_chaos(harness, sellers=sellers, videos_each=5, kills=kills, callbacks=callbacks,
                                     seed=seed, timeout=600)
        finally:
            if harness.process is not None:
                harness.process.kill()
                harness.process.wait(timeout=10)
            await kie.stop()
            await tg.stop()
        return result, time.monotonic() - started, ledger_violations(harness.db_path)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sellers", type=int, default=10, help="sellers ordering 5 videos each (default 10)")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--only", choices=("on", "off"), help="callbacks on or off only")
    args = parser.parse_args(argv)
    print("| callbacks | jobs (done/failed) | kills | KIE tasks paid per delivered video | max tasks per job "
          "| videos sent per done job | max videos per job | ledger | run time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for callbacks in (True, False):
        if args.only and args.only != ("on" if callbacks else "off"):
            continue
        r, took, problems = await one_run(callbacks=callbacks, sellers=args.sellers, kills=args.kills,
                                          seed=args.seed)
        print(f"| {'on' if callbacks else 'off'} | {r.jobs} ({r.done}/{r.failed}) | {r.kills} "
              f"| {r.tasks_per_delivered_video:.3f} ({r.kie_tasks} tasks) | {r.max_tasks_per_job} "
              f"| {r.videos_per_done_job:.3f} ({r.videos} videos) | {r.max_videos_per_job} "
              f"| {'exact' if not problems else '; '.join(problems)} | {took:.0f} s |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
