"""What a dead letter keeps when the original does not fit the broker's size limit."""

from __future__ import annotations

import hashlib

from recstream.infra.dlq import DIGEST_HEADER, TRUNCATED_HEADER, fit


def test_a_letter_that_fits_is_sent_whole() -> None:
    assert fit(b"v" * 10, b"k", 100) == (b"v" * 10, b"k", [])


def test_a_letter_too_large_is_cut_and_says_its_original_size_and_digest() -> None:
    value = bytes(range(256)) * 100
    cut_value, key, headers = fit(value, b"user-1", 1000)
    assert key == b"user-1"
    assert cut_value == value[: 1000 - len(b"user-1")]
    assert dict(headers) == {
        TRUNCATED_HEADER: str(len(value)).encode(),
        DIGEST_HEADER: hashlib.sha256(value).hexdigest().encode(),
    }


def test_a_huge_key_is_cut_too() -> None:
    value, key, headers = fit(b"v", b"k" * 5000, 1000)
    assert key is not None and len(key) == 250
    assert value is not None and len(value) + len(key) <= 1000
    assert dict(headers)["x-recstream-key-truncated-from-bytes"] == b"5000"
