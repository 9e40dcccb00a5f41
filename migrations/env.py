"""Alembic environment: the URL comes from DATABASE_URL (else alembic.ini), the schema from
server.models."""

import os

from alembic import context

from server.db import make_engine, normalize_url
from server.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return normalize_url(
        config.attributes.get("url")
        or os.environ.get("DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # Batch migrations copy and drop tables; with foreign keys enforced, dropping a
            # parent table would delete or refuse its children (SQLite's documented recipe).
            # The pragma is ignored inside a transaction: set it on the raw connection first.
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
