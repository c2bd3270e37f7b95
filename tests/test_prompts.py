"""The prompt catalogue: text-to-speech by default, a recording where one exists."""
from __future__ import annotations

import re

import pytest

from ivr import create_app
from ivr.config import ROOT
from ivr.sim.phone import ClientTransport, Phone
from ivr.voice.prompts import Catalogue, CatalogueError, chinese_date
from models.storage.db import init_db
from models.vocabulary import VOCABULARIES
from tests.support import TOKEN


def test_a_recorded_prompt_is_played_instead_of_spoken(tmp_path, monkeypatch, clock):
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "common.welcome.wav").write_bytes(b"RIFF....WAVE")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("IVR_PIN_KEY", "k")
    app = create_app({"database_url": f"sqlite:///{tmp_path / 'db.sqlite'}", "voice": {"audio_dir": str(audio)}})
    init_db(app.extensions["engine"])
    phone = Phone(ClientTransport(app.test_client()), TOKEN, catalogue=app.extensions["catalogue"]).dial()
    assert "<Play>/prompts/audio/common.welcome.wav</Play>" in phone.twiml
    assert phone.prompts == ["common.welcome", "main.menu", "keys.agent"]
    assert app.test_client().get("/prompts/audio/common.welcome.wav").data == b"RIFF....WAVE"


def test_a_prompt_with_placeholders_is_never_replaced_by_a_recording():
    c = Catalogue({"a": "尾号{n:digits}", "b": "你好"}, audio_ids=["a", "b"])
    assert c.audio == {"b"}


def test_an_unknown_placeholder_format_is_refused_when_loaded():
    with pytest.raises(CatalogueError, match="unknown format 'money'"):
        Catalogue({"x": "{amount:money}"})


def test_spoken_text_is_traced_back_to_its_prompt_id():
    c = Catalogue({"card": "尾号{n:digits}的卡", "bye": "再见"})
    assert c.identify("尾号1234的卡") == "card"
    assert c.identify("再见") == "bye"
    assert c.identify("别的话") is None


@pytest.mark.parametrize("value, spoken", [("2026-12-07", "2026年12月7日"), ("2027-01-01T00:00:00", "2027年1月1日")])
def test_dates_are_spoken_the_chinese_way(value, spoken):
    assert chinese_date(value) == spoken


def test_every_card_status_has_a_spoken_name():
    from ivr.config import ROOT
    from models.cards import STATUSES

    catalogue = Catalogue.load(ROOT / "voice_prompts" / "zh-CN.yaml")
    assert catalogue.missing(f"status.name.{s}" for s in STATUSES) == set()


def test_a_status_without_a_name_is_an_error_not_silence():
    c = Catalogue({"card": "状态{s:status}", "status.name.normal": "正常"})
    assert c.text("card", {"s": "normal"}) == "状态正常"
    with pytest.raises(KeyError):
        c.text("card", {"s": "mystery"})


@pytest.mark.parametrize("kind, code", [(kind, code) for kind, words in VOCABULARIES.items() for code in words])
def test_every_code_of_the_vocabulary_has_a_mandarin_label(kind, code):
    catalogue = Catalogue.load(ROOT / "voice_prompts" / "zh-CN.yaml")
    assert catalogue.label(kind, code) != code
    assert re.search(r"[\u4e00-\u9fff]", catalogue.label(kind, code))


def console_words() -> list[tuple[str, str]]:
    """The console's own kinds of word beyond the vocabulary: how a search was read, a history row's
    reason, a holder's change, a masked number, a recorded webhook, the agent leg's result."""
    from models.cards import HOLDER_CHANGES, REASON_KEYS
    from models.reports import LEG_OUTCOMES
    from models.search import KINDS

    return ([("search", k) for k in KINDS] + [("note", k) for k in REASON_KEYS.values()]
            + [("change", k) for k in HOLDER_CHANGES] + [("masked", k) for k in ("id_number", "pin", "phone", "digits")]
            + [("webhook", k) for k in ("incoming", "step", "dial", "whisper", "status")]
            + [("leg", k) for k in LEG_OUTCOMES])


@pytest.mark.parametrize("kind, code", console_words())
def test_every_word_the_console_shows_has_a_mandarin_label(kind, code):
    catalogue = Catalogue.load(ROOT / "voice_prompts" / "zh-CN.yaml")
    assert re.search(r"[\u4e00-\u9fff]", catalogue.label(kind, code))


def test_the_masked_numbers_are_the_ones_redaction_leaves():
    from ivr.callflow.redact import kind_of_run

    assert {kind_of_run(n, x) for n in range(4, 19) for x in (False, True)} == {"id_number", "pin", "phone", "digits"}


def test_a_code_without_a_label_shows_as_itself_and_none_as_a_dash():
    catalogue = Catalogue({"label.status.normal": "正常"})
    assert (catalogue.label("status", "normal"), catalogue.label("status", "lost_in_space"),
            catalogue.label("status", None)) == ("正常", "lost_in_space", "—")


def test_labels_are_never_taken_for_a_prompt_that_was_heard():
    catalogue = Catalogue({"label.status.normal": "正常", "status.name.normal": "正常"})
    assert catalogue.identify("正常") == "status.name.normal"
