"""Configuration: defaults, then environment variables, then overrides given to create_app."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """A setting the server cannot start without."""


# The variables that carry secrets: the key that signs tokens and cookies, and URLs that may
# hold passwords. server.wsgi drops them from a worker's environment once the app has read them.
SECRET_VARIABLES = ("ASSAY_SECRET_KEY", "DATABASE_URL", "REDIS_URL")


def _secret_key(instance: Path, production: bool) -> str:
    """ASSAY_SECRET_KEY (blank counts as unset), else, outside production, a key kept in the
    instance folder (one machine only). In production a missing key is an error: a key file
    per machine would make every other machine's tokens invalid."""
    if key := os.environ.get("ASSAY_SECRET_KEY", "").strip():
        return key
    if production:
        raise ConfigError("ASSAY_SECRET_KEY is not set: production (server.wsgi) needs the "
                          "same secret key on every machine; generate one with python -c "
                          "\"import secrets; print(secrets.token_hex(32))\"")
    path = instance / "secret_key"
    if not path.exists():
        # Several server workers start at once: each writes a candidate aside and links it
        # into place, which fails for all but the first, so every process reads the same key.
        instance.mkdir(parents=True, exist_ok=True)
        candidate = instance / f".secret_key.{os.getpid()}"
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return path.read_text().strip()


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole, non-negative number from the environment (``default`` when unset or blank);
    a bad value raises ValueError naming the variable."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {raw!r}")
    return value


def load_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    overrides = overrides or {}
    production = bool(overrides.get("PRODUCTION"))
    instance = Path(overrides.get("INSTANCE_DIR") or os.environ.get("ASSAY_INSTANCE", ".assay"))
    config: dict[str, Any] = {
        "INSTANCE_DIR": instance,
        "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{instance.resolve()}/assay.db"),
        "REDIS_URL": os.environ.get("REDIS_URL"),
        "NODE_MODULES": Path(os.environ.get("ASSAY_NODE_MODULES", ROOT / "node_modules")),
        "ENTRY_RATE_LIMIT": os.environ.get("ASSAY_ENTRY_RATE_LIMIT", "30 per minute"),
        "MAX_CONTENT_LENGTH": 64 * 1024,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # HTTPS-only cookies in production unless ASSAY_SECURE_COOKIES=0 (plain HTTP)
        "SESSION_COOKIE_SECURE": os.environ.get("ASSAY_SECURE_COOKIES",
                                                "1" if production else "0") == "1",
        "WTF_CSRF_TIME_LIMIT": None,
        # PostgreSQL cancels a statement of the app's that runs longer (0: never). It bounds
        # a request stuck on a lock or a stalled database, which would otherwise hold one of
        # a worker's few threads for good; the client gets a 503 and retries.
        "STATEMENT_TIMEOUT_MS": env_int(os.environ, "ASSAY_STATEMENT_TIMEOUT_MS", 30_000),
    }
    config.update(overrides)
    config.setdefault("SECRET_KEY", overrides.get("SECRET_KEY") or _secret_key(instance,
                                                                             production))
    return config
