"""Running the Alembic migrations in migrations/ from code (CLI, tests, demo)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from server.config import ROOT
from server.db import normalize_url


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["url"] = normalize_url(url)
    return config


def upgrade(url: str) -> None:
    command.upgrade(alembic_config(url), "head")
