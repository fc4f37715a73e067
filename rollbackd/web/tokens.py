"""Approval links: tokens signed with ``server.approval_secret_file``.

A token names one incident, one workload and the digest of the template it was asked
about, and when it expires: ``base64url(payload) "." base64url(HMAC-SHA256(key, payload))``.
A link in a chat message is a bearer token, so it only ever opens a page; the page's form
is what acts. A token that does not verify (forged, truncated, signed with another key) is
unknown: the caller answers 404 and says no more. Pure: the key is passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from rollbackd.model import Target

MAX_TOKEN = 512
"""Longer is not a token of ours; refused before any decoding."""


@dataclass(frozen=True)
class Question:
    """What an approval link asks about."""

    incident: str
    target: Target
    template: str  # the digest of the workload's pod template when it was asked
    expires: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, b"rollbackd-approval\x00" + payload, hashlib.sha256).digest()


def sign(key: bytes, question: Question) -> str:
    """The token of ``question``."""
    payload = json.dumps(
        [
            question.incident,
            question.target.namespace,
            question.target.deployment,
            question.template,
            int(question.expires.timestamp()),
        ],
        separators=(",", ":"),
    ).encode()
    return f"{_b64(payload)}.{_b64(_mac(key, payload))}"


def read(key: bytes, token: str) -> Question | None:
    """The question ``token`` signs, or None when it is not a token signed with ``key``."""
    if not key or len(token) > MAX_TOKEN or token.count(".") != 1:
        return None
    encoded, signature = token.split(".")
    try:
        payload, given = _unb64(encoded), _unb64(signature)
    except (binascii.Error, ValueError):
        return None
    if _b64(payload) != encoded or _b64(given) != signature:  # one spelling per token
        return None
    if not hmac.compare_digest(given, _mac(key, payload)):
        return None
    try:
        incident, namespace, name, template, expires = json.loads(payload)
        return Question(
            str(incident),
            Target(str(namespace), str(name)),
            str(template),
            datetime.fromtimestamp(int(expires), UTC),
        )
    except (ValueError, TypeError, OverflowError):  # signed by us, so never expected
        return None
