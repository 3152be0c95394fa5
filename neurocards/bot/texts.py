"""Every user-facing text of the bot (Russian). Messages use HTML parse mode."""

from __future__ import annotations

import datetime as _dt
from html import escape
from typing import assert_never

from neurocards.jobs.alerts import (
    BalanceRunningOut,
    EngineStalled,
    FailureRate,
    GptFailing,
    JobNeedsAttention,
    JobsResumed,
    KeyDisabled,
    LowBalance,
    NoPayingKey,
    OperatorAlert,
)
from neurocards.services.costs import BalanceForecast, Margin
from neurocards.services.orders import BalanceView
from neurocards.services.support import ID_MARKER, RecentJob
from neurocards.store.broadcasts import Counts as BroadcastCounts
from neurocards.store.stats import DayNumbers, PeriodStats, UserReport
from neurocards.store.users import User

# ---- buttons -------------------------------------------------------------
BTN_CREATE = "🎬 Создать видео"
BTN_BALANCE = "💰 Баланс"
BTN_SUPPORT = "🆘 Поддержка"
BTN_MENU = "🏠 Меню"
BTN_SKIP = "⏭ Пропустить"
BTN_LAUNCH = "✅ Запустить"
BTN_EDIT = "✏️ Изменить"
BTN_CANCEL = "❌ Отмена"
BTN_AGAIN_PRODUCT = "🔄 Сделать ещё с этим товаром"
BTN_TRY_AGAIN = "🔄 Попробовать ещё раз"
BTN_OTHER_PHOTO = "📷 Отправить другое фото"


def qty_button(count: int, cost: int) -> str:
    return f"{count} видео — {cost} кр."


# ---- menu ----------------------------------------------------------------
def menu(first_name: str | None, balance: int, per_video: int) -> str:
    name = escape(first_name) if first_name else "продавец"
    return (
        f"👋 Привет, {name}!\n\n"
        "Я делаю короткие рекламные видео для карточек товаров на Wildberries и Ozon "
        "из одной фотографии товара.\n\n"
        f"💰 Баланс: <b>{balance}</b> кр. (одно видео — {per_video} кр.)\n\n"
        "Нажмите «🎬 Создать видео», чтобы начать."
    )


def welcome_bonus(amount: int) -> str:
    return f"🎁 Вам начислено {amount} кр. в подарок — хватит, чтобы попробовать."


def balance(amount: int, per_video: int) -> str:
    videos = amount // per_video if per_video else 0
    return f"💰 Ваш баланс: <b>{amount}</b> кр.\nЭтого хватит на {videos} видео ({per_video} кр. за видео)."


# ---- the creation dialogue -----------------------------------------------
ASK_PHOTO = (
    "📷 Отправьте фото товара.\n\n"
    "Лучше всего подходит товар крупно на однотонном фоне, без людей и чужих логотипов. "
    "Можно прислать фото или файл-картинку (JPG, PNG, WebP)."
)
NOT_A_PHOTO = "Нужна фотография товара: отправьте фото или картинку файлом (JPG, PNG, WebP)."
PHOTO_DOWNLOAD_FAILED = "😕 Не удалось получить фото от Telegram. Отправьте его ещё раз, пожалуйста."
ASK_DESCRIPTION = (
    "✍️ Коротко опишите товар: что это, цвет, материал, главное преимущество.\n"
    "Например: «Белая керамическая кружка 350 мл с бамбуковой крышкой»."
)
DESCRIPTION_EMPTY = "Напишите описание товара текстом — одной-двумя фразами."


def description_too_long(limit: int) -> str:
    return f"Описание слишком длинное. Сократите, пожалуйста, до {limit} символов."


ASK_TEMPLATE = "🎨 Выберите стиль видео:"
FORMAT_USES = {
    "9:16": "Reels, Shorts, обложка Ozon",
    "3:4": "карточка Wildberries",
    "1:1": "лента соцсетей",
    "16:9": "YouTube, сайт",
}
_FORMAT_ICONS = {"9:16": "📱", "3:4": "🖼", "1:1": "⬜", "16:9": "🖥"}


def ask_format(default: str, surcharge: dict[str, int]) -> str:
    lines = "\n".join(
        f"{_FORMAT_ICONS.get(a, '')} {a} — {use}" + (f" (+{surcharge[a]} кр.)" if surcharge.get(a) else "")
        for a, use in FORMAT_USES.items())
    return (f"📐 <b>Формат видео</b>\n\n{lines}\n\n"
            f"Для этого стиля обычно {default}. Видео придёт точно в выбранном формате.")


def format_button(aspect: str, surcharge: int) -> str:
    return f"{aspect} +{surcharge}" if surcharge else aspect


def format_keep(default: str) -> str:
    return f"⏭ Оставить {default}"


ASK_WISHES = (
    "💬 Есть пожелания к видео? Например: «больше света», «на фоне моря», «медленнее».\n"
    "Напишите их или нажмите «⏭ Пропустить»."
)
ASK_QUANTITY = "🔢 Сколько видео сделать? Каждое видео получится немного другим."


def confirm(description: str, template_title: str, wishes: str, count: int, cost: int,
            balance: int, aspect: str = "") -> str:
    shape = f"📐 Формат: {escape(aspect)}\n" if aspect else ""
    return (
        "📝 <b>Проверьте заказ</b>\n\n"
        f"📦 Товар: {escape(description)}\n"
        f"🎨 Стиль: {escape(template_title)}\n"
        f"{shape}"
        f"💬 Пожелания: {escape(wishes) if wishes else 'нет'}\n"
        f"🔢 Количество: {count}\n\n"
        f"💳 Стоимость: <b>{cost}</b> кр.\n"
        f"💰 Баланс после запуска: {balance - cost} кр."
    )


def not_enough_credits(cost: int, balance: int) -> str:
    return (
        "😔 <b>Не хватает кредитов</b>\n\n"
        f"Стоимость: {cost} кр., ваш баланс: {balance} кр.\n"
        f"Не хватает: <b>{cost - balance}</b> кр.\n\n"
        "Выберите меньше видео или пополните баланс."
    )


def accepted(count: int, view: BalanceView) -> str:
    videos = "видео" if count == 1 else f"{count} видео"
    return (
        f"⏳ Принял! Генерация запущена, обычно 3–10 минут. Баланс: {view.balance} кр.\n\n"
        f"Пришлю {videos} сюда, как только будет готово. Можно пока отправить новое фото."
        + _low_balance_note(view)
    )


def low_balance(view: BalanceView) -> str:
    """One line for a balance that is running out; empty while it is not."""
    if not view.low:
        return ""
    if view.short:
        return (f"⚠️ Кредитов не хватает на следующее видео (нужно {view.price} кр.). "
                "Пополните баланс, чтобы продолжить.")
    return f"⚠️ Кредиты заканчиваются: хватит ещё на {view.videos_left} видео."


def _low_balance_note(view: BalanceView) -> str:
    line = low_balance(view)
    return f"\n\n{line}" if line else ""


def limit_reached(kind: str, limit: int, retry_in_s: int) -> str:
    if kind == "too_soon":
        return f"⏱ Новый заказ можно оформить через {retry_in_s} сек. Это защита от случайных повторов."
    if kind == "per_day":
        hours = max(1, round(retry_in_s / 3600))
        return f"📅 Дневной лимит — {limit} видео. Он обновится примерно через {hours} ч."
    return f"⏳ У вас уже делается много видео (лимит {limit} одновременно). Дождитесь готовых и продолжите."


ALREADY_LAUNCHED = "Этот заказ уже запущен ✅"
CANCELLED = "Заказ отменён, кредиты не списаны."
SESSION_EXPIRED = "Эта кнопка устарела. Начните заново из меню 👇"
PRODUCT_GONE = "Фото этого товара больше недоступно. Отправьте фото заново, пожалуйста."
UNKNOWN_INPUT = "Не понял 🤔 Воспользуйтесь кнопками меню или нажмите /start."

# ---- results -------------------------------------------------------------


def simple_mode_note(cheaper: bool) -> str:
    """`cheaper`: the simpler way really costs less than the main one (credits.per_provider)."""
    return ("ℹ️ Основной сервис генерации сейчас недоступен, поэтому видео будет сделано в упрощённом "
            "режиме (плавный наезд камеры на ваше фото)" + (" — и стоит дешевле." if cheaper else "."))


def video_ready(view: BalanceView, simple: bool = False, *, paid: int | None = None,
                ordered: int | None = None) -> str:
    note = "\nℹ️ Сделано в упрощённом режиме: основной сервис был недоступен." if simple else ""
    price = ""
    if paid is not None:
        price = f"\n💳 Стоимость: {paid} кр."
        if ordered is not None and paid < ordered:
            price += (f" Видео сделал более дешёвый способ, поэтому вместо {ordered} кр. списано {paid} — "
                      f"{ordered - paid} кр. вернулись на баланс.")
    return f"✅ Видео готово! Баланс: {view.balance} кр.{price}{note}" + _low_balance_note(view)


FIRST_RETRY = "⚠️ Первая попытка не удалась, пробуем ещё раз…"


def queue_wait(minutes: int) -> str:
    return f"⏳ Сервис генерации загружен, ваше видео в очереди. Осталось примерно {minutes} мин"


def failed_after_retries(attempts: int, balance: int) -> str:
    return (
        f"❌ Не удалось создать видео после {attempts} попыток. 💰 Кредиты возвращены\n"
        f"Баланс: {balance} кр. Попробуйте ещё раз — обычно со второго раза получается."
    )


def failed_violation(reason: str, balance: int) -> str:
    return (
        "🚫 Сервис генерации отклонил это фото или описание.\n"
        f"Причина: {escape(reason)}\n\n"
        "Подходит фото, где только товар: без людей и лиц, без чужих логотипов и персонажей, "
        "без откровенного содержания.\n"
        f"💰 Кредиты возвращены. Баланс: {balance} кр."
    )


def failed_technical(balance: int, support_username: str) -> str:
    contact = f" Если повторится — напишите в поддержку @{escape(support_username)}." if support_username else ""
    return (
        "🛠 Временная техническая проблема на стороне сервиса генерации. 💰 Кредиты возвращены.\n"
        f"Баланс: {balance} кр.{contact}"
    )


def failed_timeout(balance: int) -> str:
    return (
        "⌛ Генерация заняла слишком много времени. 💰 Кредиты возвращены.\n"
        f"Баланс: {balance} кр. Попробуйте ещё раз."
    )


def failed_photo_gone(balance: int) -> str:
    return (
        "📷 Фото товара больше недоступно (хранится ограниченное время). 💰 Кредиты возвращены.\n"
        f"Баланс: {balance} кр. Отправьте фото заново."
    )


def delivery_failed(balance: int) -> str:
    return f"❌ Ошибка при отправке видео. Кредиты возвращены\nБаланс: {balance} кр."


def failed_generation(balance: int) -> str:
    return (
        "❌ Нейросеть не смогла сделать видео по этому фото и описанию. 💰 Кредиты возвращены.\n"
        f"Баланс: {balance} кр. Попробуйте другое фото (товар крупно, на чистом фоне) или другой стиль."
    )


DELIVERY_DELAYED = (
    "🎬 Видео готово, но Telegram сейчас не принимает файлы. Пришлём его, как только получится — "
    "ничего делать не нужно."
)


VIOLATION_REASONS = {
    "people": "на фото есть люди или лица",
    "default": "содержимое не прошло модерацию",
}

# ---- admin ------------------------------------------------------------------
ADMIN_USAGE_ADD = "Использование: /admin_add_credits &lt;user_id&gt; &lt;amount&gt; [причина]"
ADMIN_USAGE_INFO = "Использование: /admin_user_info &lt;user_id&gt;"
ADMIN_USAGE_BAN = "Использование: /admin_ban &lt;user_id&gt; или /admin_unban &lt;user_id&gt;"


def admin_credits_changed(user_id: int, amount: int, balance: int) -> str:
    return f"✅ Пользователь {user_id}: {amount:+d} кр., баланс теперь {balance} кр."


def admin_cannot_remove(user_id: int, balance: int) -> str:
    return f"⛔ Нельзя списать больше, чем есть: баланс пользователя {user_id} — {balance} кр."


def credits_granted(amount: int, balance: int) -> str:
    return f"🎁 Вам начислено {amount} кр. Баланс: {balance} кр."


def admin_bad_user_id(value: str) -> str:
    return f"⚠️ «{escape(value[:40])}» — не id пользователя: нужно целое число больше 0 (id из Telegram)."


def admin_bad_amount(value: str, limit: int) -> str:
    return (f"⚠️ «{escape(value[:40])}» — не подходит: сумма — целое число от −{limit:,} до {limit:,}, "
            "не 0.").replace(",", " ")


def admin_no_user(user_id: int) -> str:
    return f"Пользователь {user_id} ещё не пользовался ботом."


def _date(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def admin_user_report(r: UserReport) -> str:
    jobs = ", ".join(f"{k}: {v}" for k, v in sorted(r.jobs_by_state.items())) or "нет"
    lines = [
        f"👤 <b>{r.user_id}</b> {escape(r.first_name or '')} "
        f"{'@' + escape(r.username) if r.username else ''}",
        f"💰 Баланс: {r.balance} кр.{' ⛔ забанен' if r.banned else ''}",
        (f"📅 С нами с {_date(r.first_seen)}, был {_date(r.last_seen)}" if r.seen
         else "📅 Ещё не запускал бота (начисление или бан заранее)"),
        f"🎬 Задачи: {jobs}",
    ]
    if r.referrer_id:
        lines.append(f"🤝 Приглашён пользователем {r.referrer_id}")
    for job_id, cls, text in r.last_errors:
        lines.append(f"❌ #{job_id} {escape(cls)}: {escape(text[:120])}")
    for reason, delta, at in r.payments:
        lines.append(f"💳 {escape(reason)} {delta:+d} ({_date(at)})")
    return "\n".join(lines)


def admin_banned(user_id: int, changed: bool, cancelled: int) -> str:
    if not changed:
        return f"Пользователь {user_id} уже забанен."
    extra = f" Отменено задач с возвратом: {cancelled}." if cancelled else ""
    return f"⛔ Пользователь {user_id} забанен.{extra}"


def admin_unbanned(user_id: int, changed: bool) -> str:
    return f"✅ Пользователь {user_id} разбанен." if changed else f"Пользователь {user_id} не был забанен."


def admin_stats(today: PeriodStats, week: PeriodStats, keys: list[dict],
                margins: tuple[Margin, Margin] | None = None, forecast: BalanceForecast | None = None) -> str:
    def block(title: str, p: PeriodStats, m: Margin | None) -> str:
        fails = ", ".join(f"{k}: {v}" for k, v in p.failures_by_class.items()) or "нет"
        return (f"<b>{title}</b>\n👥 Новых: {p.new_users}\n✅ Видео доставлено: {p.delivered}\n"
                f"❌ Ошибки: {escape(fails)}\n"
                f"💳 Списано: {p.credits_charged} кр., возвращено: {p.credits_refunded} кр."
                + promo_line(p.promo_redemptions) + cost_lines(p, m))

    key_lines = "\n".join(
        f"🔑 {k.get('key_id')}: {k.get('state')}, запросов {k.get('requests', 0)}, ошибок {k.get('errors', 0)}"
        for k in keys) or "🔑 ключей нет (sandbox)"
    m_today, m_week = margins or (None, None)
    balance = f"\n{kie_forecast(forecast)}" if forecast is not None else ""
    return f"📊 {block('Сегодня', today, m_today)}\n\n{block('7 дней', week, m_week)}\n\n{key_lines}{balance}"


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:.2f}" if value >= 0 else f"−${-value:.2f}"


def _thousands(value: float) -> str:
    return f"{value:,.0f}".replace(",", " ")


def _days(n: int) -> str:
    word = "дней" if 11 <= n % 100 <= 14 else {1: "день", 2: "дня", 3: "дня", 4: "дня"}.get(n % 10, "дней")
    return f"{n} {word}"


def cost_lines(p: PeriodStats, m: Margin | None) -> str:
    """KIE tasks and what a delivered video brought and cost (empty before anything was spent)."""
    if not p.kie_tasks and not p.stars_received and not p.openai_tokens:
        return ""
    line = (f"\n🎞 Задач KIE: {p.kie_tasks} ({p.kie_credits:g} кредитов), токенов GPT: {p.openai_tokens},"
            f" получено ⭐ {p.stars_received}")
    if m is not None and m.delivered:
        line += (f"\n💵 На одно видео: выручка {_usd(m.revenue_per_video)}, затраты {_usd(m.cost_per_video)},"
                 f" маржа {_usd(m.margin_per_video)}; на сбои и повторные задачи ушло {m.wasted_share:.0%}"
                 " затрат KIE")
    return line


def kie_forecast(f: BalanceForecast) -> str:
    days = f.days_left
    if days is None:
        return f"💰 KIE: {_thousands(f.balance)} кредитов (расхода пока нет)"
    return f"💰 KIE: {_thousands(f.balance)} кредитов ≈ {_days(int(days))} при текущем расходе"


# ---- admin / misc ----------------------------------------------------------
def banned(support_username: str) -> str:
    """A banned seller cannot open the support relay: only a support account can be offered."""
    contact = f" Если это ошибка — напишите в поддержку: @{escape(support_username)}." if support_username else ""
    return f"⛔ Доступ к боту ограничен.{contact}"
TOO_FAST = "Не так быстро 🙂 Подождите секунду."

PHOTO_PROBLEMS = {
    "not_an_image": "😕 Не получается открыть этот файл как картинку. Пришлите фото товара в JPG, PNG или WebP.",
    "format": "😕 Этот формат не подходит. Пришлите фото товара в JPG, PNG или WebP.",
    "too_small": "🔍 Фото слишком маленькое. Нужна картинка не меньше 256 пикселей по короткой стороне.",
    "too_large": "📦 Файл слишком большой (больше 20 МБ). Сожмите фото или отправьте его как фото, а не файлом.",
    "too_many_pixels": ("📐 В этой картинке слишком много пикселей (больше 50 мегапикселей). "
                        "Пришлите обычное фото товара — например, снимок с телефона."),
    "animated": "🎞 Это анимация, а нужна обычная фотография товара. Пришлите фото в JPG, PNG или WebP без анимации.",
    "damaged": "😕 Картинка повреждена или загружена не полностью. Пришлите обычное фото товара ещё раз.",
}

# ---- payments (Telegram Stars) ---------------------------------------------
BTN_TOPUP = "💳 Пополнить"
BTN_CABINET = "👤 Кабинет"
BTN_MY_VIDEOS = "📂 Мои видео"
BTN_BUY_CREDITS = "💳 Купить кредиты"
BTN_VIDEOS = "🎞 Мои видео"
BTN_PURCHASES = "🧾 История покупок"
BTN_PREV = "◀️"
BTN_NEXT = "▶️"


def pack_button(label: str, stars: int) -> str:
    return f"{label} — {stars} ⭐"


def packs_screen(balance: int, per_video: int) -> str:
    return (
        "💳 <b>Пополнение баланса</b>\n\n"
        f"💰 Баланс: <b>{balance}</b> кр. Одно видео — {per_video} кр.\n"
        "Оплата в Telegram Stars ⭐ — выберите пакет:"
    )


def invoice_description(credits: int, per_video: int) -> str:
    videos = credits // per_video if per_video else 0
    return f"{credits} кредитов на баланс — хватит на {videos} видео. Кредиты не сгорают."


PACK_GONE = "Этот пакет больше не продаётся. Откройте «💳 Пополнить» и выберите заново."
CHECKOUT_PROBLEMS = {
    "banned": banned(""),
    "unknown_pack": PACK_GONE,
    "price_changed": "Цена пакета изменилась. Откройте «💳 Пополнить» и выберите пакет заново.",
    "wrong_user": "Этот счёт выставлен другому пользователю. Откройте «💳 Пополнить» в своём чате с ботом.",
    "currency": "Оплата принимается только в Telegram Stars ⭐.",
}


def payment_received(credits: int, balance: int) -> str:
    return f"✅ Оплата получена, начислено <b>{credits}</b> кр.\n💰 Баланс: <b>{balance}</b> кр."


def payment_duplicate(balance: int) -> str:
    return f"Этот платёж уже зачислен ✅ Баланс: {balance} кр."


PAYMENT_UNMATCHED = (
    "⚠️ Оплата получена, но не удалось определить пакет. Напишите в /paysupport — мы всё исправим."
)


def terms(custom: str, per_video: int) -> str:
    if custom:
        return escape(custom)
    return (
        "📄 <b>Условия</b>\n\n"
        "Кредиты покупаются за Telegram Stars ⭐ и тратятся на создание видео "
        f"({per_video} кр. за видео). Если видео не удалось создать, кредиты возвращаются на баланс "
        "автоматически. Stars за неизрасходованные кредиты можно вернуть по запросу в /paysupport. "
        "Нельзя загружать фото с людьми, чужими логотипами и запрещённым содержимым. "
        "Оплачивая, вы соглашаетесь с этими условиями."
    )


def payment_refunded(stars: int, removed: int, balance: int) -> str:
    return f"↩️ Платёж на {stars} ⭐ возвращён, списано {removed} кр.\n💰 Баланс: {balance} кр."


ADMIN_USAGE_REFUND = "Использование: /admin_refund &lt;user_id&gt; &lt;telegram_payment_charge_id&gt;"


def admin_refund_done(user_id: int, stars: int, removed: int, credits: int, balance: int) -> str:
    short = f" (из {credits}: остальное уже потрачено)" if removed < credits else ""
    return (f"↩️ Пользователю {user_id} возвращено {stars} ⭐, списано {removed} кр.{short} "
            f"Баланс: {balance} кр.")


def admin_refund_refused(reason: str, *, balance: int = 0, credits: int = 0, detail: str = "") -> str:
    reasons = {
        "not_found": "платёж не найден у этого пользователя",
        "already": "этот платёж уже возвращён",
        "in_progress": "возврат этого платежа уже выполняется",
        "spent": (f"кредиты уже потрачены (баланс {balance} из {credits}); чтобы возвращать в таких случаях, "
                  'поставьте payments.refund_when_spent = "allow"'),
        "telegram": f"Telegram отказал: {escape(detail)}",
    }
    return f"⛔ Возврат не выполнен: {reasons[reason]}."


# ---- referrals, cabinet, my videos -------------------------------------------
def referral_bonus(credits: int, balance: int) -> str:
    return (f"🎉 Ваш приглашённый друг начал пользоваться ботом — вам начислено <b>{credits}</b> кр.\n"
            f"💰 Баланс: {balance} кр.")


def cabinet(*, balance: int, done: int, failed: int, payments: int, stars: int, link: str,
            invited: int, earned: int, bonus: int, bonus_on: str) -> str:
    when = "сделает первую оплату" if bonus_on == "first_payment" else "получит первое видео"
    offer = f"За каждого друга, который {when}, вы получите {bonus} кр.\n" if bonus > 0 else ""
    return (
        "👤 <b>Кабинет</b>\n\n"
        f"💰 Баланс: <b>{balance}</b> кр.\n"
        f"🎬 Готовых видео: {done}\n"
        f"❌ Не удалось (кредиты возвращены): {failed}\n"
        f"💳 Оплат: {payments} ({stars} ⭐)\n\n"
        "🤝 <b>Пригласите друзей</b>\n"
        f"{offer}"
        f"Ваша ссылка: {escape(link)}\n"
        f"Приглашено: {invited}, получено бонусов: {earned} кр."
    )


def videos_page(lines: list[tuple[int, str, str]], total: int) -> str:
    items = "\n".join(f"{n}. {escape(day)} — {escape(_short(description))}" for n, day, description in lines)
    return f"📂 <b>Мои видео</b> (всего {total})\n\n{items}\n\nНажмите «▶️ номер», чтобы получить видео ещё раз."


NO_VIDEOS = "📂 Здесь будут ваши готовые видео. Пока их нет — нажмите «🎬 Создать видео»."
VIDEO_GONE = "Это видео больше недоступно."


def video_button(number: int) -> str:
    return f"▶️ {number}"


def video_again_caption(day: str, description: str) -> str:
    return f"📹 {escape(day)} — {escape(_short(description, 200))}"


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split()) or "без описания"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- operator alerts (plain text, no HTML) ------------------------------------
def operator_alert(alert: OperatorAlert) -> str:
    return "⚠️ " + _alert_body(alert)


def _alert_body(alert: OperatorAlert) -> str:
    match alert:
        case BalanceRunningOut(balance, days_left):
            return (f"KIE: {_thousands(balance)} кредитов ≈ {_days(int(days_left))} при текущем расходе. "
                    "Пополните баланс, пока генерация не остановилась.")
        case LowBalance(balance, threshold):
            return (f"KIE: на счёте осталось {balance:g} кредитов (порог {threshold:g}). "
                    "Пополните баланс, пока генерация не остановилась.")
        case EngineStalled(age_s):
            return f"Движок генерации не отвечает уже {age_s:.0f} с. Проверьте процесс (journalctl -u neurocards)."
        case FailureRate(failed, total):
            return (f"За 15 минут не удались {failed} из {total} видео ({failed / total:.0%}). "
                    "Кредиты возвращены; проверьте KIE и /admin_stats.")
        case KeyDisabled(key_id, reason, keys_left):
            return f"KIE: ключ {key_id} отключён ({reason}); осталось рабочих ключей: {keys_left}"
        case NoPayingKey(reason):
            return (f"KIE: ни один API-ключ не может оплатить генерацию ({reason}). "
                    "Пополните баланс KIE или замените ключи.")
        case JobsResumed(count):
            return f"neurocards перезапущен: продолжаю {count} незавершённых задач"
        case JobNeedsAttention(job_id, failure_class, code, text):
            return f"job {job_id}: {failure_class} (code {code}): {text}"
        case GptFailing(failed, total, reason):
            return (f"GPT: за 15 минут не удались {failed} из {total} запросов ({failed / total:.0%}), "
                    f"последняя ошибка: {reason}. Видео делаются по шаблонам без GPT; "
                    "проверьте ключи openai.api_keys и прокси.")
        case _:
            assert_never(alert)


# ---- promo codes ---------------------------------------------------------------
BTN_PROMO = "🎁 Промокод"
PROMO_ASK = "🎁 Отправьте промокод одним сообщением."
PROMO_FORMAT = ("Промокод — это от 3 до 32 латинских букв, цифр, «_» или «-». "
                "Проверьте и отправьте ещё раз.")
PROMO_WAIT = "⏳ Слишком много неверных промокодов. Попробуйте снова через час."
PROMO_REFUSED = {
    "unknown": "Такого промокода нет. Проверьте, нет ли опечатки.",
    "expired": "Срок действия этого промокода закончился.",
    "disabled": "Этот промокод больше не действует.",
    "used_up": "Этот промокод уже использован максимальное число раз.",
    "already": "Вы уже активировали этот промокод — он действует один раз.",
}


def promo_line(redemptions: dict[str, int]) -> str:
    """Redemptions per code for the owner's numbers (empty when there were none)."""
    if not redemptions:
        return ""
    return "\n🎁 Промокоды: " + ", ".join(f"{escape(code)} ×{n}" for code, n in redemptions.items())


def promo_redeemed(code: str, credits: int, balance: int) -> str:
    return f"🎁 Промокод {escape(code)} активирован: +{credits} кр.\n💰 Баланс: <b>{balance}</b> кр."


ADMIN_USAGE_PROMO = "Использование: /admin_promo КОД кредиты [сколько_раз]"
ADMIN_PROMO_BAD = {
    "code": "Код — от 3 до 32 латинских букв, цифр, «_» или «-».",
    "credits": "Кредиты — целое число от 1 до 1 000 000.",
    "uses": "Число активаций — целое число от 1 до 1 000 000.",
    "expires": "Дата окончания — не раньше сегодняшней, в виде ГГГГ-ММ-ДД.",
    "exists": "Такой промокод уже есть.",
}


def admin_promo_created(code: str, credits: int, uses: int | None, link: str) -> str:
    limit = f"{uses} активаций" if uses else "без ограничения активаций"
    return (f"✅ Промокод <code>{escape(code)}</code>: +{credits} кр., {limit}.\n"
            f"Ссылка: {escape(link)}")


# ---- purchase history ----------------------------------------------------------
NO_PURCHASES = "🧾 Покупок пока не было. Пополнить баланс можно кнопкой «💳 Пополнить»."


def purchases(lines: list[tuple[str, str, int, int, bool]], total: int) -> str:
    """(day, pack label, stars, credits, refunded) of the latest purchases, newest first."""
    items = "\n".join(
        f"{escape(day)} — {escape(label)}: {stars} ⭐ → {credits} кр."
        + (" ↩️ возвращено" if refunded else "")
        for day, label, stars, credits, refunded in lines)
    more = f"\n\nПоказаны последние {len(lines)} из {total}." if total > len(lines) else ""
    return f"🧾 <b>История покупок</b>\n\n{items}{more}"


# ---- broadcasts ------------------------------------------------------------------
BTN_NEWS_OFF = "🔕 Не присылать новости"
NEWS_OFF_DONE = "Хорошо, больше не будем присылать новости."
BTN_BROADCAST_SEND = "✅ Отправить"
BTN_BROADCAST_CANCEL = "Отмена"
BTN_BROADCAST_BUTTON = "🔗 Кнопка-ссылка"
BROADCAST_SEGMENTS = {
    "all": "Все",
    "paid": "Покупали",
    "active30": "Активны 30 дней",
    "no_video": "Ни одного видео",
}
BROADCAST_ASK = ("📣 Пришлите сообщение для рассылки: текст, или фото либо видео с подписью. "
                 "Продавцы увидят его в точности так же.")
BROADCAST_ASK_BUTTON = "🔗 Пришлите кнопку одной строкой: <code>Текст кнопки | https://ссылка</code>"
BROADCAST_BAD_BUTTON = "Не получилось разобрать. Нужно так: <code>Текст кнопки | https://ссылка</code>"
BROADCAST_PROBLEMS = {
    "empty": "Сообщение пустое — пришлите текст, фото или видео.",
    "kind": "Рассылка умеет текст, фото или видео с подписью. Пришлите одно из них.",
    "text_too_long": "Текст длиннее 4096 символов — Telegram его не примет. Сократите, пожалуйста.",
    "caption_too_long": "Подпись длиннее 1024 символов — Telegram её не примет. Сократите, пожалуйста.",
    "file_too_big": "Файл слишком большой для рассылки. Пришлите файл поменьше.",
}
BROADCAST_CANCELLED = "Рассылка отменена, ничего не отправлено."
BROADCAST_STALE = "Этот черновик уже отправлен или отменён. Начните заново: /admin_broadcast"
BROADCAST_NOBODY = "В этом сегменте нет получателей — выберите другой."
BROADCAST_NOTHING_TO_STOP = "Сейчас ни одна рассылка не идёт."


def broadcast_preview_note(recipients: int, segment: str) -> str:
    return (f"👆 Так сообщение увидят продавцы.\n"
            f"Сегмент: <b>{BROADCAST_SEGMENTS[segment]}</b> — получателей: <b>{recipients}</b>.\n"
            "Выберите сегмент и нажмите «✅ Отправить».")


def broadcast_started(broadcast_id: int, recipients: int) -> str:
    return f"🚀 Рассылка #{broadcast_id} запущена: {recipients} получателей."


def broadcast_stopped(ids: list[int]) -> str:
    return "⏹ Остановлена рассылка " + ", ".join(f"#{i}" for i in ids) + ". Остальным она не придёт."


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes = int(seconds // 60)
    return f"≈ {minutes} мин" if minutes else f"≈ {max(1, int(seconds))} с"


def broadcast_progress(broadcast_id: int, c: BroadcastCounts, eta_s: float | None, *,
                       final: str | None = None) -> str:
    title = {None: "идёт", "done": "завершена", "stopped": "остановлена"}[final]
    lines = [f"📣 Рассылка #{broadcast_id} {title}",
             f"✅ Доставлено: {c.sent}", f"🚫 Заблокировали бота: {c.blocked}",
             f"⚠️ Ошибки: {c.failed}", f"❔ Неизвестно: {c.unknown}",
             f"⏳ Осталось: {c.pending} из {c.total}"]
    if final is None:
        lines.append(f"Осталось времени: {_eta(eta_s)}")
    return "\n".join(lines)


# ---- the statement (every credit movement) -----------------------------------
BTN_STATEMENT = "📄 Выписка"
BTN_STATEMENT_CSV = "📥 Скачать CSV"
STATEMENT_NOTHING = "Движений по балансу пока не было."
STATEMENT_EMPTY = f"📄 <b>Выписка</b>\n\n{STATEMENT_NOTHING}"
STATEMENT_CSV_CAPTION = "📄 Вся история вашего баланса (CSV: открывается в Excel и Google Таблицах)."
STATEMENT_CSV_HEADER = ("дата", "вид", "сумма", "баланс после", "заказ", "задача", "платёж", "описание")

# Why a job's credits came back, by failure class (the refund row's note).
REFUND_REASONS = {
    "user_violation": "сервис отклонил фото по правилам",
    "temporary": "видео не получилось после нескольких попыток",
    "unknown": "видео не получилось после нескольких попыток",
    "rate_limit": "сервис генерации перегружен",
    "billing": "техническая проблема сервиса",
    "our_bug": "техническая проблема",
    "timeout": "генерация заняла слишком много времени",
    "photo_gone": "фото товара больше недоступно",
    "delivery": "не удалось отправить видео",
    "cancelled": "заказ отменён",
}


def refund_reason(error_class: str | None) -> str:
    return REFUND_REASONS.get(error_class or "", "видео не получилось")


def statement_text(kind: str, *, product: str | None = None, order_id: int | None = None,
                   job_id: int | None = None, stars: int | None = None, note: str | None = None) -> str:
    """One ledger row in plain words (no HTML): what moved the balance and why."""
    if kind == "job_charge":
        where = f"заказ {order_id}" if order_id else f"задача {job_id}"
        return f"видео «{_short(product or '', 40)}» · {where}"
    if kind == "job_refund":
        return f"возврат: {refund_reason(note)}"
    if kind == "payment":
        return f"покупка {stars} ⭐" if stars else "покупка кредитов"
    if kind == "payment_refund":
        return f"возврат оплаты {stars} ⭐" if stars else "возврат оплаты"
    if kind == "promo":
        return f"промокод {note}" if note else "промокод"
    return {
        "referral": "бонус за друга",
        "welcome": "подарок за знакомство",
        "admin": "корректировка поддержкой",
        "price_adjustment": "перерасчёт цены видео",
    }.get(kind, kind)


def statement_line(day: str, amount: int, text: str, balance_after: int) -> str:
    sign = "+" if amount > 0 else "−"
    return f"{escape(day)} · <b>{sign}{abs(amount)}</b> · {escape(text)} → {balance_after} кр."


def statement_screen(lines: list[str], balance: int, total: int) -> str:
    shown = f"последние {len(lines)} из {total}" if total > len(lines) else f"всего {total}"
    return (f"📄 <b>Выписка</b> ({shown})\n\n" + "\n".join(lines)
            + f"\n\n💰 Баланс: <b>{balance}</b> кр. — это сумма всех строк выписки.")


# ---- orders of many products (albums), live status, summary ---------------------
BTN_ONE_DESCRIPTION = "📝 Одно описание для всех"
BTN_REPLACE_ALBUM = "🔁 Заменить"
BTN_ADD_ALBUM = "➕ Добавить"
BTN_ORDERS = "📦 Мои заказы"
BTN_ZIP = "🗜 Все видео одним архивом"
BTN_REMOVE_PRODUCT = "➖ Убрать последний товар"

SKIPPED_KINDS = {"document": "файл", "video": "видео", "sticker": "стикер", "animation": "GIF",
                 "audio": "аудио", "voice": "голосовое", "other": "не фото"}


def plural(n: int, one: str, few: str, many: str) -> str:
    tail = n % 100
    if 11 <= tail <= 14:
        return many
    return {1: one, 2: few, 3: few, 4: few}.get(n % 10, many)


def products_count(n: int) -> str:
    return f"{n} {plural(n, 'товар', 'товара', 'товаров')}"


def album_accepted(count: int, *, skipped: list[tuple[int, str]], rejected: list[tuple[int, str]],
                   cut: list[int], cut_description: list[int], limit: int, description_limit: int) -> str:
    """One answer for a whole album: what was taken and, by number, what was not and why."""
    lines = [f"📦 Принял альбом: <b>{products_count(count)}</b>."]
    if skipped:
        items = ", ".join(f"№{n} — {SKIPPED_KINDS.get(kind, kind)}" for n, kind in skipped)
        lines.append(f"⏭ Пропустил (нужны фото): {items}.")
    if rejected:
        items = ", ".join(f"№{n} — {PHOTO_SHORT_PROBLEMS.get(problem, problem)}" for n, problem in rejected)
        lines.append(f"⚠️ Не подошли: {items}.")
    if cut:
        numbers = ", ".join(f"№{n}" for n in cut)
        lines.append(f"✂️ В одном заказе до {limit} товаров — взял первые {limit}, не вошли: {numbers}.")
    if cut_description:
        numbers = ", ".join(f"№{n}" for n in cut_description)
        lines.append(f"✂️ Подписи {numbers} длиннее {description_limit} символов — сократил.")
    return "\n".join(lines)


PHOTO_SHORT_PROBLEMS = {
    "not_an_image": "не открывается как картинка",
    "format": "формат не JPG/PNG/WebP",
    "too_small": "слишком маленькое",
    "too_large": "больше 20 МБ",
    "too_many_pixels": "больше 50 мегапикселей",
    "animated": "анимация, а не фото",
    "damaged": "картинка повреждена",
    "download": "Telegram не отдал фото",
}
ALBUM_NOTHING_USABLE = ("😕 В альбоме не нашлось подходящих фото товара. Пришлите фото (JPG, PNG или WebP, "
                        "не меньше 256 пикселей по короткой стороне).")


def ask_product_description(number: int, total: int) -> str:
    return (f"✍️ Опишите товар {number} из {total}: что это, цвет, материал, главное преимущество.\n"
            "Или нажмите «📝 Одно описание для всех» — и напишите одно описание для всех оставшихся.")


ASK_COMMON_DESCRIPTION = "✍️ Напишите одно описание — оно подойдёт для всех товаров без подписи."


def album_while_ordering(current: int, new: int) -> str:
    return (f"📦 У вас уже собран заказ: {products_count(current)}. Пришёл ещё альбом: {products_count(new)}.\n"
            "Заменить заказ новым альбомом или добавить товары к нему?")


def confirm_order(products: list[str], template_title: str, wishes: str, count: int, price: int,
                  balance: int, aspect: str = "") -> str:
    total = len(products) * count * price
    shape = f"📐 Формат: {escape(aspect)}\n" if aspect else ""
    return (
        "📝 <b>Проверьте заказ</b>\n\n"
        f"📦 Товары ({len(products)}):\n{_numbered(products)}\n\n"
        f"🎨 Стиль: {escape(template_title)}\n"
        f"{shape}"
        f"💬 Пожелания: {escape(wishes) if wishes else 'нет'}\n"
        f"🔢 Видео на товар: {count}\n\n"
        f"💳 Стоимость: {len(products)} × {count} × {price} = <b>{total}</b> кр.\n"
        f"💰 Баланс после запуска: {balance - total} кр."
    )


def _numbered(products: list[str]) -> str:
    return "\n".join(f"{n}. {escape(_short(p, 50))}" for n, p in enumerate(products, start=1))


def order_not_enough(cost: int, balance: int, products: list[str]) -> str:
    drop = "\nМожно убрать товары из заказа и подтвердить снова." if len(products) > 1 else ""
    return (
        "😔 <b>Не хватает кредитов на весь заказ</b> — ничего не списано.\n\n"
        f"📦 Товары ({len(products)}):\n{_numbered(products)}\n\n"
        f"Стоимость: {cost} кр., ваш баланс: {balance} кр.\n"
        f"Не хватает: <b>{cost - balance}</b> кр.\n\n"
        f"Пополните баланс или выберите меньше видео.{drop}"
    )


def order_accepted(jobs: int, products: int, balance: int) -> str:
    what = f"{jobs} видео" if products == 1 else f"{jobs} видео по {products_count(products)}"
    return (f"⏳ Принял! Генерация запущена: {what}. Баланс: {balance} кр.\n\n"
            "Ход заказа — в сообщении ниже, оно обновляется само. Можно пока отправить новое фото.")


def video_order_line(product: str, pos: int, total: int) -> str:
    """The first line of a video's caption: which product, which place in the order."""
    return f"📦 {escape(_short(product, 60))} · {pos}/{total}"


STATUS_LINES = {
    "waiting": "⏳ в очереди: {place}-й",
    "waiting_retry": "⏳ ждёт повтора",
    "starting": "⏳ запускается",
    "generating": "🎬 создаётся, попытка {attempt} из {attempts}, {elapsed}",
    "downloading": "📥 скачивается",
    "sending": "📤 отправляется",
    "done": "✅ готово",
    "refunded": "↩️ {refund} кр. вернули: {reason}",
}


def status_line(pos: int, total: int, product: str, state: str, **values: object) -> str:
    return f"{pos}/{total} {escape(_short(product, 32))} — {escape(STATUS_LINES[state].format(**values))}"


def order_status(order_id: int, lines: list[str], done: int, total: int, eta_minutes: int | None) -> str:
    if eta_minutes is None:
        eta = "✅ Заказ завершён."
    else:
        eta = f"🕐 Готово {done} из {total}. Всё будет готово примерно через {eta_minutes} мин."
    return f"📦 <b>Заказ {order_id}</b>\n\n" + "\n".join(lines) + f"\n\n{eta}"


def order_summary(order_id: int, done: int, total: int, refunded_jobs: int, refunded_credits: int,
                  reasons: list[str], balance: int) -> str:
    text = f"🏁 <b>Заказ {order_id}</b>: готово {done} из {total}"
    if refunded_jobs:
        why = "; ".join(dict.fromkeys(reasons))
        text += (f", за {refunded_jobs} вернули {refunded_credits} "
                 f"{plural(refunded_credits, 'кредит', 'кредита', 'кредитов')} ({escape(why)})")
    return text + f".\n💰 Баланс: {balance} кр."


def zip_too_large(size_mb: float, limit_mb: int) -> str:
    return (f"🗜 Архив получился бы {size_mb:.0f} МБ, а Telegram принимает от ботов файлы до {limit_mb} МБ. "
            "Все видео заказа — выше в чате, их можно сохранить по одному.")


ZIP_NOTHING = "В этом заказе нет готовых видео."
ZIP_UNAVAILABLE = "😕 Не удалось собрать архив: Telegram не отдал одно из видео. Все видео — выше в чате."
ZIP_CAPTION = "🗜 Все видео заказа одним архивом."
NO_OPEN_ORDERS = "📦 Сейчас у вас нет заказов в работе. Готовые видео — в «📂 Мои видео»."


# ---- the command menu (setMyCommands) ---------------------------------------------------------
USER_COMMANDS = (
    ("start", "Главное меню и баланс"),
    ("support", "Написать в поддержку"),
    ("paysupport", "Вопросы по оплате"),
    ("terms", "Условия и возврат Stars"),
    ("promo", "Ввести промокод"),
)
ADMIN_COMMANDS = (
    ("admin_stats", "Статистика за сегодня и 7 дней"),
    ("admin_user_info", "Пользователь: баланс, задачи, ошибки"),
    ("admin_add_credits", "Начислить или списать кредиты"),
    ("admin_ban", "Забанить (задачи в очереди — с возвратом)"),
    ("admin_unban", "Снять бан"),
    ("admin_refund", "Вернуть Stars за платёж"),
    ("admin_promo", "Создать промокод"),
)


# ---- support: a link to a person, or the relay to the operators --------------------------------
_SUPPORT_TOPIC = {"general": "🆘 <b>Поддержка</b>", "payment": "💳 <b>Вопросы по оплате</b>"}
_SUPPORT_HINT = {"general": "Опишите проблему и, если можно, приложите скриншот.",
                 "payment": "Укажите дату платежа, сумму в ⭐ и что пошло не так."}
BTN_SUPPORT_WRITE = "✉️ Написать в поддержку"
SUPPORT_SENT = "✅ Сообщение передано оператору. Ответ придёт сюда, в этот чат."
SUPPORT_NOT_SENT = "⚠️ Не удалось передать сообщение оператору. Попробуйте позже."
SUPPORT_ANSWER_HEADER = "💬 Ответ поддержки:"


def support_link(username: str, topic: str) -> str:
    return f"{_SUPPORT_TOPIC[topic]}\n\nНапишите @{escape(username)}. {_SUPPORT_HINT[topic]}"


def support_relay_ask(topic: str) -> str:
    return (f"{_SUPPORT_TOPIC[topic]}\n\nНапишите следующим сообщением, что случилось — его получит "
            f"оператор, а ответ придёт в этот чат. {_SUPPORT_HINT[topic]}")


def support_unavailable(topic: str) -> str:
    return f"{_SUPPORT_TOPIC[topic]}\n\nПоддержка в чате пока не подключена. Попробуйте позже."


def _job_line(job: RecentJob) -> str:
    error = f" ({escape(job.error_class)})" if job.error_class else ""
    return f"  #{job.id} {escape(job.template)}: {escape(job.state)}{error}"


def support_relayed_header(user: User, topic: str, jobs: list[RecentJob]) -> str:
    name = escape(user.first_name or "")
    handle = f" @{escape(user.username)}" if user.username else ""
    lines = [f"{'💳' if topic == 'payment' else '🆘'} Обращение в поддержку от {name}{handle}",
             f"{ID_MARKER}{user.id} · баланс {user.balance} кр.",
             "Последние задачи:" if jobs else "Задач ещё не было.",
             *(_job_line(job) for job in jobs),
             "↩️ Ответьте на это сообщение (Reply) — ответ уйдёт продавцу."]
    return "\n".join(lines)


def support_relayed_text(header: str, body: str, limit: int) -> str:
    """Header and the seller's words within Telegram's limit (4096 for a text, 1024 a caption)."""
    room = limit - len(header) - 3
    if not body or room <= 0:
        return header
    cut = body[:room]
    while len(escape(cut)) > room - 1:  # cut the raw text, so no HTML entity is cut in half
        cut = cut[: len(cut) - max(1, len(escape(cut)) - room + 1)]
    return f"{header}\n\n{escape(cut)}" + ("…" if cut != body else "")


def support_reply_sent(user_id: int) -> str:
    return f"✅ Ответ отправлен продавцу {user_id}."


def support_reply_failed(user_id: int, reason: str) -> str:
    return f"⚠️ Ответ продавцу {user_id} не доставлен ({escape(reason)}): возможно, он заблокировал бота."


# ---- the owner's daily digest ----------------------------------------------------------
def _day_line(d: DayNumbers) -> str:
    fails = ", ".join(f"{escape(c)} {n}" for c, n in sorted(d.failures_by_class.items())) or "0"
    return (f"✅ Видео: {d.delivered}  ❌ Ошибки: {fails}\n"
            f"⭐ Выручка: {d.revenue_stars}  👥 Новых: {d.new_users}\n"
            f"💳 Списано: {d.credits_charged} кр., возвращено: {d.credits_refunded} кр.")


def daily_digest(yesterday: DayNumbers, today: DayNumbers, now_hm: str, business: str = "") -> str:
    def day(d: DayNumbers) -> str:
        return f"{d.day[8:10]}.{d.day[5:7]}"

    return (f"📊 <b>Итоги за {day(yesterday)}</b>\n{_day_line(yesterday)}\n\n"
            f"<b>Сегодня, {day(today)}, к {now_hm} UTC</b>\n{_day_line(today)}\n\n"
            + (f"{business}\n\n" if business else "")
            + "На графике — последние 14 дней.")


def digest_business(week: PeriodStats, week_margin: Margin, balance: BalanceForecast | None,
                    *, with_promo: bool = True) -> str:
    """The owner's money for the last 7 days: promo redemptions, cost and margin per video, KIE forecast."""
    lines = (promo_line(week.promo_redemptions) if with_promo else "") + cost_lines(week, week_margin)
    if balance is not None:
        lines += f"\n{kie_forecast(balance)}"
    return f"<b>7 дней</b>{lines}" if lines else ""


ADMIN_STATS_CHART = "📈 Последние 14 дней"
