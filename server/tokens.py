"""Participant session tokens: the session's public id, signed with the app's secret."""

from __future__ import annotations

import hashlib
import hmac

from itsdangerous import BadSignature, URLSafeSerializer

HEADER = "X-Assay-Session"
_SALT = "assay-participant-session"
_DIGEST_BYTES = 32  # an image's SHA-256


_WITHDRAWAL_SALT = "assay-withdrawal-link"


def sign(secret: str, public_id: str, salt: str = _SALT) -> str:
    return URLSafeSerializer(secret, salt=salt).dumps(public_id)


def verify(secret: str, token: str, salt: str = _SALT) -> str | None:
    try:
        value = URLSafeSerializer(secret, salt=salt).loads(token)
    except BadSignature:
        return None
    return value if isinstance(value, str) else None


def withdrawal_token(secret: str, public_id: str) -> str:
    """The withdrawal link's token: participants keep it after the study, so it can withdraw
    its session and do nothing else (the session token answers for the whole session)."""
    return sign(secret, public_id, _WITHDRAWAL_SALT)


def withdrawal_owner(secret: str, token: str) -> str | None:
    """The public id a withdrawal token names; None for a forged or session token."""
    return verify(secret, token, _WITHDRAWAL_SALT)


def participant_key(secret: str, platform_pid: str) -> str:
    """A pseudonym for a platform ID, stable across studies while the secret is unchanged."""
    digest = hmac.new(secret.encode(), b"assay-pid:" + platform_pid.encode(), hashlib.sha256)
    return "K-" + digest.hexdigest()[:24]


def _mac(secret: str, *parts: str) -> bytes:
    message = "\x1f".join(parts).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def image_token(secret: str, public_id: str, trial_index: int, slot: int, digest: str) -> str:
    """An opaque name for one image in one place of one trial of one session.

    The same image shown twice in a trial (a catch trial's answer among its references)
    gets two unrelated names, so that comparing names tells nothing; a reload gets the same
    names (deterministic), so that the browser's cache still works. The name is
    nonce.masked: the digest XOR a pad derived from the secret and the nonce."""
    nonce = _mac(secret, "img-nonce", public_id, str(trial_index), str(slot))[:12]
    pad = _mac(secret, "img-pad", nonce.hex())
    masked = bytes(a ^ b for a, b in zip(bytes.fromhex(digest), pad, strict=True))
    return f"{nonce.hex()}.{masked.hex()}"


def image_digest_of(secret: str, token: str) -> str | None:
    """The digest an :func:`image_token` names; None for anything malformed."""
    nonce, _, masked = token.partition(".")
    try:
        masked_bytes, nonce_bytes = bytes.fromhex(masked), bytes.fromhex(nonce)
    except ValueError:
        return None
    if len(masked_bytes) != _DIGEST_BYTES or len(nonce_bytes) != 12:
        return None
    pad = _mac(secret, "img-pad", nonce)
    return bytes(a ^ b for a, b in zip(masked_bytes, pad, strict=True)).hex()
