"""Mutation testing (``make mutate``): mutmut over each module, against that module's fast tests.

mutmut 3 imports the mutated copy from ``mutants/``, ``mutants/src`` or ``mutants/source``;
our package root is ``functions/``. So each module runs in its own work folder,
``build/mutate/<module>/``, holding ``src/fusou_compaction`` (a copy of the package), ``tests/`` and
``events/``, and a ``pyproject.toml`` written here for that module alone. One PostgreSQL and one
moto server are started here and handed to every test process (``tests/conftest.py``), so a
mutant costs its tests, not a server start.

    .venv/bin/python scripts/mutate.py                  # every module, one after another
    .venv/bin/python scripts/mutate.py logic planner    # some of them
    .venv/bin/python scripts/mutate.py logic.uploads    # one file of logic/
    .venv/bin/python scripts/mutate.py --list           # the modules and the tests each runs

It mutates the last commit (``--worktree``: the files as they are now). Prints, per module, the
mutants killed, the survivors (``mutmut show NAME`` in the module's work folder prints the diff of
one) and the score. Results are kept in the work folder: a second run
of an unchanged module only tests what changed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "fusou_compaction"


@dataclass(frozen=True)
class Module:
    mutate: tuple[str, ...]  # globs under src/, as mutmut's only_mutate
    tests: tuple[str, ...]  # test files or folders (pytest node ids work too)


API_TESTS = (
    "tests/api/test_auth.py",
    "tests/api/test_upload.py",
    "tests/api/test_presigned.py",
    "tests/api/test_routes.py",
    "tests/api/test_error_bodies.py",
)
PIPELINE_TESTS = ("tests/pipeline/test_steps.py", "tests/pipeline/test_adapters_on_the_emulator.py")
# Each module against its fast tests: no fuzzing, no local stack, no crash interleavings (the full
# suite keeps those; here every mutant pays for its tests).
MODULES: dict[str, Module] = {
    "logic": Module(("logic/*",), (*API_TESTS, *PIPELINE_TESTS, "tests/pipeline/test_boundaries.py")),
    # logic/ one file at a time (a run of the whole folder takes hours): each against the tests
    # that exercise it.
    "logic.uploads": Module(
        ("logic/uploads.py",), (*API_TESTS, "tests/api/test_limits.py", "tests/pipeline/test_uploads_mutants.py")
    ),
    "logic.quarantine": Module(
        ("logic/quarantine.py",), ("tests/api/test_routes.py", "tests/api/test_quarantine_mutants.py")
    ),
    "logic.fragment_checks": Module(
        ("logic/fragment_checks.py",),
        (
            "tests/api/test_upload.py",
            "tests/api/test_upload_checks.py",
            "tests/api/test_limits_more.py",
            "tests/api/test_fragment_checks_mutants.py",
        ),
    ),
    "logic.consumer": Module(
        ("logic/consumer.py",),
        (
            "tests/pipeline/test_budget_and_priority.py",
            "tests/pipeline/test_adapters_on_the_emulator.py",
            "tests/pipeline/test_consumer_mutants.py",
        ),
    ),
    "logic.dlq": Module(
        ("logic/dlq.py",), ("tests/pipeline/test_dlq_records.py", "tests/pipeline/test_dlq_mutants.py")
    ),
    "logic.auth": Module(
        ("logic/auth.py",),
        (
            "tests/api/test_auth.py",
            "tests/api/test_error_bodies.py",
            "tests/api/test_jwks_outage.py",
            "tests/api/test_auth_mutants.py",
        ),
    ),
    "logic.presigned": Module(
        ("logic/presigned.py",),
        (
            "tests/api/test_presigned.py",
            "tests/pipeline/test_stranded_uploads.py",
            "tests/api/test_presigned_mutants.py",
        ),
    ),
    "logic.status": Module(("logic/status.py",), ("tests/api/test_routes.py", "tests/api/test_status_mutants.py")),
    "logic.redrive": Module(("logic/redrive.py",), ("tests/api/test_routes.py", "tests/api/test_redrive_mutants.py")),
    "logic.scheduled": Module(
        ("logic/scheduled.py",), ("tests/pipeline/test_boundaries.py", "tests/pipeline/test_scheduled_mutants.py")
    ),
    "logic.orphans": Module(
        ("logic/orphans.py",),
        (
            "tests/pipeline/test_orphan_sweep.py",
            "tests/pipeline/test_boundaries.py",
            "tests/pipeline/test_orphans_mutants.py",
        ),
    ),
    "logic.steps": Module(
        ("logic/steps.py",),
        ("tests/pipeline/test_steps.py", "tests/pipeline/test_boundaries.py", "tests/pipeline/test_steps_mutants.py"),
    ),
    "catalog": Module(("catalog/*",), ("tests/catalog",)),
    # catalog/ in two parts: every catalog test goes through the transport, so its mutants cost
    # the whole catalog suite; the transports' own tests decide them.
    "catalog.client": Module(("catalog/client.py", "catalog/models.py", "catalog/errors.py"), ("tests/catalog",)),
    "catalog.transport": Module(
        ("catalog/transport.py", "catalog/migrate.py"),
        (
            "tests/catalog/test_postgres_transport.py",
            "tests/catalog/test_supabase_transport.py",
            "tests/catalog/test_migrations.py",
            "tests/catalog/test_privileges.py",
            "tests/catalog/test_transport_mutants.py",
        ),
    ),
    "planner": Module(
        ("engine/planner.py",),
        (
            "tests/engine/test_engine_planner.py",
            "tests/engine/test_engine_planner_boundaries.py",
            "tests/engine/test_engine_planner_mutants.py",
        ),
    ),
    "schema": Module(
        ("engine/schema.py",),
        (
            "tests/engine/test_engine_schema.py",
            "tests/catalog/test_schemas.py",
            "tests/engine/test_engine_odd_inputs.py",
            "tests/engine/test_engine_schema_mutants.py",
        ),
    ),
    "read": Module(
        ("engine/read.py", "engine/rowcount.py"),
        (
            "tests/engine/test_engine_rowcount.py",
            "tests/engine/test_engine_known_schema.py",
            "tests/engine/test_engine_batches.py",
        ),
    ),
    "keys": Module(
        ("keys.py",), ("tests/unit/test_keys.py", "tests/pipeline/test_steps.py", "tests/api/test_upload.py")
    ),
    "pipeline": Module(("pipeline/*",), ("tests/pipeline/test_steps.py", "tests/infra/test_pipeline.py")),
    "handlers": Module(("handlers/*",), (*API_TESTS, "tests/pipeline/test_steps.py", "tests/unit")),
}


def _pyproject(module: Module) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(f'"{i}"' for i in items) + "]"

    return f"""\
[tool.mutmut]
source_paths = ["src/{PACKAGE}"]
only_mutate = {toml_list([f"src/{PACKAGE}/{g}" for g in module.mutate])}
pytest_add_cli_args_test_selection = {toml_list(list(module.tests))}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "--timeout=120"]
also_copy = ["events"]
use_git_change_detection = false
on_dependency_change = "rerun"

[tool.pytest.ini_options]
addopts = "-ra --strict-markers"
markers = ["slow: long-running tests"]
filterwarnings = [
  "ignore::DeprecationWarning:botocore.*",
  "ignore::DeprecationWarning:aws_xray_sdk.*",
  "ignore:No application metrics to publish:UserWarning",
]
"""


def _sync(src: Path, dst: Path) -> None:
    """Copy a tree, leaving files whose bytes did not change alone (mutmut keys its cache on mtimes)."""
    for path in src.rglob("*"):
        if "__pycache__" in path.parts or path.is_dir():
            continue
        target = dst / path.relative_to(src)
        if target.exists() and target.read_bytes() == path.read_bytes():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def snapshot(worktree: bool) -> Path:
    """The code and tests to run: the last commit (others' unfinished edits stay out), or the work tree."""
    if worktree:
        return ROOT
    # One snapshot per run: two runs at once (one module each) must not replace each other's
    out = ROOT / "build" / "mutate" / f"_head.{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD", f"functions/{PACKAGE}", "tests", "events"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def prepare(name: str, module: Module, source: Path) -> Path:
    missing = [t for t in module.tests if not (source / t.split("::")[0]).exists()]
    if missing:
        print(f"{name}: no such tests, left out: {missing}")
        module = Module(module.mutate, tuple(t for t in module.tests if t not in missing))
    work = ROOT / "build" / "mutate" / name
    work.mkdir(parents=True, exist_ok=True)
    _sync(source / "functions" / PACKAGE, work / "src" / PACKAGE)
    _sync(source / "tests", work / "tests")
    _sync(source / "events", work / "events")
    pyproject = work / "pyproject.toml"
    text = _pyproject(module)
    if not pyproject.exists() or pyproject.read_text() != text:
        pyproject.write_text(text)
    return work


def run_module(
    name: str, module: Module, source: Path, env: dict[str, str], children: int
) -> tuple[int, int, list[str]]:
    work = prepare(name, module, source)
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    started = time.monotonic()
    log = work / "mutmut-run.log"  # mutmut draws a progress spinner: kept out of the terminal
    with log.open("w") as out:
        done = subprocess.run(
            [mutmut, "run", "--max-children", str(children)], cwd=work, env=env, check=False, stdout=out, stderr=out
        )
    if done.returncode != 0:
        print(f"{name}: mutmut run failed ({done.returncode}); the end of {log}:")
        print("\n".join(log.read_text(errors="replace").replace("\r", "\n").splitlines()[-30:]))
    listing = subprocess.run(
        [mutmut, "results", "--all", "true"], cwd=work, env=env, check=True, capture_output=True, text=True
    ).stdout
    statuses = dict(re.findall(r"^\s*(\S+): (.+)$", listing, flags=re.MULTILINE))
    statuses = {k: v for k, v in statuses.items() if v != "not checked"}  # an interrupted run resumes
    killed = sum(1 for s in statuses.values() if s in ("killed", "timeout", "caught by type check"))
    survivors = sorted(k for k, s in statuses.items() if s in ("survived", "no tests", "suspicious"))
    print(f"\n== {name}: {len(statuses)} mutants in {time.monotonic() - started:.0f} s (work folder {work})")
    for k in survivors:
        print(f"   {statuses[k]:>9}  {k}")
    return killed, len(statuses), survivors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"some of: {', '.join(MODULES)} (default: all)")
    parser.add_argument("--list", action="store_true", help="print the modules and their tests")
    parser.add_argument("--children", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--worktree", action="store_true", help="mutate the work tree instead of the last commit")
    args = parser.parse_args()
    if args.list:
        for name, m in MODULES.items():
            print(f"{name:22} {', '.join(m.mutate):28} {' '.join(m.tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; known: {', '.join(MODULES)}")

    sys.path.insert(0, str(ROOT / "functions"))
    source = snapshot(args.worktree)
    scores: dict[str, tuple[int, int, list[str]]] = {}
    try:
        run_all(args, source, scores)
    finally:
        if source != ROOT:
            shutil.rmtree(source, ignore_errors=True)
    print("\nmodule     killed / mutants   score   survivors")
    for name, (killed, total, survivors) in scores.items():
        score = f"{100 * killed / total:5.1f}%" if total else "  n/a"
        print(f"{name:10} {killed:6} / {total:<8} {score}   {len(survivors)}")
    return 0


def run_all(args: argparse.Namespace, source: Path, scores: dict[str, tuple[int, int, list[str]]]) -> None:
    import psycopg

    from fusou_compaction.catalog.migrate import migrate
    from fusou_compaction.local.aws import LOCAL_CREDENTIALS, LocalAws
    from fusou_compaction.local.postgres import PostgresServer

    with PostgresServer() as pg, LocalAws() as aws:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE catalog_template")
        migrate(pg.url_for("catalog_template"))
        env = {
            **os.environ,
            **LOCAL_CREDENTIALS,
            "FUSOU_TEST_PG_PORT": str(pg.port),
            "FUSOU_TEST_CATALOG_TEMPLATE": "catalog_template",
            "FUSOU_TEST_AWS_PORT": str(aws.port),
        }
        # By default logic/ and catalog/ run whole; their <folder>.<file> entries are for one part.
        for name in args.modules or [m for m in MODULES if "." not in m]:
            scores[name] = run_module(name, MODULES[name], source, env, args.children)


if __name__ == "__main__":
    raise SystemExit(main())
