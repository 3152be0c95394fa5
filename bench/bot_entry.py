"""`neurocards run --config ...` with every configured KIE key treated as its own account.

The bot's config cannot say which account a key belongs to (neurocards/app.py builds
`KieProvider(config.kie)` without `accounts=`), so all keys share one "default" account and one
createTask pacer (~1.9 tasks/s in total). This bench-only entry point swaps in a provider built
with `accounts={key: "acct<i>"}`; everything else is the unchanged CLI.

Set BENCH_PROFILE=/path/file.prof to write a cProfile of the whole run (for finding hot spots).
"""

from __future__ import annotations

import cProfile
import os
import sys

import neurocards.app as app
from neurocards.cli import main
from neurocards.config import Config
from neurocards.providers.base import VideoProvider
from neurocards.providers.kie import KieProvider


def _provider_with_accounts(config: Config) -> VideoProvider:
    accounts = {key: f"acct{i}" for i, key in enumerate(config.kie.api_keys)}
    return KieProvider(config.kie, accounts=accounts)


def run(argv: list[str]) -> int:
    if os.environ.get("BENCH_ACCOUNTS") == "1":
        app.build_provider = _provider_with_accounts
    profile_path = os.environ.get("BENCH_PROFILE")
    if not profile_path:
        return main(argv)
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(main, argv)
    finally:
        profiler.dump_stats(profile_path)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
