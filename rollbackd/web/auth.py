"""Who may post to the Alertmanager receiver. Every comparison is constant-time.

- bearer token: ``Authorization: Bearer <token>`` (Alertmanager's ``http_config.authorization``);
- basic auth: ``Authorization: Basic ...`` (``http_config.basic_auth``);
- HMAC for other senders: ``X-Rollbackd-Timestamp`` (Unix seconds), ``X-Rollbackd-Nonce``
  and ``X-Rollbackd-Signature: sha256=<hex>`` of HMAC-SHA256 over
  ``timestamp + "\\n" + nonce + "\\n" + body``. A timestamp outside ``max_skew`` or a nonce seen
  before is refused, so a captured request cannot be replayed. A nonce is remembered only
  once its request was accepted (``remember``): a 503 from a standby does not use it up, so
  the sender's retry of the same signed request still counts.

Every check is total: any header, however malformed, gives True or False. Secrets in files
are read at each check, so a rotated token needs no restart; a file that has gone or is
empty raises ``SecretUnavailable``, and the caller refuses the request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping

from rollbackd.settings import WebhookAuth, secret_from

TIMESTAMP = "x-rollbackd-timestamp"
NONCE = "x-rollbackd-nonce"
SIGNATURE = "x-rollbackd-signature"
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")  # ASCII digits only: '²'.isdigit() is True


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
        """Whether the request carries valid credentials (raises ``SecretUnavailable``)."""
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

    def remember(self, headers: Mapping[str, str], now: float) -> None:
        """Record an accepted request's nonce, so that a replay of it is refused."""
        if self._auth.hmac is None:
            return
        skew = self._auth.hmac.max_skew.total_seconds()
        while self._nonces and next(iter(self._nonces.values())) < now - 2 * skew:
            self._nonces.popitem(last=False)
        self._nonces[headers.get(NONCE, "")] = now
        if len(self._nonces) > self.NONCES:
            self._nonces.popitem(last=False)

    def _basic(self, header: str) -> bool:
        basic = self._auth.basic_auth
        assert basic is not None
        expected = secret_from(basic.password, basic.password_file)
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or expected is None:
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):  # binascii.Error and non-ASCII input
            return False
        user, _, password = decoded.partition(":")
        return _same(user, basic.username) & _same(password, expected.get_secret_value())

    def _hmac(self, headers: Mapping[str, str], body: bytes, now: float) -> bool:
        settings = self._auth.hmac
        assert settings is not None
        secret = secret_from(settings.secret, settings.secret_file)
        timestamp, nonce = headers.get(TIMESTAMP, ""), headers.get(NONCE, "")
        if secret is None or not _TIMESTAMP_RE.fullmatch(timestamp):
            return False
        if not 8 <= len(nonce) <= 128 or not nonce.isascii():
            return False
        if abs(now - int(timestamp)) > settings.max_skew.total_seconds():
            return False
        expected = sign(secret.get_secret_value(), timestamp, nonce, body)
        if not _same(headers.get(SIGNATURE, ""), expected):
            return False
        return nonce not in self._nonces  # a replay of a request already accepted
