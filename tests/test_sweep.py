"""Old photos and videos are swept at start-up and daily; recent ones stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from neurocards.builders import sweep_storage
from neurocards.config import load_config
from tests.test_cli import BASE_CONFIG


def test_sweep_removes_only_files_older_than_retention(tmp_path: Path) -> None:
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(BASE_CONFIG, encoding="utf-8")
    config = load_config(cfg_path, env={})
    old_time = time.time() - (config.storage.retention_days + 1) * 86400
    kept, swept = [], []
    for folder in (config.storage.photos_dir, config.storage.outputs_dir):
        folder.mkdir(parents=True)
        old, new = folder / "old.bin", folder / "new.bin"
        old.write_bytes(b"x")
        new.write_bytes(b"y")
        os.utime(old, (old_time, old_time))
        swept.append(old)
        kept.append(new)
    assert sweep_storage(config) == 2
    assert all(p.exists() for p in kept) and not any(p.exists() for p in swept)
