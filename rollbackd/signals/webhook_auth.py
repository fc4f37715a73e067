"""Who may post to the Alertmanager receiver. Pure; every comparison is constant-time.

- bearer token: ``Authorization: Bearer <token>`` (Alertmanager's ``http_config.authorization``);
- basic auth: ``Authorization: Basic ...`` (``http_config.basic_auth``);
- HMAC for other senders: ``X-Rollbackd-Timestamp`` (Unix seconds), ``X-Rollbackd-Nonce``
  and ``X-Rollbackd-Signature: sha256=<hex>`` of HMAC-SHA256 over
  ``timestamp + "\\n" + nonce + "\\n" + body``. A timestamp outside ``max_skew`` or a nonce seen
  before is refused, so a captured request cannot be replayed.

Secrets in files are read at each check, so a rotated token needs no restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping

from rollbackd.settings import WebhookAuth, secret_from

TIMESTAMP = "x-rollbackd-timestamp"
NONCE = "x-rollbackd-nonce"
SIGNATURE = "x-rollbackd-signature"


def sign(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The signature header value a sender computes."""
    message = f"{timestamp}\n{nonce}\n".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class WebhookAuthenticator:
    """Checks a request against the configured method."""

    NONCES = 100_000

    def __init__(self, auth: WebhookAuth) -> None:
        self._auth = auth
        self._nonces: OrderedDict[str, float] = OrderedDict()

    @property
    def needs_body(self) -> bool:
        """HMAC signs the body, so it is checked after reading; the others before."""
        return self._auth.hmac is not None

    def check(self, headers: Mapping[str, str], body: bytes, now: float) -> bool:
        auth = self._auth
        header = headers.get("authorization", "")
        token = secret_from(auth.bearer_token, auth.bearer_token_file)
        if token is not None:
            scheme, _, given = header.partition(" ")
            return scheme.lower() == "bearer" and _same(given.strip(), token.get_secret_value())
        if auth.basic_auth is not None:
            return self._basic(header)
        if auth.hmac is not None:
            return self._hmac(headers, body, now)
        return False

    def _basic(self, header: str) -> bool:
        basic = self._auth.basic_auth
        assert basic is not None
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = secret_from(basic.password, basic.password_file)
        wanted = expected.get_secret_value() if expected else ""
        return _same(user, basic.username) & _same(password, wanted)

    def _hmac(self, headers: Mapping[str, str], body: bytes, now: float) -> bool:
        settings = self._auth.hmac
        assert settings is not None
        secret = secret_from(settings.secret, settings.secret_file)
        timestamp, nonce = headers.get(TIMESTAMP, ""), headers.get(NONCE, "")
        if secret is None or not timestamp.isdigit() or not 8 <= len(nonce) <= 128:
            return False
        skew = settings.max_skew.total_seconds()
        if abs(now - int(timestamp)) > skew:
            return False
        expected = sign(secret.get_secret_value(), timestamp, nonce, body)
        if not _same(headers.get(SIGNATURE, ""), expected):
            return False
        while self._nonces and next(iter(self._nonces.values())) < now - 2 * skew:
            self._nonces.popitem(last=False)
        if nonce in self._nonces:
            return False  # a replay of a request already accepted
        self._nonces[nonce] = now
        if len(self._nonces) > self.NONCES:
            self._nonces.popitem(last=False)
        return True
