"""Mutation testing of the catalog's SQL functions (``make mutate-sql``).

Each mutant changes one comparison or condition on one line of one function in the migrations
(``<`` for ``<=``, ``OR`` for ``AND``, ``IS NULL`` for ``IS NOT NULL``, ``EXISTS`` for
``NOT EXISTS``, ...). For each, the migrations as mutated are applied to a new database on one
PostgreSQL server, and the catalog tests run against it (``tests/conftest.py`` takes the server and
the template from the environment), the tests that name the function first, stopping at the first
failure. A mutant the migrations refuse (a syntax error) is stillborn and not counted.

    .venv/bin/python scripts/mutate_sql.py                       # every function listed below
    .venv/bin/python scripts/mutate_sql.py commit_compaction     # some of them
    .venv/bin/python scripts/mutate_sql.py --list                # the mutants, without running them

Prints one line per mutant and a table per function; exits 1 if any mutant survived. Mutates the
migrations of the last commit and runs that commit's tests (``--worktree``: the files as they are
now). Each mutant runs only the catalog tests that execute its function (recorded first, from
PostgreSQL's function statistics; ``scripts/_sql_calls_plugin.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where the tests run from: the work tree, or (the default) a copy of the last commit's code and
# tests, so that others' unfinished tests (for migrations not committed yet) stay out.
TESTS_ROOT = ROOT
PLUGIN = "_sql_calls_plugin"  # scripts/_sql_calls_plugin.py: which tests execute which function
PYTEST = (sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", PLUGIN, "-q", "-x", "--timeout=120")
MIGRATIONS = "infra/supabase/migrations"
# The functions whose conditions keep the catalog's promises (issue 20), and the helpers they use.
FUNCTIONS = (
    "commit_compaction",
    "register_fragment",
    "claim_pending_datasets",
    "release_claims",
    "acquire_lease",
    "release_lease",
    "record_run_status",
    "record_failure",
    "sweep_expired_leases",
    "list_garbage",
    "mark_objects_deleted",
    "find_orphans",
    "find_fragment",
    "_retry_due_at",
    "_count_run_outcome",
    # 0008: quarantine
    "quarantine_file",
    "_lock_file",
    "readmit_quarantined",
    "delete_quarantined",
    "list_quarantined",
    "count_quarantined",
    "list_live_files",
    "_refresh_dataset_counters",
    # 0009: admission (the global compaction budget)
    "admit_run",
    "_admission_in_flight",
    "release_admission",
    # 0010: the orphan sweeps' leases and places
    "_take_orphan_sweep",
    "_hold_orphan_sweep",
    "begin_orphan_sweep",
    "next_orphan_sweep_datasets",
    "record_orphan_sweep_progress",
    "begin_inventory_sweep",
    "record_inventory_progress",
    "finish_inventory_sweep",
    "release_orphan_sweep",
    # 0003/0012: what dlq-redrive may send again (never a rejected upload)
    "list_redrivable_failures",
)
# (pattern, replacement, name): applied to one occurrence at a time.
OPERATORS: tuple[tuple[str, str, str], ...] = (
    (r"(?<![<>!:=])<=(?![>=])", ">", "<= → >"),
    (r"(?<![<>!:=])<=(?![>=])", "<", "<= → <"),
    (r"(?<![<>!:=])>=", "<", ">= → <"),
    (r"(?<![<>!:=])>=", ">", ">= → >"),
    (r"(?<![<>!:=-])<(?![=>])", "<=", "< → <="),
    (r"(?<![<>!:=-])<(?![=>])", ">=", "< → >="),
    (r"(?<![<>!:=-])>(?![=>])", ">=", "> → >="),
    (r"(?<![<>!:=-])>(?![=>])", "<=", "> → <="),
    (r"<>", "=", "<> → ="),
    (r"(?<![<>!:=])=(?![>=])", "<>", "= → <>"),
    (r"\bIS NOT NULL\b", "IS NULL", "IS NOT NULL → IS NULL"),
    (r"\bIS NULL\b", "IS NOT NULL", "IS NULL → IS NOT NULL"),
    (r"\bIS DISTINCT FROM\b", "IS NOT DISTINCT FROM", "IS DISTINCT FROM → IS NOT DISTINCT FROM"),
    (r"\bNOT EXISTS\b", "EXISTS", "NOT EXISTS → EXISTS"),
    (r"(?<!NOT )\bEXISTS\b", "NOT EXISTS", "EXISTS → NOT EXISTS"),
    (r"\bAND\b", "OR", "AND → OR"),
    (r"\bOR\b(?! REPLACE)", "AND", "OR → AND"),
    (r"\bIF NOT FOUND\b", "IF FOUND", "IF NOT FOUND → IF FOUND"),
    (r"\bIF FOUND\b", "IF NOT FOUND", "IF FOUND → IF NOT FOUND"),
    (r"\bgreatest\(", "least(", "greatest → least"),
    (r"\bleast\(", "greatest(", "least → greatest"),
    (r"\bSKIP LOCKED\b", "", "SKIP LOCKED → (waits)"),
    (r"\bFOR UPDATE\b", "", "FOR UPDATE → (no lock)"),
)


@dataclass(frozen=True)
class Mutant:
    number: int
    file: str
    line: int  # 1-based, in the file
    function: str
    operator: str
    before: str
    after: str


def head_snapshot() -> Path:
    """The last commit's package, tests and pytest configuration, in build/mutate-sql/_head."""
    out = ROOT / "build" / "mutate-sql" / "_head"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD", "functions/fusou_compaction", "tests", "events",
         "pyproject.toml"],
        check=True,
        capture_output=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def read_migrations(worktree: bool) -> dict[str, str]:
    if worktree:
        return {p.name: p.read_text() for p in sorted((ROOT / MIGRATIONS).glob("*.sql"))}
    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", "HEAD", f"{MIGRATIONS}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {
        Path(n).name: subprocess.run(
            ["git", "-C", str(ROOT), "show", f"HEAD:{n}"], check=True, capture_output=True, text=True
        ).stdout
        for n in names
        if n.endswith(".sql")
    }


FUNCTION_START = re.compile(r"^CREATE (?:OR REPLACE )?FUNCTION (\w+)\(", re.IGNORECASE)


def function_lines(text: str) -> list[tuple[int, str]]:
    """(line index, function name) for every line inside a function's body."""
    out: list[tuple[int, str]] = []
    current: str | None = None
    dollars = 0
    for i, line in enumerate(text.splitlines()):
        m = FUNCTION_START.match(line)
        if m:
            current, dollars = m.group(1), 0
        if current is None:
            continue
        out.append((i, current))
        dollars += line.count("$$")
        if dollars >= 2 and line.rstrip().endswith(";"):
            current = None
    return out


def generate(migrations: dict[str, str], functions: tuple[str, ...]) -> list[Mutant]:
    # Only a function's last definition counts: a later migration's CREATE OR REPLACE wins.
    last = {f: name for name, text in migrations.items() for _, f in function_lines(text)}
    mutants: list[Mutant] = []
    for name, text in migrations.items():
        lines = text.splitlines()
        for i, function in function_lines(text):
            line = lines[i]
            code = line.split("--", 1)[0]
            if function not in functions or last[function] != name or not code.strip() or FUNCTION_START.match(line):
                continue
            if re.search(r"\bRAISE\b|\bMESSAGE\b|format\(|^\s*(RETURNS|LANGUAGE)\b", code):
                continue  # messages and signatures: not conditions
            for pattern, replacement, operator in OPERATORS:
                for m in re.finditer(pattern, code):
                    after = code[: m.start()] + replacement + code[m.end() :] + line[len(code) :]
                    mutants.append(
                        Mutant(len(mutants) + 1, name, i + 1, function, operator, line.strip(), after.strip())
                    )
    return mutants


def apply(migrations: dict[str, str], mutant: Mutant, into: Path) -> None:
    for name, text in migrations.items():
        lines = text.splitlines(keepends=True)
        if name == mutant.file:
            original = lines[mutant.line - 1]
            indent = original[: len(original) - len(original.lstrip())]
            lines[mutant.line - 1] = indent + mutant.after + "\n"
        (into / name).write_text("".join(lines))


CATALOG_TESTS = "tests/catalog"


def catalog_test_files() -> list[str]:
    return sorted(str(p.relative_to(TESTS_ROOT)) for p in (TESTS_ROOT / CATALOG_TESTS).glob("test_*.py"))


def record_calls(env: dict[str, str], template: str) -> dict[str, list[str] | None]:
    """Run the catalog tests once, unmutated: which SQL functions each test executes (all must pass)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "calls.jsonl"
        done = subprocess.run(
            [*PYTEST, *catalog_test_files()],
            cwd=TESTS_ROOT,
            env={**env, "FUSOU_TEST_CATALOG_TEMPLATE": template, "FUSOU_SQL_CALLS_OUT": str(out)},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"the catalog tests fail without any mutant:\n{done.stdout[-3000:]}")
        return {r["test"]: r["functions"] for r in map(json.loads, out.read_text().splitlines())}


def tests_for(function: str, calls: dict[str, list[str] | None]) -> list[str]:
    """The tests that execute the function (or whose calls are unknown): those in files naming it first."""
    naming = {t for t in catalog_test_files() if function.lstrip("_") in (TESTS_ROOT / t).read_text()}
    chosen = [t for t, functions in calls.items() if functions is None or function in functions]
    return sorted(chosen, key=lambda t: t.split("::")[0] not in naming)


def run_one(mutant: Mutant, migrations: dict[str, str], pg: object, env: dict[str, str], tests: list[str]) -> str:
    import psycopg

    from fusou_compaction.catalog.migrate import migrate

    database = f"sqlmut_{mutant.number}"
    url = pg.url_for(database)  # type: ignore[attr-defined]
    with psycopg.connect(pg.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {database}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            apply(migrations, mutant, Path(tmp))
            try:
                migrate(url, Path(tmp))
            except psycopg.Error:
                return "stillborn"
        if not tests:
            return "no tests"
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as select:
            select.write("\n".join(tests) + "\n")
            select.flush()
            done = subprocess.run(
                [*PYTEST, *catalog_test_files()],
                cwd=TESTS_ROOT,
                env={**env, "FUSOU_TEST_CATALOG_TEMPLATE": database, "FUSOU_SQL_SELECT": select.name},
                capture_output=True,
                text=True,
                check=False,
            )
        return "survived" if done.returncode == 0 else "killed" if done.returncode == 1 else f"error {done.returncode}"
    finally:
        with psycopg.connect(pg.url, autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("functions", nargs="*", help="some of the functions (default: all listed in the script)")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--worktree", action="store_true", help="mutate the work tree's migrations")
    parser.add_argument("--only", help="run only these mutants (numbers as --list prints them: 2,4,17)")
    parser.add_argument("--tests", nargs="+", help="run these tests (files or node ids) for every mutant instead")
    args = parser.parse_args()
    functions = tuple(args.functions) or FUNCTIONS
    migrations = read_migrations(args.worktree)
    mutants = generate(migrations, functions)
    if args.only:
        wanted = {int(n) for n in args.only.split(",")}
        mutants = [m for m in mutants if m.number in wanted]
    if args.list:
        for m in mutants:
            print(f"{m.number:4} {m.file}:{m.line} {m.function} [{m.operator}]  {m.after}")
        return 0

    global TESTS_ROOT  # noqa: PLW0603  (set once, before any test runs)
    if not args.worktree:
        TESTS_ROOT = head_snapshot()
    sys.path.insert(0, str(ROOT / "functions"))
    import psycopg

    from fusou_compaction.local.postgres import PostgresServer

    results: dict[int, str] = {}
    with PostgresServer() as pg:
        # Roles are the cluster's, not a database's: created once here, before mutants race for them.
        from fusou_compaction.catalog.migrate import migrate

        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE sqlmut_base")
            # Count every function's calls, so that a mutant runs only the tests that execute it.
            conn.execute("ALTER SYSTEM SET track_functions = 'all'")
            conn.execute("SELECT pg_reload_conf()")
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in migrations.items():
                (Path(tmp) / name).write_text(text)
            migrate(pg.url_for("sqlmut_base"), Path(tmp))
        env = {
            **os.environ,
            "FUSOU_TEST_PG_PORT": str(pg.port),
            # The plugin, and the package the tests import (the snapshot's, ahead of the work tree's)
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT / "scripts"), str(TESTS_ROOT / "functions"), os.environ.get("PYTHONPATH")])
            ),
        }
        if args.tests:
            calls: dict[str, list[str] | None] = dict.fromkeys(args.tests)
        else:
            calls = record_calls(env, "sqlmut_base")
            print(f"{len(calls)} catalog tests; per function, the tests that execute it:")
            for function in functions:
                print(f"  {function:28} {len(tests_for(function, calls))}")
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {
                m.number: pool.submit(run_one, m, migrations, pg, env, tests_for(m.function, calls)) for m in mutants
            }
            for m in mutants:
                results[m.number] = futures[m.number].result()
                print(f"{results[m.number]:>9}  #{m.number} {m.file}:{m.line} {m.function} [{m.operator}]  {m.after}")
                sys.stdout.flush()

    print("\nfunction                  killed  survived  stillborn  no tests")
    for function in dict.fromkeys(m.function for m in mutants):
        counts = Counter(results[m.number] for m in mutants if m.function == function)
        killed, survived, stillborn, untested = (counts[k] for k in ("killed", "survived", "stillborn", "no tests"))
        print(f"{function:25} {killed:6} {survived:9} {stillborn:10} {untested:9}")
    survivors = [m for m in mutants if results[m.number] != "killed" and results[m.number] != "stillborn"]
    print(f"\n{len(mutants)} mutants: {len(mutants) - len(survivors)} killed or stillborn, {len(survivors)} left")
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main())
