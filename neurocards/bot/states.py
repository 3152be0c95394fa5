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


class OrderAlbum(StatesGroup):
    description = State()  # one photo of the album after another without a caption
    replace_or_add = State()  # a second album came while the first was still in the dialogue


class SupportRelay(StatesGroup):
    message = State()  # the next message goes to the operators
