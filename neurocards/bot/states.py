from aiogram.fsm.state import State, StatesGroup


class CreateVideo(StatesGroup):
    photo = State()
    description = State()
    template = State()
    format = State()
    wishes = State()
    quantity = State()
    confirm = State()


class PromoInput(StatesGroup):
    code = State()


class BroadcastDraft(StatesGroup):
    message = State()
    button = State()
    confirm = State()
