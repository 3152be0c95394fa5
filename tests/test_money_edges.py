"""Money at its edges, below Telegram: exactly 1 credit, exactly the whole balance, refunds that race.

Every seller-facing amount in the other tests is 10 or more; these pin the boundaries, where an
off-by-one would refuse, skip or double a real payment.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from neurocards.config import CreditPack, PaymentsConfig, ReferralsConfig
from neurocards.services.credits import MAX_USER_ID, NotEnoughToRemove, add_credits
from neurocards.services.payments import (
    REFUND_CLAIM_STALE_S,
    AlreadyRefunded,
    CheckoutProblem,
    CreditsSpent,
    PaymentNotFound,
    Payments,
    RefundInProgress,
    StarRefundFailed,
)
from neurocards.services.referrals import Referrals
from neurocards.store.activity import ActivityStore
from neurocards.store.db import Database
from neurocards.store.jobs import JobFinished, JobState, JobStore
from neurocards.store.ledger import balance_in
from neurocards.store.orders import OrderStore
from neurocards.store.payments import PaymentStore
from neurocards.store.referrals import ReferralStore
from neurocards.store.users import ProductStore, UserStore

SELLER, FRIEND = 501, 502
ONE = CreditPack(id="one", credits=1, stars=1, label="1 кредит")
PACK = CreditPack(id="m", credits=120, stars=100, label="120 кредитов")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "money.sqlite3")
    yield database
    await database.close()


def shop(db: Database, *, refund_when_spent: str = "refuse", bonus: int = 20,
         bonus_on: str = "first_payment") -> Payments:
    config: Any = SimpleNamespace(payments=PaymentsConfig(packs=(ONE, PACK), refund_when_spent=refund_when_spent),
                                  referrals=ReferralsConfig(bonus_credits=bonus, bonus_on=bonus_on))
    return Payments(config, PaymentStore(db), UserStore(db), Referrals(config, ReferralStore(db)),
                    activity=ActivityStore(db, flush_delay_s=0))


async def pay(payments: Payments, user_id: int, pack: CreditPack, charge_id: str = "ch-1"):
    return await payments.credit(user_id=user_id, charge_id=charge_id, provider_charge_id=None,
                                 payload=payments.payload(pack, user_id), currency="XTR", total=pack.stars)


async def invited(db: Database) -> None:
    """FRIEND came through SELLER's invite link (a second link later changes nothing)."""
    users = UserStore(db)
    for user_id in (SELLER, FRIEND, 503):
        await users.touch(user_id, username=None, first_name="S", language="ru", welcome_credits=0)
    code = await ReferralStore(db).code_for(SELLER)
    assert await ReferralStore(db).attach(FRIEND, code) == SELLER
    assert await ReferralStore(db).attach(FRIEND, await ReferralStore(db).code_for(503)) is None


class Telegram:
    """refundStarPayment as the bot calls it: counts calls, can refuse."""

    def __init__(self, error: StarRefundFailed | None = None) -> None:
        self.calls: list[tuple[int, str]] = []
        self.error = error

    async def __call__(self, user_id: int, charge_id: str) -> None:
        self.calls.append((user_id, charge_id))
        if self.error is not None:
            raise self.error


# ---- crediting exactly 1 -----------------------------------------------------------------------

async def test_an_admin_can_grant_and_take_exactly_one_credit(db: Database) -> None:
    users = UserStore(db)
    granted = await add_credits(db, users, SELLER, 1, note="goodwill")
    assert (granted.user_id, granted.delta, granted.balance) == (SELLER, 1, 1)
    taken = await add_credits(db, users, SELLER, -1, note="mistake")
    assert taken.balance == 0 and await users.ledger_sum(SELLER) == 0


async def test_a_zero_grant_is_refused_and_writes_nothing(db: Database) -> None:
    with pytest.raises(ValueError):
        await add_credits(db, UserStore(db), SELLER, 0)
    assert await UserStore(db).ledger(SELLER) == []


async def test_taking_more_than_the_balance_is_refused_with_the_balance(db: Database) -> None:
    users = UserStore(db)
    await add_credits(db, users, SELLER, 5)
    with pytest.raises(NotEnoughToRemove) as refused:
        await add_credits(db, users, SELLER, -6)
    assert refused.value.balance == 5 and await users.balance(SELLER) == 5
    assert (await add_credits(db, users, SELLER, -5)).balance == 0  # the whole balance is fine


async def test_taking_a_credit_from_an_empty_balance_reports_zero(db: Database) -> None:
    with pytest.raises(NotEnoughToRemove) as refused:
        await add_credits(db, UserStore(db), SELLER, -1)
    assert refused.value.balance == 0


async def test_a_welcome_gift_of_one_credit_is_given(db: Database) -> None:
    user, created = await UserStore(db).touch(SELLER, username=None, first_name="S", language="ru",
                                              welcome_credits=1)
    assert created and user.balance == 1
    assert [(r.delta, r.reason) for r in await UserStore(db).ledger(SELLER)] == [(1, "welcome")]


async def test_a_one_credit_pack_is_credited(db: Database) -> None:
    credited = await pay(shop(db), SELLER, ONE)
    assert not credited.duplicate and (credited.credits, credited.balance) == (1, 1)


async def test_a_one_credit_referral_bonus_is_paid_on_the_first_payment(db: Database) -> None:
    await invited(db)
    credited = await pay(shop(db, bonus=1), FRIEND, PACK)
    assert credited.referral is not None and credited.referral.credits == 1
    assert await UserStore(db).balance(SELLER) == 1


async def test_a_one_credit_referral_bonus_is_paid_on_the_first_video(db: Database) -> None:
    await invited(db)
    referrals = shop(db, bonus=1, bonus_on="first_video").referrals
    bonus = await referrals.on_video_delivered(FRIEND)
    assert bonus is not None and bonus.credits == 1 and bonus.referrer_balance == 1
    assert await referrals.on_video_delivered(FRIEND) is None  # once per invited user
    assert (await referrals.stats(SELLER)).earned == 1


async def test_a_bonus_on_the_first_payment_is_not_paid_for_a_video(db: Database) -> None:
    await invited(db)
    assert await shop(db, bonus=20, bonus_on="first_payment").referrals.on_video_delivered(FRIEND) is None
    assert await UserStore(db).balance(SELLER) == 0


async def test_no_referral_bonus_when_the_bonus_is_zero(db: Database) -> None:
    await invited(db)
    assert await shop(db, bonus=0, bonus_on="first_video").referrals.on_video_delivered(FRIEND) is None
    assert (await pay(shop(db, bonus=0), FRIEND, PACK)).referral is None
    assert await UserStore(db).balance(SELLER) == 0


# ---- refunding a payment ---------------------------------------------------------------------------

async def test_a_refund_with_nothing_spent_goes_through_under_the_refuse_policy(db: Database) -> None:
    payments = shop(db)
    await pay(payments, SELLER, PACK)
    telegram = Telegram()
    done = await payments.refund(SELLER, "ch-1", admin_id=1, refund_stars=telegram)
    assert telegram.calls == [(SELLER, "ch-1")]
    assert (done.removed, done.balance, done.payment.status) == (120, 0, "refunded")
    assert done.payment.refunded_at is not None and done.payment.refunded_by == 1  # the statement shows it
    [row] = [r for r in await UserStore(db).ledger(SELLER) if r.reason == "payment_refund"]
    assert (row.delta, row.admin_id, row.note) == (-120, 1, "ch-1")  # who refunded which charge
    await payments.activity.flush()
    audit = await db.fetchall("SELECT admin_id, action, user_id, detail FROM admin_audit")
    assert [tuple(a) for a in audit] == [(1, "payment_refund", SELLER, "ch-1: 100 stars, -120 credits")]
    activity = await db.fetchall("SELECT user_id, action, detail FROM activity WHERE action = 'payment_refund'")
    assert [tuple(a) for a in activity] == [(SELLER, "payment_refund", "m 100")]  # the dashboard counts it


async def test_finishing_a_refund_twice_takes_the_credits_once(db: Database) -> None:
    """A crash after the ledger write, then the claim taken over: the second finish changes nothing."""
    payments = shop(db)
    await pay(payments, SELLER, PACK)
    await add_credits(db, UserStore(db), SELLER, 5)
    payment = await payments.store.by_charge(SELLER, "ch-1")
    first = await payments.store.finish_refund(payment.id, admin_id=1)
    again = await payments.store.finish_refund(payment.id, admin_id=2)
    assert (first.removed, first.balance) == (120, 5)
    assert (again.removed, again.balance, again.payment.refunded_by) == (0, 5, 1)


async def test_a_refund_of_one_spent_credit_is_refused_under_the_refuse_policy(db: Database) -> None:
    payments = shop(db)
    await pay(payments, SELLER, PACK)
    await add_credits(db, UserStore(db), SELLER, -1)
    telegram = Telegram()
    with pytest.raises(CreditsSpent) as refused:
        await payments.refund(SELLER, "ch-1", admin_id=1, refund_stars=telegram)
    assert (refused.value.balance, refused.value.credits) == (119, 120)
    assert telegram.calls == [] and (await payments.store.by_charge(SELLER, "ch-1")).status == "paid"


async def test_a_fully_spent_pack_is_refunded_under_allow_and_the_payment_closes(db: Database) -> None:
    payments = shop(db, refund_when_spent="allow")
    await pay(payments, SELLER, PACK)
    await add_credits(db, UserStore(db), SELLER, -120, note="spent on videos")
    done = await payments.refund(SELLER, "ch-1", admin_id=1, refund_stars=Telegram())
    assert (done.removed, done.balance, done.payment.status) == (0, 0, "refunded")
    assert done.payment.refunded_credits == 0
    with pytest.raises(AlreadyRefunded, match="ch-1"):
        await payments.refund(SELLER, "ch-1", admin_id=1, refund_stars=Telegram())


async def test_stars_already_returned_by_telegram_close_the_payment(db: Database) -> None:
    """A crash after Telegram returned the Stars: the next attempt hears CHARGE_ALREADY_REFUNDED."""
    payments = shop(db)
    await pay(payments, SELLER, PACK)
    already = Telegram(StarRefundFailed("Bad Request: CHARGE_ALREADY_REFUNDED", already_refunded=True))
    done = await payments.refund(SELLER, "ch-1", admin_id=1, refund_stars=already)
    assert (done.removed, done.balance, done.payment.status) == (120, 0, "refunded")


async def test_telegram_refusing_the_refund_keeps_the_payment_and_the_credits(db: Database) -> None:
    payments = shop(db)
    await pay(payments, SELLER, PACK)
    refusal = StarRefundFailed("Bad Request: CHARGE_NOT_FOUND")
    assert not refusal.already_refunded  # a refusal is a refusal unless Telegram says otherwise
    with pytest.raises(StarRefundFailed):
        await payments.refund(SELLER, "ch-1", admin_id=1, refund_stars=Telegram(refusal))
    assert (await payments.store.by_charge(SELLER, "ch-1")).status == "paid"
    assert await UserStore(db).balance(SELLER) == 120
    done = await payments.refund(SELLER, "ch-1", admin_id=1, refund_stars=Telegram())  # tried again: works
    assert done.payment.status == "refunded"


async def test_a_network_error_during_the_stars_refund_leaves_the_payment_retryable(db: Database) -> None:
    payments = shop(db)
    await pay(payments, SELLER, PACK)
    with pytest.raises(TimeoutError):
        await payments.refund(SELLER, "ch-1", admin_id=1, refund_stars=Telegram(TimeoutError()))  # type: ignore[arg-type]
    assert (await payments.store.by_charge(SELLER, "ch-1")).status == "paid"
    assert (await payments.refund(SELLER, "ch-1", admin_id=1, refund_stars=Telegram())).balance == 0


async def test_two_admins_refunding_at_once_call_telegram_once(db: Database) -> None:
    payments = shop(db)
    await pay(payments, SELLER, PACK)
    payment = await payments.store.by_charge(SELLER, "ch-1")
    assert await payments.store.claim_refund(payment.id, REFUND_CLAIM_STALE_S)  # the first admin, mid-call
    telegram = Telegram()
    with pytest.raises(RefundInProgress, match="ch-1"):
        await payments.refund(SELLER, "ch-1", admin_id=2, refund_stars=telegram)
    assert telegram.calls == [] and await UserStore(db).balance(SELLER) == 120


async def test_a_refund_claim_left_by_a_crash_is_taken_over_later(db: Database) -> None:
    payments = shop(db)
    await pay(payments, SELLER, PACK)
    payment = await payments.store.by_charge(SELLER, "ch-1")
    assert await payments.store.claim_refund(payment.id, REFUND_CLAIM_STALE_S)
    await db.execute("UPDATE payments SET refund_started_at = ? WHERE id = ?",
                     (time.time() - REFUND_CLAIM_STALE_S - 5, payment.id))
    done = await payments.refund(SELLER, "ch-1", admin_id=2, refund_stars=Telegram())
    assert done.payment.status == "refunded" and done.balance == 0


async def test_refunding_an_unknown_or_someone_elses_payment_is_refused(db: Database) -> None:
    payments = shop(db)
    await pay(payments, SELLER, PACK)
    for user_id, charge_id in ((SELLER, "nope"), (FRIEND, "ch-1")):
        with pytest.raises(PaymentNotFound, match=charge_id):  # the refusal names what the admin typed
            await payments.refund(user_id, charge_id, admin_id=1, refund_stars=Telegram())


async def test_a_payment_delivered_twice_is_credited_once(db: Database) -> None:
    payments = shop(db)
    await pay(payments, SELLER, PACK)
    again = await pay(payments, SELLER, PACK)
    assert again.duplicate and (again.credits, again.stars, again.balance) == (120, 100, 120)


# ---- a finished job is never moved -------------------------------------------------------------------

async def test_a_cancelled_job_cannot_be_moved_on(db: Database) -> None:
    users, jobs = UserStore(db), JobStore(db)
    await users.touch(SELLER, username=None, first_name="S", language="ru", welcome_credits=30)
    product = await ProductStore(db).create(SELLER, "file", "/nonexistent.jpg")
    job_id = (await OrderStore(db).create_charged(
        user_id=SELLER, chat_id=SELLER, request_key="k", product_ids=[product], per_product=1, template="studio",
        wishes="", provider="kie", model="veo3_fast", cost_each=10)).job_ids[0]
    assert await jobs.cancel_queued(SELLER, "banned") == [job_id]
    with pytest.raises(JobFinished):
        await jobs.update(job_id, state=JobState.SUBMITTING, image_url="https://x/p.jpg")
    job = await jobs.get(job_id)
    assert job is not None and job.state is JobState.FAILED and job.image_url is None
    assert (await jobs.update(job_id, video_path=None, allow_finished=True)).state is JobState.FAILED
    with pytest.raises(KeyError):
        await jobs.update(10_000, state=JobState.SUBMITTING)
    assert await users.balance(SELLER) == 30


async def test_the_profile_lists_the_latest_purchases_newest_first_with_the_total(db: Database) -> None:
    payments = shop(db)
    for n in range(12):
        await pay(payments, SELLER, ONE, charge_id=f"ch-{n}")
    await pay(payments, FRIEND, PACK, charge_id="friend")
    latest, total = await payments.store.history(SELLER, limit=10)
    assert total == 12 and [p.telegram_payment_charge_id for p in latest] == [f"ch-{n}" for n in range(11, 1, -1)]
    assert await payments.store.history(10_000, limit=10) == ([], 0)


async def test_an_unknown_user_has_no_credits(db: Database) -> None:
    async with db.read() as conn:
        assert await balance_in(conn, 10_000) == 0


async def test_the_profile_counts_payments_and_stars_without_refunded_ones(db: Database) -> None:
    payments = shop(db)
    await pay(payments, SELLER, PACK, charge_id="a")
    await pay(payments, SELLER, ONE, charge_id="b")
    await pay(payments, FRIEND, PACK, charge_id="c")
    assert await payments.store.totals(SELLER) == (2, 101)
    await payments.refund(SELLER, "a", admin_id=1, refund_stars=Telegram())
    assert await payments.store.totals(SELLER) == (1, 1)
    assert await payments.store.totals(10_000) == (0, 0)


async def test_a_payment_whose_payload_is_not_ours_is_kept_for_the_admin_with_no_credits(db: Database) -> None:
    payments = shop(db)
    odd = {"user_id": SELLER, "charge_id": "odd", "provider_charge_id": "prov-1", "payload": "not ours",
           "currency": "XTR", "total": 7}
    credited = await payments.credit(**odd)
    assert (credited.duplicate, credited.credits, credited.stars, credited.balance) == (False, 0, 7, 0)
    stored = await payments.store.by_charge(SELLER, "odd")
    assert (stored.pack_id, stored.credits, stored.stars, stored.provider_payment_charge_id) == ("?", 0, 7, "prov-1")
    again = await payments.credit(**odd)
    assert (again.duplicate, again.credits, again.stars, again.balance) == (True, 0, 7, 0)
    await payments.activity.flush()
    activity = await db.fetchall("SELECT detail FROM activity WHERE action = 'payment'")
    assert [a["detail"] for a in activity] == ["? 7"]


async def test_an_invite_code_already_taken_is_drawn_again_and_both_links_work(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sellers drawing the same 8-letter code is rare, but the second must still get a link
    of their own, and the first seller's link must keep pointing at the first seller."""
    users = UserStore(db)
    for user_id in (SELLER, FRIEND, 503):
        await users.touch(user_id, username=None, first_name="S", language="ru", welcome_credits=0)
    draws = iter(["aaaaaaaa", "aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr("neurocards.store.referrals.new_code", lambda: next(draws))
    store = ReferralStore(db)
    assert await store.code_for(SELLER) == "aaaaaaaa"
    assert await store.code_for(FRIEND) == "bbbbbbbb"
    assert await store.code_for(SELLER) == "aaaaaaaa"  # never changed: old links keep working
    assert await store.attach(503, "bbbbbbbb") == FRIEND


async def test_an_invite_code_that_cannot_be_drawn_is_an_error_not_a_loop(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    await UserStore(db).touch(SELLER, username=None, first_name="S", language="ru", welcome_credits=0)
    await UserStore(db).touch(FRIEND, username=None, first_name="S", language="ru", welcome_credits=0)
    monkeypatch.setattr("neurocards.store.referrals.new_code", lambda: "aaaaaaaa")
    assert await ReferralStore(db).code_for(SELLER) == "aaaaaaaa"
    with pytest.raises(RuntimeError):
        await ReferralStore(db).code_for(FRIEND)
    assert (await db.fetchone("SELECT ref_code FROM users WHERE id = ?", (FRIEND,)))["ref_code"] is None


async def test_the_lowest_and_highest_telegram_ids_can_be_credited(db: Database) -> None:
    for user_id in (1, MAX_USER_ID):
        assert (await add_credits(db, UserStore(db), user_id, 1, note="goodwill")).balance == 1


@pytest.mark.parametrize("payload", [
    "garbage",
    "cr0:one:1:1:501",  # five parts of another (older) format
    "cr1:one:1:1",  # ours, cut short
    "cr1:one:1:1:501:extra",
])
async def test_an_invoice_that_is_not_ours_is_stopped_at_the_checkout(db: Database, payload: str) -> None:
    assert shop(db).check(None, SELLER, payload, "XTR", 1) is CheckoutProblem.UNKNOWN_PACK
    assert shop(db).check(None, SELLER, shop(db).payload(ONE, SELLER), "XTR", 1) is None


async def test_the_operator_sees_which_pack_and_charge_a_payment_came_from(db: Database) -> None:
    """`neurocards credits show` prints each ledger row's note: for a payment, the pack and the
    Telegram charge id the operator needs to find it in Telegram's records."""
    await pay(shop(db), SELLER, PACK, charge_id="tg-charge-42")
    assert [(r.reason, r.note) for r in await UserStore(db).ledger(SELLER)] == [("payment", "m tg-charge-42")]


async def test_a_charge_id_delivered_again_for_another_user_credits_nobody(db: Database) -> None:
    payments = shop(db)
    await pay(payments, SELLER, PACK, charge_id="same")
    again = await pay(payments, FRIEND, PACK, charge_id="same")
    assert (again.duplicate, again.credits) == (True, 0)
    assert await UserStore(db).balance(FRIEND) == 0 and await UserStore(db).balance(SELLER) == 120
