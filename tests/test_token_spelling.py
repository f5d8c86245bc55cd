"""A stream token has exactly one spelling, and no spelling of it reaches the log."""

from __future__ import annotations

import base64
import uuid

import pytest

from runstream.api.redact import redact
from runstream.api.tokens import TokenError, TokenSigner

JOB = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner([b"k" * 32], ttl_s=3600)


def respell(token: str, part: int, spelling: str) -> str:
    parts = token.split(".")
    parts[part] = spelling
    return ".".join(parts)


def flip_unused_low_bit(b64: str) -> str:
    # A 32-byte signature is 43 base64 characters: the last one carries 4 data
    # bits and 2 unused ones, which a decoder ignores.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(b64[-1]) ^ 1
    return b64[:-1] + alphabet[last]


def test_the_issued_token_is_accepted(signer: TokenSigner) -> None:
    assert signer.verify(signer.issue(JOB, "acme").token, JOB) == "acme"


@pytest.mark.parametrize(
    "respelled",
    [
        pytest.param(lambda t: respell(t, 0, "0" + t.split(".")[0]), id="expiry-leading-zero"),
        pytest.param(lambda t: respell(t, 1, t.split(".")[1] + "="), id="tenant-padding"),
        pytest.param(lambda t: respell(t, 2, t.split(".")[2] + "="), id="signature-padding"),
        pytest.param(lambda t: respell(t, 2, flip_unused_low_bit(t.split(".")[2])), id="signature-unused-bit"),
    ],
)
def test_another_spelling_of_the_same_values_is_refused(signer: TokenSigner, respelled) -> None:
    token = signer.issue(JOB, "acme").token
    other = respelled(token)
    assert other != token
    # The respelling decodes to the very values that were signed...
    parts, original = other.split("."), token.split(".")
    assert int(parts[0]) == int(original[0])
    for index in (1, 2):
        pad = lambda text: text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4)  # noqa: E731
        assert base64.urlsafe_b64decode(pad(parts[index])) == base64.urlsafe_b64decode(pad(original[index]))
    # ...and is refused all the same.
    with pytest.raises(TokenError, match="invalid"):
        signer.verify(other, JOB)


def test_after_a_rotation_the_new_key_signs_and_the_old_one_still_verifies(signer: TokenSigner) -> None:
    old = signer.issue(JOB, "acme").token
    rotated = TokenSigner([b"n" * 32, b"k" * 32], ttl_s=3600)
    new = rotated.issue(JOB, "acme").token
    assert new != old
    assert rotated.verify(old, JOB) == rotated.verify(new, JOB) == "acme"
    # A process that has only the old key refuses the new key's tokens.
    with pytest.raises(TokenError, match="invalid"):
        signer.verify(new, JOB)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET /api/jobs/x/events?token=abc.def HTTP/1.1", "GET /api/jobs/x/events?token=REDACTED HTTP/1.1"),
        ("GET /api/jobs/x/events?%74oken=abc.def HTTP/1.1", "GET /api/jobs/x/events?%74oken=REDACTED HTTP/1.1"),
        (
            "POST /api/jobs/x/cancel?a=1&t%6Fk%65n=abc HTTP/1.1",
            "POST /api/jobs/x/cancel?a=1&t%6Fk%65n=REDACTED HTTP/1.1",
        ),
        ("GET /api/jobs?notoken=abc&status=running HTTP/1.1", "GET /api/jobs?notoken=abc&status=running HTTP/1.1"),
    ],
)
def test_tokens_are_redacted_by_their_decoded_name(line: str, expected: str) -> None:
    assert redact(line) == expected
