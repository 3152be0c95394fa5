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
        reason      TEXT NOT NULL,     -- welcome | job_charge | job_refund | price_adjustment | admin | payment | referral
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
    # 4: payments for Telegram Stars, referrals, the activity log and dashboard views
    """
    CREATE TABLE payments (
        id                          INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id                     INTEGER NOT NULL REFERENCES users(id),
        telegram_payment_charge_id  TEXT NOT NULL UNIQUE,   -- Telegram may repeat the update: credit once
        provider_payment_charge_id  TEXT,
        pack_id                     TEXT NOT NULL,
        credits                     INTEGER NOT NULL,
        stars                       INTEGER NOT NULL,
        currency                    TEXT NOT NULL,
        payload                     TEXT NOT NULL,
        status                      TEXT NOT NULL DEFAULT 'paid',  -- paid | refunding | refunded
        created_at                  REAL NOT NULL,
        refund_started_at           REAL,
        refunded_at                 REAL,
        refunded_credits            INTEGER,
        refunded_by                 INTEGER               -- admin id; NULL: the command line
    );
    CREATE INDEX payments_user ON payments(user_id, id);
    CREATE INDEX payments_created ON payments(created_at);

    -- Ledger rows point at what caused them, so the database itself keeps them unique.
    ALTER TABLE credit_ledger ADD COLUMN payment_id INTEGER REFERENCES payments(id);
    ALTER TABLE credit_ledger ADD COLUMN invited_user_id INTEGER;
    CREATE UNIQUE INDEX ledger_payment_once ON credit_ledger(payment_id) WHERE reason = 'payment';
    CREATE UNIQUE INDEX ledger_payment_refund_once ON credit_ledger(payment_id)
        WHERE reason = 'payment_refund';
    CREATE UNIQUE INDEX ledger_referral_once ON credit_ledger(invited_user_id) WHERE reason = 'referral';
    CREATE TRIGGER ledger_payment_rows_need_payment BEFORE INSERT ON credit_ledger
    WHEN NEW.reason IN ('payment', 'payment_refund') AND NEW.payment_id IS NULL
    BEGIN SELECT RAISE(ABORT, 'payment row without a payment'); END;
    CREATE TRIGGER ledger_referral_needs_invited BEFORE INSERT ON credit_ledger
    WHEN NEW.reason = 'referral' AND (NEW.invited_user_id IS NULL OR NEW.invited_user_id = NEW.user_id)
    BEGIN SELECT RAISE(ABORT, 'referral bonus without another invited user'); END;

    -- Referrals: a stable code per user; the referrer is set once and never to oneself.
    ALTER TABLE users ADD COLUMN ref_code TEXT;
    ALTER TABLE users ADD COLUMN referred_at REAL;
    CREATE UNIQUE INDEX users_ref_code ON users(ref_code) WHERE ref_code IS NOT NULL;
    CREATE INDEX users_referrer ON users(referrer_id) WHERE referrer_id IS NOT NULL;
    CREATE TRIGGER users_referrer_fixed BEFORE UPDATE OF referrer_id ON users
    WHEN OLD.referrer_id IS NOT NULL AND NEW.referrer_id IS NOT OLD.referrer_id
    BEGIN SELECT RAISE(ABORT, 'referrer is set once'); END;
    CREATE TRIGGER users_referrer_not_self BEFORE UPDATE OF referrer_id ON users
    WHEN NEW.referrer_id = NEW.id
    BEGIN SELECT RAISE(ABORT, 'a user cannot refer themselves'); END;

    -- Analytics: one row per meaningful action (start, photo, button, payment...).
    CREATE TABLE activity (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id  INTEGER,
        at       REAL NOT NULL,
        action   TEXT NOT NULL,   -- start | photo | text | command:<name> | button:<name> | invoice | payment | ...
        detail   TEXT
    );
    CREATE INDEX activity_at ON activity(at);
    CREATE INDEX activity_user ON activity(user_id, at);

    -- Dashboard views (Metabase reads a copy of this file; see docs/metabase.md). Days are UTC.
    -- Anything a user did: logged actions, plus jobs and payments (older than the activity log).
    CREATE VIEW v_user_events AS
        SELECT user_id, at FROM activity WHERE user_id IS NOT NULL
        UNION ALL SELECT user_id, created_at FROM jobs
        UNION ALL SELECT user_id, created_at FROM payments;

    CREATE VIEW v_users_daily AS
    WITH new AS (
        SELECT date(first_seen, 'unixepoch') AS day, COUNT(*) AS n FROM users GROUP BY 1),
    active AS (
        SELECT date(at, 'unixepoch') AS day, COUNT(DISTINCT user_id) AS n FROM v_user_events GROUP BY 1),
    days AS (SELECT day FROM new UNION SELECT day FROM active)
    SELECT days.day,
           COALESCE(new.n, 0) AS new_users,
           COALESCE(active.n, 0) AS active_users,
           SUM(COALESCE(new.n, 0)) OVER (ORDER BY days.day) AS total_users
    FROM days LEFT JOIN new ON new.day = days.day LEFT JOIN active ON active.day = days.day;

    CREATE VIEW v_jobs_daily AS
    SELECT date(created_at, 'unixepoch') AS day,
           COUNT(*) AS jobs,
           SUM(state = 'done') AS done,
           SUM(state = 'failed') AS failed,
           SUM(state NOT IN ('done', 'failed')) AS in_progress,
           ROUND(100.0 * SUM(state = 'done') / NULLIF(SUM(state IN ('done', 'failed')), 0), 1)
               AS success_rate_pct,
           ROUND(AVG(CASE WHEN state = 'done' THEN finished_at - COALESCE(started_at, created_at) END), 1)
               AS avg_duration_s,
           SUM(CASE WHEN state = 'done' THEN cost ELSE 0 END) AS credits_spent
    FROM jobs GROUP BY 1;

    CREATE VIEW v_revenue_daily AS
    SELECT date(created_at, 'unixepoch') AS day,
           pack_id,
           COUNT(*) AS payments,
           SUM(stars) AS stars,
           SUM(credits) AS credits_sold,
           SUM(status = 'refunded') AS refunds,
           SUM(CASE WHEN status = 'refunded' THEN stars ELSE 0 END) AS stars_refunded,
           SUM(CASE WHEN status = 'refunded' THEN 0 ELSE stars END) AS stars_net,
           COUNT(DISTINCT user_id) AS payers
    FROM payments GROUP BY 1, 2;

    CREATE VIEW v_retention_weekly AS
    WITH cohort AS (
        SELECT id AS user_id, date(first_seen, 'unixepoch', 'weekday 0', '-6 days') AS week FROM users),
    sizes AS (SELECT week, COUNT(*) AS n FROM cohort GROUP BY 1),
    seen AS (
        SELECT DISTINCT e.user_id, c.week,
               CAST(ROUND((julianday(date(e.at, 'unixepoch', 'weekday 0', '-6 days'))
                           - julianday(c.week)) / 7) AS INTEGER) AS week_n
        FROM v_user_events e JOIN cohort c ON c.user_id = e.user_id)
    SELECT seen.week AS cohort_week,          -- Monday of the week the users first came
           sizes.n AS cohort_users,
           seen.week_n AS weeks_later,
           COUNT(*) AS active_users,
           ROUND(100.0 * COUNT(*) / sizes.n, 1) AS retention_pct
    FROM seen JOIN sizes ON sizes.week = seen.week
    WHERE seen.week_n >= 0
    GROUP BY seen.week, seen.week_n;

    CREATE VIEW v_videos_per_user AS
    SELECT u.id AS user_id, u.username, u.first_name,
           datetime(u.first_seen, 'unixepoch') AS first_seen,
           datetime(u.last_seen, 'unixepoch') AS last_seen,
           u.balance,
           (SELECT COUNT(*) FROM jobs j WHERE j.user_id = u.id AND j.state = 'done') AS videos,
           (SELECT COUNT(*) FROM jobs j WHERE j.user_id = u.id AND j.state = 'failed') AS failed,
           (SELECT COUNT(*) FROM payments p WHERE p.user_id = u.id AND p.status != 'refunded') AS payments,
           (SELECT COALESCE(SUM(stars), 0) FROM payments p WHERE p.user_id = u.id AND p.status != 'refunded')
               AS stars_paid,
           u.referrer_id
    FROM users u;

    CREATE VIEW v_errors AS
    SELECT error_class, error_text,
           COUNT(*) AS jobs,
           SUM(state = 'failed') AS failed_jobs,
           COUNT(DISTINCT user_id) AS users,
           datetime(MIN(created_at), 'unixepoch') AS first_at,
           datetime(MAX(updated_at), 'unixepoch') AS last_at
    FROM jobs WHERE error_class IS NOT NULL
    GROUP BY error_class, error_text;

    CREATE VIEW v_kie_usage AS
    SELECT date(submitted_at, 'unixepoch') AS day, key_id, model,
           COUNT(*) AS tasks,
           SUM(state = 'done') AS done,
           SUM(state = 'failed') AS failed,
           ROUND(AVG(CASE WHEN state = 'done' THEN finished_at - submitted_at END), 1) AS avg_render_s
    FROM jobs WHERE key_id IS NOT NULL AND submitted_at IS NOT NULL
    GROUP BY 1, 2, 3;
    """,
    # 5: promo codes: the database keeps every rule (once per seller, never past the cap, a ledger row
    # only with a redemption), so concurrent redemptions cannot break them
    """
    CREATE TABLE promo_codes (
        code        TEXT PRIMARY KEY,                 -- upper case, [A-Z0-9_-]{3,32}
        credits     INTEGER NOT NULL CHECK (credits > 0 AND credits <= 1000000),
        max_uses    INTEGER CHECK (max_uses IS NULL OR max_uses > 0),   -- NULL: no cap
        used        INTEGER NOT NULL DEFAULT 0,
        expires_at  REAL,                             -- redeemable before this moment (NULL: forever)
        disabled    INTEGER NOT NULL DEFAULT 0,
        created_by  INTEGER,                          -- admin id; NULL: the command line
        created_at  REAL NOT NULL,
        CHECK (max_uses IS NULL OR used <= max_uses)
    );

    CREATE TABLE promo_redemptions (
        code     TEXT NOT NULL REFERENCES promo_codes(code),
        user_id  INTEGER NOT NULL REFERENCES users(id),
        credits  INTEGER NOT NULL,
        at       REAL NOT NULL,
        PRIMARY KEY (code, user_id)
    );
    CREATE INDEX promo_redemptions_at ON promo_redemptions(at);

    CREATE TRIGGER promo_redemption_redeemable BEFORE INSERT ON promo_redemptions
    WHEN NOT EXISTS (SELECT 1 FROM promo_codes WHERE code = NEW.code AND disabled = 0
                     AND (expires_at IS NULL OR expires_at > NEW.at) AND credits = NEW.credits)
    BEGIN SELECT RAISE(ABORT, 'promo code is not redeemable'); END;
    -- The CHECK on promo_codes aborts the redemption that would pass max_uses.
    CREATE TRIGGER promo_redemption_counts AFTER INSERT ON promo_redemptions
    BEGIN UPDATE promo_codes SET used = used + 1 WHERE code = NEW.code; END;
    CREATE TRIGGER promo_redemption_is_final BEFORE DELETE ON promo_redemptions
    BEGIN SELECT RAISE(ABORT, 'promo redemptions are final'); END;

    -- The ledger row of a redemption names the code in `note`: once per seller and code,
    -- and never without the redemption it pays.
    CREATE UNIQUE INDEX ledger_promo_once ON credit_ledger(user_id, note) WHERE reason = 'promo';
    CREATE TRIGGER ledger_promo_needs_redemption BEFORE INSERT ON credit_ledger
    WHEN NEW.reason = 'promo' AND NOT EXISTS (
        SELECT 1 FROM promo_redemptions WHERE code = NEW.note AND user_id = NEW.user_id AND credits = NEW.delta)
    BEGIN SELECT RAISE(ABORT, 'promo credits without a redemption'); END;

    -- Wrong codes a seller typed, so guessing is slowed down (kept for the last hour's count).
    CREATE TABLE promo_attempts (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id  INTEGER NOT NULL,
        at       REAL NOT NULL
    );
    CREATE INDEX promo_attempts_user ON promo_attempts(user_id, at);
    """,
    # 6: fair price on fall-over. A job moved to a cheaper provider than the one it was ordered
    # at records that price; when it is delivered the difference comes back as one ledger row.
    # A refund and an adjustment of the same job exclude each other.
    """
    ALTER TABLE jobs ADD COLUMN price INTEGER CHECK (price IS NULL OR price > 0);

    CREATE UNIQUE INDEX ledger_price_adjustment_once ON credit_ledger(job_id)
        WHERE reason = 'price_adjustment';

    CREATE TRIGGER ledger_price_adjustment_rules BEFORE INSERT ON credit_ledger
    WHEN NEW.reason = 'price_adjustment' AND (
        NEW.job_id IS NULL OR NEW.delta <= 0
        OR NOT EXISTS (SELECT 1 FROM credit_ledger WHERE job_id = NEW.job_id AND reason = 'job_charge'
                       AND user_id = NEW.user_id AND -delta > NEW.delta)
        OR EXISTS (SELECT 1 FROM credit_ledger WHERE job_id = NEW.job_id AND reason = 'job_refund'))
    BEGIN SELECT RAISE(ABORT, 'a price adjustment returns part of the charge of a job not refunded'); END;

    CREATE TRIGGER ledger_no_refund_after_price_adjustment BEFORE INSERT ON credit_ledger
    WHEN NEW.reason = 'job_refund' AND EXISTS (
        SELECT 1 FROM credit_ledger WHERE job_id = NEW.job_id AND reason = 'price_adjustment')
    BEGIN SELECT RAISE(ABORT, 'the job was delivered at an adjusted price'); END;

    CREATE TRIGGER jobs_price_adjusted_on_delivery AFTER UPDATE OF state ON jobs
    WHEN NEW.state = 'done' AND OLD.state != 'done' AND NEW.price IS NOT NULL
    BEGIN
        INSERT INTO credit_ledger (user_id, delta, reason, job_id, note, created_at)
        SELECT NEW.user_id, -delta - NEW.price, 'price_adjustment', NEW.id, 'paid ' || NEW.price,
               NEW.updated_at
        FROM credit_ledger WHERE job_id = NEW.id AND reason = 'job_charge' AND -delta > NEW.price;
    END;
    """,
    # 7: broadcasts, persisted per recipient so that nobody receives one twice
    """
    ALTER TABLE users ADD COLUMN news_opt_out INTEGER NOT NULL DEFAULT 0;   -- "🔕 Не присылать новости"
    ALTER TABLE users ADD COLUMN unreachable_at REAL;   -- Telegram said 403 (blocked); cleared when they write

    CREATE TABLE broadcasts (
        id                   INTEGER PRIMARY KEY AUTOINCREMENT,
        draft_key            TEXT NOT NULL UNIQUE,    -- a double-pressed "send" starts one broadcast
        admin_id             INTEGER NOT NULL,
        admin_chat_id        INTEGER NOT NULL,
        kind                 TEXT NOT NULL CHECK (kind IN ('text', 'photo', 'video')),
        body                 TEXT NOT NULL DEFAULT '',   -- HTML: the text, or the caption
        file_id              TEXT,
        button_text          TEXT,
        button_url           TEXT,
        segment              TEXT NOT NULL,
        state                TEXT NOT NULL DEFAULT 'sending' CHECK (state IN ('sending', 'stopped', 'done')),
        progress_message_id  INTEGER,
        created_at           REAL NOT NULL,
        finished_at          REAL
    );

    CREATE TABLE broadcast_recipients (
        broadcast_id  INTEGER NOT NULL REFERENCES broadcasts(id),
        user_id       INTEGER NOT NULL,
        state         TEXT NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'sending', 'sent', 'blocked', 'failed', 'unknown')),
        error         TEXT,
        updated_at    REAL,
        PRIMARY KEY (broadcast_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX broadcast_recipients_state ON broadcast_recipients(broadcast_id, state, user_id);
    -- At most one send in flight per broadcast: a kill leaves at most one outcome unknown.
    CREATE UNIQUE INDEX broadcast_one_in_flight ON broadcast_recipients(broadcast_id) WHERE state = 'sending';
    -- At most once: an outcome is final, so a recipient who got it (or may have) is never sent it again.
    CREATE TRIGGER broadcast_outcome_is_final BEFORE UPDATE OF state ON broadcast_recipients
    WHEN OLD.state IN ('sent', 'blocked', 'failed', 'unknown')
    BEGIN SELECT RAISE(ABORT, 'a broadcast outcome is final'); END;
    CREATE TRIGGER broadcast_pending_only_from_sending BEFORE UPDATE OF state ON broadcast_recipients
    WHEN NEW.state = 'sending' AND OLD.state != 'pending'
    BEGIN SELECT RAISE(ABORT, 'only a pending recipient can be sent to'); END;
    """,
    # 8: markers that make every paid or visible request safe to repeat after a crash
    """
    ALTER TABLE jobs ADD COLUMN submit_attempt INTEGER NOT NULL DEFAULT 0;  -- createTask requests sent
    ALTER TABLE jobs ADD COLUMN submit_unsure_at REAL;  -- a createTask went out, its outcome unknown
    ALTER TABLE jobs ADD COLUMN fresh_tasks INTEGER NOT NULL DEFAULT 0;  -- new tasks after a failed one
    ALTER TABLE jobs ADD COLUMN send_pending INTEGER NOT NULL DEFAULT 0;  -- a sendVideo went out, unanswered
    ALTER TABLE jobs ADD COLUMN send_unsure INTEGER NOT NULL DEFAULT 0;  -- sendVideos of unknown outcome
    ALTER TABLE jobs ADD COLUMN delivery_failing_since REAL;  -- first failed sendVideo of the current run
    ALTER TABLE jobs ADD COLUMN delivery_notified INTEGER NOT NULL DEFAULT 0;  -- "waiting for Telegram" sent
    """,
    # 9: the video shape the seller chose (NULL: the template's), and the shape of the photo
    # variant a product's cached upload holds, so jobs of another shape upload their own.
    """
    ALTER TABLE jobs ADD COLUMN aspect_ratio TEXT;
    ALTER TABLE products ADD COLUMN upload_aspect TEXT;
    """,
    # 10: the money rules, kept by the database whatever writes to it (the bot, the CLI, a sqlite3 shell)
    """
    -- Amounts and ids are bounded integers: SQLite would store 1e20 or '10' without complaint,
    -- and an integer sum that overflows int64 silently becomes REAL.
    CREATE TRIGGER ledger_rows_are_bounded BEFORE INSERT ON credit_ledger
    WHEN typeof(NEW.delta) != 'integer' OR NEW.delta NOT BETWEEN -1000000 AND 1000000
        OR typeof(NEW.user_id) != 'integer' OR NEW.user_id <= 0
        OR typeof(NEW.job_id) NOT IN ('integer', 'null')
        OR typeof(NEW.payment_id) NOT IN ('integer', 'null')
        OR typeof(NEW.invited_user_id) NOT IN ('integer', 'null')
        OR typeof(NEW.admin_id) NOT IN ('integer', 'null')
    BEGIN SELECT RAISE(ABORT, 'ledger amount or id out of bounds'); END;

    -- A row about a job is its charge, its refund or its price adjustment (migration 6), nothing else.
    CREATE TRIGGER ledger_job_rows_are_charge_or_refund BEFORE INSERT ON credit_ledger
    WHEN (NEW.job_id IS NOT NULL) != (NEW.reason IN ('job_charge', 'job_refund', 'price_adjustment'))
    BEGIN SELECT RAISE(ABORT, 'a job is charged and refunded by job_charge/job_refund rows only'); END;

    CREATE TRIGGER ledger_charge_is_the_jobs_owner BEFORE INSERT ON credit_ledger
    WHEN NEW.reason = 'job_charge' AND (NEW.delta >= 0 OR NOT EXISTS (
        SELECT 1 FROM jobs WHERE id = NEW.job_id AND user_id = NEW.user_id))
    BEGIN SELECT RAISE(ABORT, 'a charge takes credits from the owner of the job'); END;

    CREATE TRIGGER ledger_refund_equals_charge BEFORE INSERT ON credit_ledger
    WHEN NEW.reason = 'job_refund' AND NOT EXISTS (
        SELECT 1 FROM credit_ledger
        WHERE job_id = NEW.job_id AND reason = 'job_charge' AND user_id = NEW.user_id AND delta = -NEW.delta)
    BEGIN SELECT RAISE(ABORT, 'a refund returns exactly the charge, to the same user'); END;

    CREATE TRIGGER ledger_no_refund_after_delivery BEFORE INSERT ON credit_ledger
    WHEN NEW.reason = 'job_refund' AND EXISTS (SELECT 1 FROM jobs WHERE id = NEW.job_id AND state = 'done')
    BEGIN SELECT RAISE(ABORT, 'a delivered video is not refunded'); END;

    CREATE TRIGGER jobs_refunded_never_delivered BEFORE UPDATE OF state ON jobs
    WHEN NEW.state = 'done' AND EXISTS (
        SELECT 1 FROM credit_ledger WHERE job_id = NEW.id AND reason = 'job_refund')
    BEGIN SELECT RAISE(ABORT, 'a refunded job is not delivered'); END;

    -- Payments: the credit is the pack bought, the refund takes back at most that, same user.
    CREATE TRIGGER ledger_payment_is_the_pack BEFORE INSERT ON credit_ledger
    WHEN NEW.reason = 'payment' AND NOT EXISTS (
        SELECT 1 FROM payments WHERE id = NEW.payment_id AND user_id = NEW.user_id AND credits = NEW.delta)
    BEGIN SELECT RAISE(ABORT, 'a payment credits its own pack to its payer'); END;

    CREATE TRIGGER ledger_payment_refund_within_pack BEFORE INSERT ON credit_ledger
    WHEN NEW.reason = 'payment_refund' AND NOT EXISTS (
        SELECT 1 FROM payments WHERE id = NEW.payment_id AND user_id = NEW.user_id
        AND NEW.delta < 0 AND -NEW.delta <= credits)
    BEGIN SELECT RAISE(ABORT, 'a payment refund takes back at most the pack, from its payer'); END;

    CREATE TRIGGER ledger_gifts_are_positive BEFORE INSERT ON credit_ledger
    WHEN NEW.reason IN ('welcome', 'referral') AND NEW.delta <= 0
    BEGIN SELECT RAISE(ABORT, 'a welcome or referral gift adds credits'); END;

    CREATE TRIGGER payments_are_bounded BEFORE INSERT ON payments
    WHEN typeof(NEW.credits) != 'integer' OR NEW.credits NOT BETWEEN 0 AND 1000000
        OR typeof(NEW.stars) != 'integer' OR NEW.stars < 0 OR typeof(NEW.user_id) != 'integer'
    BEGIN SELECT RAISE(ABORT, 'payment amount or id out of bounds'); END;

    -- The ledger is append-only (UPDATE is refused since migration 1).
    CREATE TRIGGER ledger_rows_are_never_deleted BEFORE DELETE ON credit_ledger
    BEGIN SELECT RAISE(ABORT, 'credit_ledger is append-only'); END;

    -- users.balance moves only through a ledger row: whatever writes it must write the ledger's sum.
    CREATE TRIGGER users_balance_only_through_ledger BEFORE UPDATE OF balance ON users
    WHEN typeof(NEW.balance) != 'integer' OR NEW.balance != (
        SELECT COALESCE(SUM(delta), 0) FROM credit_ledger WHERE user_id = NEW.id)
    BEGIN SELECT RAISE(ABORT, 'users.balance changes only through the ledger'); END;

    -- AFTER: an INSERT OR IGNORE of a known user fires no check; an INSERT OR REPLACE is checked.
    CREATE TRIGGER users_start_with_the_ledgers_balance AFTER INSERT ON users
    WHEN typeof(NEW.balance) != 'integer' OR NEW.balance != (
        SELECT COALESCE(SUM(delta), 0) FROM credit_ledger WHERE user_id = NEW.id)
    BEGIN SELECT RAISE(ABORT, 'users.balance changes only through the ledger'); END;
    """,
    # 11: orders of many products (one per confirmation), their live status message, albums being collected
    """
    CREATE TABLE orders (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id            INTEGER NOT NULL REFERENCES users(id),
        chat_id            INTEGER NOT NULL,
        request_key        TEXT NOT NULL UNIQUE,   -- one confirmation screen makes at most one order
        products           INTEGER NOT NULL,
        jobs_total         INTEGER NOT NULL,
        status_message_id  INTEGER,                -- the one message edited in place as the jobs move
        status_text        TEXT,                   -- what it shows now: an unchanged status is not sent again
        status_edited_at   REAL,
        summary_sent_at    REAL,                   -- set before the summary is sent: never twice
        created_at         REAL NOT NULL
    );
    CREATE INDEX orders_user ON orders(user_id, id);
    CREATE INDEX orders_open ON orders(id) WHERE summary_sent_at IS NULL;
    ALTER TABLE jobs ADD COLUMN order_id INTEGER REFERENCES orders(id);
    ALTER TABLE jobs ADD COLUMN order_pos INTEGER;   -- 1-based place of the job in its order
    CREATE INDEX jobs_order ON jobs(order_id, order_pos) WHERE order_id IS NOT NULL;
    -- A user's jobs being worked on, counted against limits.max_jobs_in_flight at each claim.
    CREATE INDEX jobs_user_claimed ON jobs(user_id) WHERE claimed = 1 AND state NOT IN ('done', 'failed');

    -- Photos of albums still arriving (Telegram sends one update per photo); settled into products.
    CREATE TABLE album_items (
        chat_id         INTEGER NOT NULL,
        message_id      INTEGER NOT NULL,
        user_id         INTEGER NOT NULL,
        media_group_id  TEXT NOT NULL,
        kind            TEXT NOT NULL,     -- photo | image | document | video | sticker | other
        file_id         TEXT,
        file_size       INTEGER,
        caption         TEXT,
        received_at     REAL NOT NULL,
        PRIMARY KEY (chat_id, message_id)
    );
    """,
    # 12: a user an admin credited or banned before their first /start is "not yet seen": the
    # first visit still brings the welcome gift and the referral, and counts them as new then.
    """
    ALTER TABLE users ADD COLUMN seen INTEGER NOT NULL DEFAULT 1;

    DROP VIEW v_users_daily;
    CREATE VIEW v_users_daily AS
    WITH new AS (
        SELECT date(first_seen, 'unixepoch') AS day, COUNT(*) AS n FROM users WHERE seen = 1 GROUP BY 1),
    active AS (
        SELECT date(at, 'unixepoch') AS day, COUNT(DISTINCT user_id) AS n FROM v_user_events GROUP BY 1),
    days AS (SELECT day FROM new UNION SELECT day FROM active)
    SELECT days.day,
           COALESCE(new.n, 0) AS new_users,
           COALESCE(active.n, 0) AS active_users,
           SUM(COALESCE(new.n, 0)) OVER (ORDER BY days.day) AS total_users
    FROM days LEFT JOIN new ON new.day = days.day LEFT JOIN active ON active.day = days.day;

    DROP VIEW v_retention_weekly;
    CREATE VIEW v_retention_weekly AS
    WITH cohort AS (
        SELECT id AS user_id, date(first_seen, 'unixepoch', 'weekday 0', '-6 days') AS week
        FROM users WHERE seen = 1),
    sizes AS (SELECT week, COUNT(*) AS n FROM cohort GROUP BY 1),
    seen AS (
        SELECT DISTINCT e.user_id, c.week,
               CAST(ROUND((julianday(date(e.at, 'unixepoch', 'weekday 0', '-6 days'))
                           - julianday(c.week)) / 7) AS INTEGER) AS week_n
        FROM v_user_events e JOIN cohort c ON c.user_id = e.user_id)
    SELECT seen.week AS cohort_week,          -- Monday of the week the users first came
           sizes.n AS cohort_users,
           seen.week_n AS weeks_later,
           COUNT(*) AS active_users,
           ROUND(100.0 * COUNT(*) / sizes.n, 1) AS retention_pct
    FROM seen JOIN sizes ON sizes.week = seen.week
    WHERE seen.week_n >= 0
    GROUP BY seen.week, seen.week_n;
    """,
    # 13: what every video really cost: each provider task created (failed, doubled and orphaned ones
    # included) with its cost, and the tokens of every OpenAI answer
    """
    CREATE TABLE provider_tasks (
        task_id     TEXT PRIMARY KEY,
        job_id      INTEGER REFERENCES jobs(id),
        attempt     INTEGER NOT NULL,       -- 1: the job's first task, 2: the second one paid for it...
        backend     TEXT NOT NULL,          -- kie | sandbox
        model       TEXT NOT NULL,
        key_id      TEXT,                   -- the key's public id, never the key
        created_at  REAL NOT NULL,
        credits     REAL NOT NULL CHECK (credits >= 0),   -- KIE credits: reported, else the configured price
        reported    INTEGER NOT NULL DEFAULT 0,           -- 1: `credits` is KIE's creditsConsumed
        outcome     TEXT CHECK (outcome IS NULL OR outcome IN ('success', 'failed'))
    );
    CREATE INDEX provider_tasks_created ON provider_tasks(created_at);
    CREATE INDEX provider_tasks_job ON provider_tasks(job_id);

    CREATE TABLE openai_usage (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        at                 REAL NOT NULL,
        model              TEXT NOT NULL,
        prompt_tokens      INTEGER NOT NULL CHECK (prompt_tokens >= 0),
        completion_tokens  INTEGER NOT NULL CHECK (completion_tokens >= 0)
    );
    CREATE INDEX openai_usage_at ON openai_usage(at);
    """,
    # 14: the owner's daily digest, at most once per day whatever restarts happen
    """
    CREATE TABLE digests_sent (
        day      TEXT PRIMARY KEY,   -- YYYY-MM-DD (UTC) the digest was due
        sent_at  REAL NOT NULL
    );
    """,
]
