"""A user's credit history: every ledger row with what caused it and the balance after it."""

from __future__ import annotations

from dataclasses import dataclass

from neurocards.store.db import Database


@dataclass(frozen=True)
class StatementRow:
    id: int
    at: float
    kind: str  # the ledger reason: job_charge | job_refund | payment | referral | welcome | admin | ...
    amount: int
    balance_after: int
    job_id: int | None
    order_id: int | None
    payment_id: int | None
    product: str | None  # the product's description, for job rows
    stars: int | None  # for payment rows
    note: str | None  # refund: the failure class; admin: the reason given
    invited_user_id: int | None


# The running balance is the sum of the ledger up to each row: the same rule the trigger keeps.
_ROWS = """
SELECT l.id, l.created_at AS at, l.reason AS kind, l.delta AS amount,
       SUM(l.delta) OVER (ORDER BY l.id ROWS UNBOUNDED PRECEDING) AS balance_after,
       l.job_id, j.order_id, l.payment_id, p.description AS product, pay.stars,
       l.note, l.invited_user_id
FROM credit_ledger l
LEFT JOIN jobs j ON j.id = l.job_id
LEFT JOIN products p ON p.id = j.product_id
LEFT JOIN payments pay ON pay.id = l.payment_id
WHERE l.user_id = ?
"""


class StatementStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def rows(self, user_id: int, *, last: int | None = None) -> list[StatementRow]:
        """The whole history (or its `last` rows), oldest first."""
        sql = _ROWS
        if last is None:
            rows = await self.db.fetchall(sql + " ORDER BY l.id", (user_id,))
        else:
            rows = await self.db.fetchall(f"SELECT * FROM ({sql}) ORDER BY id DESC LIMIT ?", (user_id, last))
            rows.reverse()
        return [StatementRow(**{k: r[k] for k in r.keys()}) for r in rows]

    async def count(self, user_id: int) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM credit_ledger WHERE user_id = ?", (user_id,))
        return int(row["n"]) if row else 0
