"""A dead letter fits the DLQ whatever the source topic accepted, and says what was cut."""

from __future__ import annotations

import pytest

from feedstore.contract.rules import DLQ_MAX_KEY_BYTES, DLQ_MAX_VALUE_BYTES
from ingestion.sinks.base import DeadLetter

pytestmark = pytest.mark.pure


def test_a_large_message_is_cut_and_its_size_kept():
    value, key = b"x" * (16 * 1024 * 1024 - 100), b"k" * 5000
    letter = DeadLetter.of(value, key, "too_large", "user-activity", 3, 41)
    assert len(letter.value) == DLQ_MAX_VALUE_BYTES and letter.value == value[:DLQ_MAX_VALUE_BYTES]
    assert len(letter.key) == DLQ_MAX_KEY_BYTES
    headers = dict(letter.headers())
    assert headers["truncated"] == b"true"
    assert headers["original_size"] == str(len(value)).encode()
    assert headers["original_key_size"] == b"5000"
    assert (headers["source_topic"], headers["source_partition"], headers["source_offset"]) == (
        b"user-activity", b"3", b"41")


def test_a_small_message_is_kept_whole_and_names_its_error():
    letter = DeadLetter.of(b"{}", None, "internal_error", "t", 0, 7, error="RecursionError")
    assert letter.value == b"{}" and letter.key is None and not letter.truncated
    headers = dict(letter.headers())
    assert headers["error"] == b"RecursionError" and "truncated" not in headers
