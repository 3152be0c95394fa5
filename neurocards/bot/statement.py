"""The seller's statement in the shapes it is handed out: chat lines, CSV, JSON (for operators)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from neurocards.bot import texts
from neurocards.store.statement import StatementRow


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def row_text(row: StatementRow) -> str:
    return texts.statement_text(row.kind, product=row.product, order_id=row.order_id, job_id=row.job_id,
                                stars=row.stars, note=row.note)


def row_ref(row: StatementRow) -> str:
    """What the row points at, as ids an operator can look up."""
    parts = []
    if row.order_id:
        parts.append(f"order {row.order_id}")
    if row.job_id:
        parts.append(f"job {row.job_id}")
    if row.payment_id:
        parts.append(f"payment {row.payment_id}")
    if row.invited_user_id:
        parts.append(f"user {row.invited_user_id}")
    return " ".join(parts)


def chat_lines(rows: list[StatementRow], day: Any) -> list[str]:
    """Newest first, as a seller reads a bank statement; `day` formats a timestamp."""
    return [texts.statement_line(day(r.at), r.amount, row_text(r), r.balance_after) for r in reversed(rows)]


def to_csv(rows: list[StatementRow]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(texts.STATEMENT_CSV_HEADER)
    for r in rows:
        writer.writerow([iso(r.at), r.kind, r.amount, r.balance_after, r.order_id or "", r.job_id or "",
                         r.payment_id or "", row_text(r)])
    # A BOM so Excel opens the Cyrillic text as UTF-8.
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_json(user_id: int, balance: int, rows: list[StatementRow]) -> dict[str, Any]:
    return {"user_id": user_id, "balance": balance,
            "rows": [{"at": iso(r.at), "kind": r.kind, "amount": r.amount, "balance_after": r.balance_after,
                      "ref": row_ref(r), "text": row_text(r)} for r in rows]}
