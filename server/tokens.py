"""Participant session tokens: the session's public id, signed with the app's secret."""

from __future__ import annotations

import hashlib
import hmac

from itsdangerous import BadSignature, URLSafeSerializer

HEADER = "X-Assay-Session"
_SALT = "assay-participant-session"


def sign(secret: str, public_id: str) -> str:
    return URLSafeSerializer(secret, salt=_SALT).dumps(public_id)


def verify(secret: str, token: str) -> str | None:
    try:
        value = URLSafeSerializer(secret, salt=_SALT).loads(token)
    except BadSignature:
        return None
    return value if isinstance(value, str) else None


def participant_key(secret: str, platform_pid: str) -> str:
    """A pseudonym for a platform ID, stable across studies while the secret is unchanged."""
    digest = hmac.new(secret.encode(), b"assay-pid:" + platform_pid.encode(), hashlib.sha256)
    return "K-" + digest.hexdigest()[:24]
