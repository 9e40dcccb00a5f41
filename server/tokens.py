"""Participant session tokens: the session's public id, signed with the app's secret."""

from __future__ import annotations

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
