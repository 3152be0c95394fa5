"""Schema migrations, applied in order and tracked with PRAGMA user_version.

The ledger rules live in the database itself so no code path can break them:
a job is charged at most once and refunded at most once, a refund needs a
charge, and users.balance always equals the sum of the user's ledger rows
(a trigger applies every ledger row to the balance, a CHECK keeps it >= 0).
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the spine
    """
    CREATE TABLE users (
        id          INTEGER PRIMARY KEY,          -- Telegram user id
        username    TEXT,
        first_name  TEXT,
        language    TEXT,
        balance     INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
        is_banned   INTEGER NOT NULL DEFAULT 0,
        referrer_id INTEGER,
        first_seen  REAL NOT NULL,
        last_seen   REAL NOT NULL
    );

    CREATE TABLE products (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id        INTEGER NOT NULL REFERENCES users(id),
        photo_file_id  TEXT NOT NULL,
        photo_path     TEXT NOT NULL,
        description    TEXT,
        upload_url     TEXT,      -- provider URL of the uploaded photo, reused by sibling jobs
        upload_url_at  REAL,
        created_at     REAL NOT NULL
    );
    CREATE INDEX products_user ON products(user_id, id);

    CREATE TABLE jobs (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id          INTEGER NOT NULL REFERENCES users(id),
        chat_id          INTEGER NOT NULL,
        product_id       INTEGER NOT NULL REFERENCES products(id),
        request_key      TEXT NOT NULL UNIQUE,   -- makes a double-pressed "launch" harmless
        template         TEXT NOT NULL,
        wishes           TEXT NOT NULL DEFAULT '',
        provider         TEXT NOT NULL,
        model            TEXT NOT NULL,
        cost             INTEGER NOT NULL,
        state            TEXT NOT NULL,
        prompt           TEXT,
        image_url        TEXT,
        task_id          TEXT,
        key_id           TEXT,
        submitted_at     REAL,
        result_url       TEXT,
        video_path       TEXT,
        video_file_id    TEXT,
        attempts         INTEGER NOT NULL DEFAULT 0,  -- failed tries of the current kind of step
        retry_notified   INTEGER NOT NULL DEFAULT 0,
        queue_notified   INTEGER NOT NULL DEFAULT 0,
        error_class      TEXT,
        error_text       TEXT,
        run_after        REAL NOT NULL,
        claimed          INTEGER NOT NULL DEFAULT 0,
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL,
        started_at       REAL,
        finished_at      REAL
    );
    CREATE INDEX jobs_runnable ON jobs(run_after, id)
        WHERE claimed = 0 AND state NOT IN ('done', 'failed');
    CREATE INDEX jobs_user ON jobs(user_id, id);
    CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
    CREATE UNIQUE INDEX jobs_task ON jobs(task_id) WHERE task_id IS NOT NULL;

    CREATE TABLE job_events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id  INTEGER NOT NULL REFERENCES jobs(id),
        at      REAL NOT NULL,
        state   TEXT NOT NULL,
        detail  TEXT
    );
    CREATE INDEX job_events_job ON job_events(job_id, id);

    CREATE TABLE credit_ledger (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id     INTEGER NOT NULL REFERENCES users(id),
        delta       INTEGER NOT NULL CHECK (delta != 0),
        reason      TEXT NOT NULL,     -- welcome | job_charge | job_refund | admin | payment | referral
        job_id      INTEGER REFERENCES jobs(id),
        admin_id    INTEGER,
        note        TEXT,
        created_at  REAL NOT NULL
    );
    CREATE INDEX credit_ledger_user ON credit_ledger(user_id, id);
    CREATE UNIQUE INDEX ledger_charge_once ON credit_ledger(job_id) WHERE reason = 'job_charge';
    CREATE UNIQUE INDEX ledger_refund_once ON credit_ledger(job_id) WHERE reason = 'job_refund';
    CREATE UNIQUE INDEX ledger_welcome_once ON credit_ledger(user_id) WHERE reason = 'welcome';

    CREATE TRIGGER ledger_refund_needs_charge BEFORE INSERT ON credit_ledger
    WHEN NEW.reason = 'job_refund' AND NOT EXISTS (
        SELECT 1 FROM credit_ledger WHERE job_id = NEW.job_id AND reason = 'job_charge')
    BEGIN SELECT RAISE(ABORT, 'refund without a charge'); END;

    CREATE TRIGGER ledger_applies_to_balance AFTER INSERT ON credit_ledger
    BEGIN UPDATE users SET balance = balance + NEW.delta WHERE id = NEW.user_id; END;

    CREATE TRIGGER ledger_is_append_only BEFORE UPDATE ON credit_ledger
    BEGIN SELECT RAISE(ABORT, 'credit_ledger is append-only'); END;

    CREATE TABLE fsm (
        key    TEXT PRIMARY KEY,
        state  TEXT,
        data   TEXT NOT NULL DEFAULT '{}'
    );
    """,
    # 2: GPT-enhanced prompts, cached so the same product never pays GPT twice
    """
    CREATE TABLE prompt_cache (
        key         TEXT PRIMARY KEY,     -- sha256 of (model, template prompt, description, wishes)
        prompt      TEXT NOT NULL,
        created_at  REAL NOT NULL,
        hits        INTEGER NOT NULL DEFAULT 0
    );
    """,
    # 3: who did what, for every admin action that is not a ledger row
    """
    CREATE TABLE admin_audit (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        admin_id  INTEGER,              -- NULL: the command line
        action    TEXT NOT NULL,        -- ban | unban | ...
        user_id   INTEGER,
        detail    TEXT,
        at        REAL NOT NULL
    );
    CREATE INDEX admin_audit_user ON admin_audit(user_id, id);
    """,
]
