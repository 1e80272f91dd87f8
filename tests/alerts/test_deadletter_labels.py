"""Every dead-letter reason a person can meet has a zh-CN and an English label and a hint that
says what it means and what to do (issue 13: no English in what the Chinese page shows); the
decoder's own detail stays the fallback."""

from __future__ import annotations

import re

from alerts.labels import LANGS, Labels, messages
from ingest.consumer import STORE_REFUSED
from protocol.catalog import default_catalog
from protocol.messages import Reason

# Every code a dead letter is stored with: the decoder's, the store's refusal, a judging bug.
CODES = sorted({r.value for r in Reason} | {STORE_REFUSED, "internal_error"})
# Names of formats and protocols stay as they are written in Chinese text too.
KEPT = {"JSON", "MQTT", "NTP", "estates", "gw", "seq", "sent"}


def test_every_reason_has_a_label_and_a_hint_in_both_languages() -> None:
    m = messages()
    missing = [
        f"{lang}: deadletter.{part}.{code}"
        for lang in LANGS
        for code in CODES
        for part in ("reason", "hint")
        if not m[lang].get(f"deadletter.{part}.{code}")
    ]
    assert not missing, missing
    assert m["zh-CN"]["deadletter.raw"] and m["en"]["deadletter.raw"]


def test_the_chinese_labels_and_hints_have_no_english_words() -> None:
    labels = Labels(default_catalog())
    for code in CODES:
        for text in (labels.deadletter_reason(code), labels.deadletter_hint(code, "x")):
            english = set(re.findall(r"[A-Za-z]{2,}", text)) - KEPT
            assert not english, (code, text)
        assert labels.deadletter_hint(code, lang="en") != labels.deadletter_hint(code)


def test_a_reason_without_a_hint_falls_back_to_the_raw_detail() -> None:
    labels = Labels(default_catalog())
    assert labels.deadletter_hint("no_such_reason", "temp_c=900 over 80") == "temp_c=900 over 80"
    assert labels.deadletter_hint("out_of_range", "temp_c=900 over 80").startswith("读数超出")
