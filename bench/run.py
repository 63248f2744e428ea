"""`make bench`: our engine vs DuckDB and polars on three shapes of drifted battle-record lakes.

Every method is a whole process started cold and timed from outside: wall time around the
process (``time.perf_counter``), its CPU (user+sys) and peak RSS from ``os.wait4``'s rusage of
that one child. Imports, interpreter start-up, listing the files and working out the schema are
all inside the time, as a user running the tool would see it.

- ``ours``: ``.venv/bin/fusou-compaction compact-files <table dirs> -o OUT --no-progress``, what a
  user runs; it reads every footer to find the unified schema. The targets are judged on it.
- ``ours-schema``: the Compact step's path, the engine handed the unified schema (as the catalog
  hands it over), in ``bench/peers.py``. Reported, not judged.
- ``duckdb``: ``COPY (SELECT * FROM read_parquet([...], union_by_name=true)) TO ...`` with
  ``memory_limit='512MB'``, ``ROW_GROUP_SIZE 122880``, ``FILE_SIZE_BYTES 128MiB``, zstd.
- ``polars``: reads every footer's schema, unifies them in the script, ``scan_parquet(schema=...,
  missing_columns="insert", cast_options=...)`` + ``sink_parquet(compression="zstd")``.
- ``decode-only``: a floor, every fragment decoded by pyarrow on every core, nothing written.
- on request (``--methods``): ``pyarrow`` (``pyarrow.dataset``, handed the unified schema; slow
  on many small files: ~40 s a round on tiny).

Shapes (generated once by ``fusou_compaction.synth`` with schema, codec and row-group drift,
cached under ``.bench/``):

- ``tiny``: 2 tables (battle, hougeki) x 10,000 fragments of 20-200 rows: the real upload shape,
  one fragment per sortie (~2.2 M rows, ~240 MB);
- ``medium``: 4 tables x 500 fragments, ~5,200 rows mean (~10 M rows, ~380 MB);
- ``wide``: one 70-column ``ship_state_wide`` table (``list<struct>`` of equipment among them),
  1,000 fragments of 400-1,200 rows (~790 k rows, ~175 MB).

    .venv/bin/python bench/run.py                         # all shapes, 5 interleaved rounds
    .venv/bin/python bench/run.py --shapes tiny --rounds 3
    .venv/bin/python bench/run.py --quick                 # small shapes, 1 round (used by a test)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "functions"))

BENCH_DIR = ROOT / ".bench"
PEERS_PY = ROOT / "bench" / "peers.py"
OURS = ("ours", "ours-schema")
TARGET_PEERS = ("duckdb", "polars")  # work the schema out themselves, as ours does
# pyarrow (handed the schema) costs ~40 s a round on tiny: only on request. decode-only, a floor
# (decode every fragment, write nothing), is cheap.
DEFAULT_METHODS = ("ours", "ours-schema", "duckdb", "polars", "decode-only")
ALL_METHODS = (*DEFAULT_METHODS, "pyarrow")
DATA_VERSION = "d2"
TIME_BIN = (
    "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
)  # GNU time: peak RSS  # bump when synth's output for the same parameters changes


class Shape(NamedTuple):
    name: str
    tables: tuple[str, ...]
    fragments: int  # per table
    rows_per_fragment: int = 5000  # mean, weighted per table (synth._ROW_WEIGHT)
    rows_range: tuple[int, int] | None = None  # or uniform in [lo, hi]

    def rows_label(self) -> str:
        return f"{self.rows_range[0]}-{self.rows_range[1]}" if self.rows_range else str(self.rows_per_fragment)


_TINY_TABLES = ("battle", "hougeki")
_MEDIUM_TABLES = ("battle", "hougeki", "air_battle", "ship_state")
_WIDE_TABLES = ("ship_state_wide",)
SHAPES = {
    "tiny": Shape("tiny", _TINY_TABLES, 10_000, rows_range=(20, 200)),
    "medium": Shape("medium", _MEDIUM_TABLES, 500, 5200),
    "wide": Shape("wide", _WIDE_TABLES, 1000, rows_range=(400, 1200)),
}
QUICK_SHAPES = {
    "tiny": Shape("tiny", _TINY_TABLES, 200, rows_range=(20, 200)),
    "medium": Shape("medium", _MEDIUM_TABLES, 12, 400),
    "wide": Shape("wide", _WIDE_TABLES, 16, rows_range=(100, 300)),
}


# ---------------------------------------------------------------- data sets
def dataset_dir(shape: Shape, seed: int) -> Path:
    return (
        BENCH_DIR
        / f"shape-{shape.name}-t{len(shape.tables)}-f{shape.fragments}-r{shape.rows_label()}-s{seed}-{DATA_VERSION}"
    )


def table_files(table_dir: Path) -> list[str]:
    return sorted(str(p) for p in table_dir.glob("*.parquet"))


def ensure_dataset(shape: Shape, seed: int) -> tuple[Path, dict[str, Any]]:
    """Generate (once) the fragments, their stats, the unified schemas and the 4x symlink folders."""
    from fusou_compaction.synth import generate_fragments

    path = dataset_dir(shape, seed)
    if not (path / ".done").exists():
        shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        print(f"generating {shape.name}: {shape.fragments} fragments x {len(shape.tables)} tables into {path} ...",
              file=sys.stderr, flush=True)  # fmt: skip
        generate_fragments(
            path,
            tables=shape.tables,
            fragments=shape.fragments,
            rows_per_fragment=shape.rows_per_fragment,
            rows_range=shape.rows_range,
            seed=seed,
            storage_drift=True,
        )
        _write_stats_and_schemas(path, shape)
        _make_4x(path, shape)
        (path / ".done").write_text("ok")
        print(f"generated in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return path, json.loads((path / ".stats.json").read_text())


def _write_stats_and_schemas(path: Path, shape: Shape) -> None:
    """Rows, bytes and drift counts from the footers; the unified schema per table for the
    methods that are handed it (ours-schema, pyarrow): outside anyone's timing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fusou_compaction.engine import unify_schemas

    stats: dict[str, Any] = {"files": 0, "rows": 0, "bytes": 0, "empty": 0, "multi_row_group": 0}
    codecs: Counter[str] = Counter()
    schemas: dict[str, str] = {}
    distinct = 0
    for table in shape.tables:
        arrow_schemas = []
        for f in table_files(path / table):
            md = pq.read_metadata(f)
            stats["files"] += 1
            stats["rows"] += md.num_rows
            stats["bytes"] += os.path.getsize(f)
            stats["empty"] += md.num_rows == 0
            stats["multi_row_group"] += md.num_row_groups > 1
            if md.num_row_groups and md.row_group(0).num_columns:
                codecs[md.row_group(0).column(0).compression.lower()] += 1
            arrow_schemas.append(md.schema.to_arrow_schema())
        distinct += len({s.remove_metadata().to_string() for s in arrow_schemas})
        groups = unify_schemas(arrow_schemas)
        schemas[table] = groups[0].schema.serialize().to_pybytes().hex()
        stats.setdefault("columns", {})[table] = len(groups[0].schema)
    stats["codecs"] = dict(codecs.most_common())
    stats["distinct_schemas"] = distinct
    (path / ".unified-schemas.json").write_text(json.dumps(schemas))
    (path / ".stats.json").write_text(json.dumps(stats))
    del pa


def _make_4x(path: Path, shape: Shape) -> None:
    """x4/<table>/c<k>-<name>: every fragment linked four times, as distinct inputs."""
    for table in shape.tables:
        folder = path / "x4" / table
        folder.mkdir(parents=True, exist_ok=True)
        for f in table_files(path / table):
            for k in range(4):
                (folder / f"c{k}-{Path(f).name}").symlink_to(f)


# ---------------------------------------------------------------- one method, one cold process
def ours_cli() -> str:
    local = Path(sys.executable).parent / "fusou-compaction"
    return str(local) if local.exists() else str(ROOT / ".venv" / "bin" / "fusou-compaction")


def command(method: str, tables: list[Path], out: Path, schemas: Path) -> list[str]:
    dirs = [str(t) for t in tables]
    if method == "ours":
        return [ours_cli(), "compact-files", *dirs, "-o", str(out), "--no-progress"]
    return [sys.executable, str(PEERS_PY), method, *dirs, "-o", str(out), "--schemas", str(schemas)]


def run_method(method: str, data: Path, tables: list[str], copies: int = 1) -> dict[str, Any]:
    """Start the method cold, wait for it, measure it from outside; then count its output.

    Peak RSS comes from ``/usr/bin/time -f %M``: the rusage of a child of this driver would not
    do, as Linux counts the forked copy of the driver (pyarrow loaded, ~100 MB) in the child's
    ``ru_maxrss`` until it execs. Wall and CPU come from ``os.wait4`` (``time`` itself adds ~1 ms).
    """
    base = data / "x4" if copies == 4 else data
    out = BENCH_DIR / "out" / method
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    logs, rss_file = BENCH_DIR / "out" / f"{method}.log", BENCH_DIR / "out" / f"{method}.rss"
    env = dict(os.environ)
    if method == "ours-schema":
        env["ARROW_DEFAULT_MEMORY_POOL"] = "system"  # what the CLI picks via use_system_allocator
    cmd = command(method, [base / t for t in tables], out, data / ".unified-schemas.json")
    if TIME_BIN:
        cmd = [TIME_BIN, "-f", "%M", "-o", str(rss_file), *cmd]
    with open(logs, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_kib = int(rss_file.read_text().split()[-1]) if TIME_BIN else usage.ru_maxrss
    result: dict[str, Any] = {
        "method": method,
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": peak_kib / 1024,
    }
    if proc.returncode != 0:
        text = logs.read_text(errors="replace").strip().splitlines()
        reason = next((ln for ln in reversed(text) if ln.startswith("FAILED ")), text[-1] if text else "")
        result["error"] = f"exit {proc.returncode}: {reason.removeprefix('FAILED ')[:300]}"
    else:
        files = [p for p in out.rglob("*.parquet") if not any(x.startswith(".") for x in p.relative_to(out).parts)]
        result["bytes_out"] = sum(p.stat().st_size for p in files)
        result["files_out"] = len(files)
        result["rows_out"] = None if method == "decode-only" else _count_rows(files)
        result["columns_out"] = _count_columns(out, tables) if files else None
    shutil.rmtree(out, ignore_errors=True)
    return result


def _count_columns(out: Path, tables: list[str]) -> int:
    """Top-level columns of each table's first output file, summed: a peer that drops a column
    that only some fragments have shows here."""
    import pyarrow.parquet as pq

    firsts = [next(iter(sorted((out / t).rglob("*.parquet"))), None) for t in tables]
    return sum(len(pq.read_schema(f)) for f in firsts if f is not None)


def _count_rows(files: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in files)


# ---------------------------------------------------------------- summaries and targets
def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if not r.get("error")]
    if not ok:
        return {"method": runs[0]["method"], "error": runs[0].get("error")}
    secs = [r["seconds"] for r in ok]
    return {
        "method": ok[0]["method"],
        "seconds": statistics.median(secs),
        "min": min(secs),
        "max": max(secs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in ok),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
        "bytes_out": ok[0]["bytes_out"],
        "files_out": ok[0]["files_out"],
        "rows_out": ok[0]["rows_out"],
        "columns_out": ok[0].get("columns_out"),
        "runs_ok": len(ok),
        "runs_failed": len(runs) - len(ok),
        "first_error": next((r["error"] for r in runs if r.get("error")), None),
    }


def _pairs(ours: list[dict[str, Any]], peer: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Ours / peer per round (the two ran in the same round): wall ratios, CPU ratios."""
    pairs = [(a, b) for a, b in zip(ours, peer, strict=True) if not a.get("error") and not b.get("error")]
    return [a["seconds"] / b["seconds"] for a, b in pairs], [a["cpu_seconds"] / b["cpu_seconds"] for a, b in pairs]


def paired_ratio(ours: list[dict[str, Any]], peer: list[dict[str, Any]], ours_name: str, name: str) -> str:
    """Ours / peer per round, median over rounds: slow drifts of the machine's speed cancel
    within a round, which a ratio of medians does not do."""
    wall, cpu = _pairs(ours, peer)
    if not wall:
        return f"paired {ours_name}/{name}: no successful pair"
    return (
        f"paired {ours_name}/{name} over {len(wall)} round(s): wall {statistics.median(wall):.3f}x "
        f"({min(wall):.2f}-{max(wall):.2f}), cpu {statistics.median(cpu):.3f}x ({min(cpu):.2f}-{max(cpu):.2f})"
    )


# The targets (measured here, never asserted in tests).
TIME_TARGET, TIME_STRETCH, RSS_LIMIT_MB, OUTPUT_SLACK, SCALE_SLACK = 1.0, 0.8, 300, 0.10, 0.10


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def target_lines(
    results: list[dict[str, Any]],
    runs: dict[str, list[dict[str, Any]]],
    scale: dict[str, Any],
    rows_in: int | None = None,
) -> list[str]:
    """Each target, met or not: judged on ``ours`` (compact-files); ``ours-schema`` reported.

    Time counts as met only when both the ratio of medians and the paired median are within it:
    on this machine either one alone moves by a few percent from run to run. The peers judged
    against (DuckDB, polars) work the unified schema out themselves, as ``ours`` does.
    """
    done = {r["method"]: r for r in results if "seconds" in r}
    peers = [done[m] for m in TARGET_PEERS if m in done]
    ours_done = [done[m] for m in OURS if m in done]
    lines: list[str] = []
    if peers and ours_done:
        best = min(peers, key=lambda r: r["seconds"])
        smallest = min(r["bytes_out"] for r in peers)
        lines.append(f"targets (fastest peer: {best['method']}; judged on ours, ours-schema reported):")
        for r in ours_done:
            name = r["method"]
            ratio = r["seconds"] / best["seconds"]
            wall, _ = _pairs(runs[name], runs[best["method"]])
            paired = statistics.median(wall) if wall else ratio
            worst = max(ratio, paired)
            stretch = " (stretch <= 0.8x met too)" if worst <= TIME_STRETCH else ""
            how = "compact-files, judged" if name == "ours" else "schema handed over, reported"
            lines.append(
                f"  time <= {TIME_TARGET:.1f}x, {name} ({how}): {ratio:.2f}x by medians, {paired:.3f}x paired: "
                f"{_verdict(worst <= TIME_TARGET)}{stretch}"
            )
        for r in ours_done:
            name = r["method"]
            four = scale.get(name, {}).get("four", {}).get("peak_rss_mb")
            peak = max(r["peak_rss_mb"], four or 0.0)
            at4 = f", {four:.0f} MB at 4x" if four is not None else ", 4x not run"
            lines.append(
                f"  peak RSS <= {RSS_LIMIT_MB} MB (1x and 4x), {name}: {r['peak_rss_mb']:.0f} MB at 1x{at4}: "
                f"{_verdict(peak <= RSS_LIMIT_MB)}"
            )
        for r in ours_done:
            out = r["bytes_out"]
            lines.append(
                f"  output within {OUTPUT_SLACK:.0%} of the smallest peer's, {r['method']}: {out / 1e6:.1f} MB vs "
                f"{smallest / 1e6:.1f} MB ({out / smallest - 1:+.1%}): {_verdict(out <= smallest * (1 + OUTPUT_SLACK))}"
            )
    for name, s in scale.items():
        if "peak_rss_mb" not in s.get("four", {}):
            continue
        growth = s["four"]["peak_rss_mb"] / s["one"]["peak_rss_mb"] - 1
        lines.append(
            f"  4x peak RSS within +{SCALE_SLACK:.0%} of 1x, {name}: {growth:+.1%}: {_verdict(growth <= SCALE_SLACK)}"
        )
    if rows_in is not None and lines:
        bad = [
            f"{r['method']} {r['rows_out']:,}"
            for r in results
            if "seconds" in r and r.get("rows_out") is not None and r["rows_out"] != rows_in
        ]
        bad += [
            f"{n} at 4x {s['four']['rows_out']:,}" for n, s in scale.items() if s["four"].get("rows_out") != 4 * rows_in
        ]
        detail = "every method" if not bad else "lost or gained: " + ", ".join(bad)
        lines.append(f"  rows out = rows in ({rows_in:,}): {detail}: {_verdict(not bad)}")
    return lines


# ---------------------------------------------------------------- one shape
def bench_shape(shape: Shape, methods: list[str], rounds: int, seed: int, four_x: bool) -> dict[str, Any]:
    data, stats = ensure_dataset(shape, seed)
    rows_in, n_files = stats["rows"], stats["files"]
    codecs = ", ".join(f"{k} {v / n_files:.0%}" for k, v in stats["codecs"].items())
    print(
        f"\n== {shape.name}: {n_files:,} fragments ({len(shape.tables)} table(s) x {shape.fragments:,}, "
        f"{shape.rows_label()} rows each), {rows_in:,} rows, {stats['bytes'] / 1e6:.1f} MB in {data.name}"
    )
    print(
        f"drift: {stats['distinct_schemas']} distinct schemas; codecs {codecs}; {stats['multi_row_group']:,} "
        f"fragments with 2-4 row groups, {stats['empty']} empty; unified columns {stats['columns']}"
    )
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start of shape")
    for t in shape.tables:  # the page cache holds every input before the first timed run
        for f in table_files(data / t):
            Path(f).read_bytes()

    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for r in range(rounds):  # interleaved, the order rotated, so background load hits all alike
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for m in order:
            runs[m].append(run_method(m, data, list(shape.tables)))
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{m} {_short(runs[m][-1])}" for m in methods), flush=True)
    results = [summarize(runs[m]) for m in methods]
    done = [r for r in results if "seconds" in r]
    peers_ok = [r for r in done if r["method"] in TARGET_PEERS]
    best = min(peers_ok, key=lambda r: r["seconds"]) if peers_ok else None

    print_table(results, rows_in, n_files, best, rounds, columns_in=sum(stats["columns"].values()))
    for ours in (m for m in OURS if m in methods):
        for peer in (r["method"] for r in done if r["method"] not in OURS and r["method"] != "decode-only"):
            print(paired_ratio(runs[ours], runs[peer], ours, peer))
    scale = run_4x(results, data, shape, rows_in) if four_x else {}
    targets = target_lines(results, runs, scale, rows_in)
    for line in targets:
        print(line)
    return {
        "shape": shape._asdict(),
        "data": {**stats, "dir": str(data)},
        "rounds": rounds,
        "results": results,
        "runs": runs,
        "scale": scale,
        "targets": targets,
    }


def print_table(
    results: list[dict[str, Any]],
    rows_in: int,
    n_files: int,
    best: dict[str, Any] | None,
    rounds: int,
    *,
    columns_in: int | None = None,
) -> None:
    print(f"{rounds} round(s), interleaved; median wall of the whole cold process; cpu s = user+sys of the process;")
    print("cols = top-level columns out over all tables (! = not the unified schema's); ms/frag = wall / fragments")
    header = (
        f"{'method':<12} {'wall s':>8} {'(min-max)':>13} {'cpu s':>7} {'peak RSS MB':>12} {'output MB':>10} "
        f"{'files':>6} {'rows ok':>8} {'cols':>5} {'ms/frag':>8} {'vs best peer':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if "seconds" not in r:
            print(f"{r['method']:<12} failed: {r.get('error')}")
            continue
        ratio = f"{r['seconds'] / best['seconds']:.2f}x" if best else "-"
        rows_ok = "-" if r["rows_out"] is None else ("yes" if r["rows_out"] == rows_in else f"NO {r['rows_out']}")
        cols = r.get("columns_out")
        cols_ok = "-" if cols is None else str(cols) + ("" if columns_in in (None, cols) else "!")
        print(
            f"{r['method']:<12} {r['seconds']:>8.2f} {r['min']:>6.2f}-{r['max']:<6.2f} {r['cpu_seconds']:>7.2f} "
            f"{r['peak_rss_mb']:>12.0f} {r['bytes_out'] / 1e6:>10.1f} {r['files_out']:>6} {rows_ok:>8} {cols_ok:>5} "
            f"{1000 * r['seconds'] / n_files:>8.3f} {ratio:>13}"
        )
        if r["runs_failed"]:
            print(f"{'':<12} ({r['runs_failed']} of {rounds} runs failed: {r['first_error']})")
    if best:
        print(f"best peer: {best['method']} ({best['seconds']:.2f} s)")


def run_4x(results: list[dict[str, Any]], data: Path, shape: Shape, rows_in: int) -> dict[str, Any]:
    """Ours (each path) once on 4x the data: every fragment linked four times, as distinct inputs."""
    scale: dict[str, Any] = {}
    for one in (r for r in results if r["method"] in OURS):
        name = one["method"]
        four = run_method(name, data, list(shape.tables), copies=4)
        if "error" in four:
            print(f"{name} on 4x the data: failed: {four['error']}")
        elif "seconds" in one:
            growth = four["peak_rss_mb"] / one["peak_rss_mb"] - 1
            print(
                f"{name} on 4x the data (every fragment linked 4 times): {four['seconds']:.2f} s, peak RSS "
                f"{four['peak_rss_mb']:.0f} MB vs {one['peak_rss_mb']:.0f} MB at 1x ({growth:+.1%}); "
                f"rows ok: {four['rows_out'] == 4 * rows_in}"
            )
        if "seconds" in one:
            scale[name] = {"one": one, "four": four}
    return scale


def _short(r: dict[str, Any]) -> str:
    if r.get("error"):
        return "FAILED"
    return f"{r['seconds']:.1f}s/{r['peak_rss_mb']:.0f}MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated subset of " + ",".join(SHAPES))
    parser.add_argument("--rounds", type=int, help="interleaved rounds per shape (default 5, quick 1)")
    parser.add_argument("--repeat", type=int, help=argparse.SUPPRESS)  # the old name of --rounds
    parser.add_argument("--quick", action="store_true", help="small shapes, one round, every method: a smoke test")
    parser.add_argument("--fragments", type=int, help="override fragments per table for every shape chosen")
    parser.add_argument(
        "--methods",
        help=f"comma-separated subset of {','.join(ALL_METHODS)} (default {','.join(DEFAULT_METHODS)}; quick: all)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-4x", action="store_true", help="skip ours on 4x the data")
    parser.add_argument("--json", type=Path, help="also write every run and summary here")
    args = parser.parse_args()

    table = QUICK_SHAPES if args.quick else SHAPES
    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; choose from {list(table)}")
    methods = [m.strip() for m in (args.methods or ",".join(ALL_METHODS if args.quick else DEFAULT_METHODS)).split(",")]
    if bad := [m for m in methods if m not in ALL_METHODS]:
        parser.error(f"unknown method(s) {bad}; choose from {list(ALL_METHODS)}")
    # Five rounds: on a machine whose speed drifts +-10% within minutes, three paired rounds moved
    # our ratio to polars between 0.98x and 1.07x from one run to the next (bench/RESULTS.md).
    rounds = args.rounds or args.repeat or (1 if args.quick else 5)

    started = time.perf_counter()
    print(
        f"bench: shapes {','.join(names)}; methods {','.join(methods)}; {rounds} round(s); {os.cpu_count()} "
        f"cores, load average {os.getloadavg()[0]:.1f}; ours = {ours_cli()} compact-files"
    )
    report: dict[str, Any] = {"shapes": {}}
    for name in names:
        shape = table[name]
        if args.fragments:
            shape = Shape(shape.name, shape.tables, args.fragments, shape.rows_per_fragment, shape.rows_range)
        report["shapes"][name] = bench_shape(shape, methods, rounds, args.seed, not args.no_4x)

    print(f"\n== summary ({time.perf_counter() - started:.0f} s in all)")
    failed = False
    for name, rep in report["shapes"].items():
        rows_in = rep["data"]["rows"]
        by = {r["method"]: r for r in rep["results"]}
        peers = [by[m] for m in TARGET_PEERS if "seconds" in by.get(m, {})]
        best = min(peers, key=lambda r: r["seconds"]) if peers else None
        parts = []
        for m, r in by.items():
            if "seconds" not in r:
                parts.append(f"{m} failed")
                continue
            vs = f" {r['seconds'] / best['seconds']:.2f}x" if best and m in OURS else ""
            parts.append(f"{m} {r['seconds']:.2f} s{vs} {r['peak_rss_mb']:.0f} MB")
        print(f"{name:<7} " + "; ".join(parts))
        for m in OURS:
            r = by.get(m)
            four = rep["scale"].get(m, {}).get("four")
            if r is not None and ("seconds" not in r or r["rows_out"] != rows_in):
                failed = True
            if four is not None and four.get("rows_out") != 4 * rows_in:
                failed = True
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
