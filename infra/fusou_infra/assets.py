"""Lambda code assets: what each one holds, where `make build` puts it, and what synth uses.

Pure Python (no CDK import) so ``infra/build_assets.py`` starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = ROOT / "functions"
PACKAGE = "fusou_compaction"
DEFAULT_BUILD_DIR = ROOT / "build"

# The Lambda runtime (config.LAMBDA_RUNTIME) and the interpreter wheels are chosen for must agree.
LAMBDA_PYTHON_VERSION = "3.14"
# Lambda's python3.12+ runtimes run on Amazon Linux 2023 (glibc 2.34), arm64.
LAMBDA_PYTHON_PLATFORM = "aarch64-manylinux_2_34"
MAX_UNZIPPED_BYTES = 250 * 1000 * 1000  # Lambda's hard limit (code + layers, unzipped)
MARKER = ".fusou-asset.json"  # written last by `make build`: a folder without it is not built

AssetName = Literal["parquet", "light"]


@dataclass(frozen=True)
class Asset:
    name: AssetName
    # Runtime dependencies (pyproject [project.dependencies]) left out, with what only they need.
    prune: tuple[str, ...]
    purpose: str


# Never run in Lambda: the CLI's typer and rich; psycopg and its pool, which only the postgres
# catalog transport loads (local stack, tests, migrations), while the stack's functions use the
# supabase transport (FUSOU_CATALOG_TRANSPORT in fusou_infra/stack.py).
_NOT_IN_LAMBDA = ("typer", "rich", "psycopg", "psycopg-pool")
ASSETS: dict[AssetName, Asset] = {
    "parquet": Asset("parquet", _NOT_IN_LAMBDA, "reads or writes Parquet: API, register, the pipeline steps"),
    "light": Asset(
        "light", (*_NOT_IN_LAMBDA, "pyarrow", "python-multipart"), "queue consumer, DLQ and scheduled functions"
    ),
}


def built_asset_dir(build_dir: Path, name: AssetName) -> Path:
    return build_dir / name


def is_built(path: Path) -> bool:
    # build_assets.py writes the marker last, so a half-built folder never counts as built.
    return (path / MARKER).is_file() and (path / PACKAGE / "__init__.py").is_file()


class AssetsNotBuilt(RuntimeError):
    pass


def resolve_code_dir(name: AssetName, build_dir: Path | None, *, require_built: bool) -> tuple[Path, bool]:
    """The folder to package for an asset, and whether it is the full build.

    Without a build, synth packages the source folder (the package only, no dependencies):
    enough to synthesize and test the template, not to run. `make deploy` requires the build.
    """
    if build_dir is not None:
        built = built_asset_dir(build_dir, name)
        if is_built(built):
            return built, True
    if require_built:
        raise AssetsNotBuilt(f"Lambda asset {name!r} is not built in {build_dir}: run `make build` before deploying")
    return FUNCTIONS_DIR, False
