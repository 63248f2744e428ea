"""Deterministic interleavings for catalog tests: slow one kind of row write down, so a second
call reliably arrives while the first sits between reading a row and writing it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg


def slow_down(sql: psycopg.Connection, table: str, event: str, seconds: float = 0.5) -> None:
    """Every row `event` (INSERT/UPDATE/DELETE) on `table` sleeps first (a BEFORE ROW trigger: the
    row is locked while it sleeps, as the write would lock it)."""
    row = "OLD" if event == "DELETE" else "NEW"  # what a BEFORE trigger returns to let the write go on
    sql.execute(
        f"CREATE FUNCTION _slow_{table}() RETURNS trigger LANGUAGE plpgsql AS"
        f" $$ BEGIN PERFORM pg_sleep({seconds}); RETURN {row}; END $$"
    )
    sql.execute(f"CREATE TRIGGER slow_{table} BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION _slow_{table}()")


def one_after_another(database_url: str, first: Callable[[psycopg.Connection], Any],
                      second: Callable[[psycopg.Connection], Any], lag: float = 0.2) -> tuple[Any, Any]:  # fmt: skip
    """Run `first`, then `second` `lag` seconds later while the first is still busy, each on its
    own autocommit connection; returns what each returned, or the SQLSTATE it raised."""
    results: list[Any] = [None, None]

    def run(i: int, call: Callable[[psycopg.Connection], Any]) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            try:
                results[i] = call(conn)
            except psycopg.Error as exc:
                results[i] = exc.sqlstate

    threads = [threading.Thread(target=run, args=(0, first)), threading.Thread(target=run, args=(1, second))]
    threads[0].start()
    time.sleep(lag)
    threads[1].start()
    for t in threads:
        t.join(30)
    return results[0], results[1]
