"""Databases of the tests' own on the machine's PostgreSQL (COINFLOW_IT_POSTGRES_URL; default the local one, user
postgres, trust auth), each dropped with its connections at the end."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql

POSTGRES_URL = os.environ.get("COINFLOW_IT_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def admin() -> psycopg.Connection:
    """A connection to the server's maintenance database, for creating and dropping databases."""
    return psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True, connect_timeout=5)


def database_exists(name: str) -> bool:
    with admin() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def drop_database(name: str) -> None:
    with admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def temporary_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty database named `prefix` plus a random suffix, dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{POSTGRES_URL}/{name}"
    finally:
        drop_database(name)
