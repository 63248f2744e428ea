"""`make build`: the Lambda code assets, without Docker.

For each asset (fusou_infra.assets.ASSETS) it exports the locked runtime dependencies (uv.lock,
minus what the asset prunes), installs Lambda's wheels for them (arm64, Amazon Linux 2023, the
runtime's Python) into build/<asset>/, copies the package beside them, compiles every module to
the runtime's bytecode (CPython 3.14 via Pyodide, so no 3.14 interpreter is needed here), prints
the unzipped size and fails if an asset reaches Lambda's 250 MB limit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fusou_infra.assets import (
    ASSETS,
    DEFAULT_BUILD_DIR,
    FUNCTIONS_DIR,
    LAMBDA_PYTHON_PLATFORM,
    LAMBDA_PYTHON_VERSION,
    MARKER,
    MAX_UNZIPPED_BYTES,
    PACKAGE,
    ROOT,
    Asset,
    AssetName,
)

# CPython 3.14 built for WebAssembly: compiles the assets' bytecode (infra/compile_bytecode.mjs).
PYODIDE_VERSION = "314.0.8"
PYODIDE_DIR = ROOT / ".tools" / "pyodide"
MB = 1000 * 1000

# Files of installed packages that nothing in Lambda loads (glob patterns under the asset folder).
# pyarrow: C++ headers, Cython sources and tests; Arrow Flight (RPC, ~30 MB), which no other
# pyarrow library links against (checked with readelf) and the service never imports.
TRIM = (
    "pyarrow/include",
    "pyarrow/src",
    "pyarrow/tests",
    "pyarrow/**/*.pyx",
    "pyarrow/**/*.pxd",
    "pyarrow/**/*.pxi",
    "pyarrow/libarrow_flight.so*",
    "pyarrow/libarrow_python_flight.so*",
    "pyarrow/_flight.*.so",
    "pyarrow/flight.py",
)


def find_uv() -> str:
    local = ROOT / ".tools" / "bin" / "uv"
    found = str(local) if local.is_file() else shutil.which("uv")
    if not found:
        raise SystemExit("uv is missing: run `make setup` (it installs uv into .tools/)")
    return found


def ensure_pyodide() -> Path:
    """Pyodide from the npm registry into .tools/pyodide (pinned), once."""
    installed = PYODIDE_DIR / "node_modules" / "pyodide" / "package.json"
    if not installed.is_file() or json.loads(installed.read_text())["version"] != PYODIDE_VERSION:
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm is missing: the Lambda assets' bytecode is compiled with Pyodide (Node.js)")
        PYODIDE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(PYODIDE_DIR),
                f"pyodide@{PYODIDE_VERSION}",
            ],
            check=True,
        )
    return PYODIDE_DIR / "node_modules"


def compile_bytecode(folder: Path) -> dict[str, object]:
    """Every module under ``folder`` compiled to the Lambda runtime's bytecode, in place."""
    node_modules = ensure_pyodide()
    script = ROOT / "infra" / "compile_bytecode.mjs"
    # Node resolves "pyodide" from the script's folder upwards, or from NODE_PATH for ES modules
    # only through a symlink: run a copy of the script next to the node_modules that holds it.
    runner = node_modules.parent / script.name
    shutil.copyfile(script, runner)
    proc = subprocess.run(["node", str(runner), str(folder.resolve())], check=True, capture_output=True, text=True)
    report: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    if not str(report["version"]).startswith(LAMBDA_PYTHON_VERSION + "."):
        raise SystemExit(f"bytecode compiler is Python {report['version']}, the runtime is {LAMBDA_PYTHON_VERSION}")
    return report


def export_requirements(uv: str, asset: Asset) -> str:
    """The locked [project.dependencies] closure, minus the asset's pruned packages and what only they need."""
    cmd = [
        uv,
        "export",
        "--frozen",
        "--no-default-groups",
        "--no-emit-project",
        "--no-hashes",
        "--no-annotate",
        "--no-header",
        "--format",
        "requirements-txt",
    ]
    for name in asset.prune:
        cmd += ["--prune", name]
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def requirement_names(requirements: str) -> set[str]:
    return {
        line.split("==")[0].strip().lower()
        for line in requirements.splitlines()
        if line.strip() and not line.startswith(("#", "-"))
    }


def install(uv: str, requirements_file: Path, target: Path) -> None:
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--python-platform",
            LAMBDA_PYTHON_PLATFORM,
            "--python-version",
            LAMBDA_PYTHON_VERSION,
            "--target",
            str(target),
            "-r",
            str(requirements_file),
        ],
        cwd=ROOT,
        check=True,
    )


def copy_package(target: Path) -> None:
    shutil.copytree(FUNCTIONS_DIR / PACKAGE, target / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def trim(target: Path) -> int:
    removed = 0
    for pattern in TRIM:
        for path in sorted(target.glob(pattern)):
            removed += tree_size(path) if path.is_dir() else path.stat().st_size
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    return removed


def tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def largest_children(path: Path, n: int = 5) -> list[tuple[str, int]]:
    sizes = [(c.name, tree_size(c) if c.is_dir() else c.stat().st_size) for c in path.iterdir()]
    return sorted(sizes, key=lambda s: s[1], reverse=True)[:n]


def check_size(name: str, size: int) -> None:
    if size >= MAX_UNZIPPED_BYTES:
        raise SystemExit(
            f"asset {name} is {size / MB:.1f} MB unzipped: Lambda's limit is {MAX_UNZIPPED_BYTES / MB:.0f} MB"
        )


def build_asset(uv: str, asset: Asset, build_dir: Path) -> int:
    requirements = export_requirements(uv, asset)
    build_dir.mkdir(parents=True, exist_ok=True)
    requirements_file = build_dir / f"{asset.name}.requirements.txt"
    requirements_file.write_text(requirements)
    staging = build_dir / f".{asset.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    install(uv, requirements_file, staging)
    shutil.rmtree(staging / "bin", ignore_errors=True)  # console scripts: nothing runs them in Lambda
    trim(staging)
    copy_package(staging)
    bytecode = compile_bytecode(staging)
    size = tree_size(staging)
    check_size(asset.name, size)
    (staging / MARKER).write_text(
        json.dumps(
            {
                "asset": asset.name,
                "python": LAMBDA_PYTHON_VERSION,
                "platform": LAMBDA_PYTHON_PLATFORM,
                "requirements_sha256": hashlib.sha256(requirements.encode()).hexdigest(),
                "bytecode": bytecode,
                "bytes": size,
            },
            indent=2,
        )
    )
    final = build_dir / asset.name
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)  # the marker makes it count as built only once complete
    return size


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    parser.add_argument("--only", choices=sorted(ASSETS), action="append", help="build only these assets")
    args = parser.parse_args(list(argv) if argv is not None else None)
    uv = find_uv()
    names: list[AssetName] = args.only or list(ASSETS)
    for name in names:
        asset = ASSETS[name]
        size = build_asset(uv, asset, args.build_dir)
        top = ", ".join(f"{n} {s / MB:.1f}" for n, s in largest_children(args.build_dir / name))
        print(
            f"{name:8} {size / MB:7.1f} MB unzipped (limit {MAX_UNZIPPED_BYTES / MB:.0f}) "
            f"- {asset.purpose}; largest: {top}"
        )


if __name__ == "__main__":
    main()
