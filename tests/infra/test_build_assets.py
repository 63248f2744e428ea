"""`make build` (infra/build_assets.py) and how synth picks Lambda code, without network or a build."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fusou_infra.assets import ASSETS, FUNCTIONS_DIR, AssetsNotBuilt, resolve_code_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def build_assets() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_assets", ROOT / "infra" / "build_assets.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_assets"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def uv(build_assets: ModuleType) -> str:
    # `make test` always installs uv into .tools/: its absence is a broken set-up, not a reason to skip.
    assert (ROOT / ".tools" / "bin" / "uv").is_file() or shutil.which("uv"), "uv missing: run `make setup`"
    return build_assets.find_uv()  # type: ignore[no-any-return]


def test_only_the_parquet_asset_installs_pyarrow(build_assets: ModuleType, uv: str) -> None:
    # Given the locked runtime dependencies, When each asset's requirements are exported
    parquet = build_assets.requirement_names(build_assets.export_requirements(uv, ASSETS["parquet"]))
    light = build_assets.requirement_names(build_assets.export_requirements(uv, ASSETS["light"]))
    # Then pyarrow is only in the Parquet asset; the CLI's packages and psycopg (the postgres
    # transport, never the deployed one) in neither; the rest in both
    assert "pyarrow" in parquet and "pyarrow" not in light
    assert not {"typer", "rich", "psycopg", "psycopg-binary", "psycopg-pool"} & (parquet | light)
    assert {"aws-lambda-powertools", "pydantic", "supabase", "pyjwt", "boto3"} <= light


def test_an_asset_at_the_lambda_limit_fails_the_build(build_assets: ModuleType) -> None:
    build_assets.check_size("parquet", 249_999_999)
    with pytest.raises(SystemExit, match="limit"):
        build_assets.check_size("parquet", 250_000_000)


def test_trim_removes_arrow_flight_and_sources_but_keeps_parquet(build_assets: ModuleType, tmp_path: Path) -> None:
    pa = tmp_path / "pyarrow"
    (pa / "include" / "arrow").mkdir(parents=True)
    for name in (
        "libarrow_flight.so.2600",
        "_flight.cpython-314-aarch64-linux-gnu.so",
        "flight.py",
        "lib.pyx",
        "libparquet.so.2600",
        "parquet/__init__.py",
        "include/arrow/api.h",
    ):
        (pa / name).parent.mkdir(parents=True, exist_ok=True)
        (pa / name).write_bytes(b"x" * 10)
    removed = build_assets.trim(tmp_path)
    assert removed == 50
    assert sorted(p.relative_to(pa).as_posix() for p in pa.rglob("*") if p.is_file()) == [
        "libparquet.so.2600",
        "parquet/__init__.py",
    ]


def test_synth_uses_a_complete_build_and_falls_back_to_the_source(tmp_path: Path) -> None:
    # Given no build: the package source, unless the build is required (deploy)
    assert resolve_code_dir("light", tmp_path, require_built=False) == (FUNCTIONS_DIR, False)
    with pytest.raises(AssetsNotBuilt, match="make build"):
        resolve_code_dir("light", tmp_path, require_built=True)
    # Given a half-written build (no marker yet): still not built
    (tmp_path / "light" / "fusou_compaction").mkdir(parents=True)
    (tmp_path / "light" / "fusou_compaction" / "__init__.py").write_text("")
    assert resolve_code_dir("light", tmp_path, require_built=False)[1] is False
    # Given a complete build: that folder
    (tmp_path / "light" / ".fusou-asset.json").write_text("{}")
    assert resolve_code_dir("light", tmp_path, require_built=True) == (tmp_path / "light", True)


def test_app_script_accepts_cdk_style_context(build_assets: ModuleType) -> None:
    spec = importlib.util.spec_from_file_location("infra_app", ROOT / "infra" / "app.py")
    assert spec and spec.loader
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    assert app.parse_context(["-c", "stage=prod", "--context", "requireBuiltAssets=true"]) == {
        "stage": "prod",
        "requireBuiltAssets": "true",
    }
    with pytest.raises(SystemExit):
        app.parse_context(["--stage", "prod"])


# Handlers per asset, as infra/fusou_infra (api.py, pipeline.py, schedule.py) assigns them.
HANDLERS_BY_ASSET = {"parquet": ("api", "register", "steps"), "light": ("consumer", "dlq", "scheduled")}
MODULES_OF = {"psycopg-pool": "psycopg_pool"}  # distribution -> module, where they differ


@pytest.mark.parametrize("asset", sorted(HANDLERS_BY_ASSET))
def test_every_handler_imports_without_what_its_asset_leaves_out(asset: str) -> None:
    # Given a Python where the asset's pruned packages cannot be imported
    blocked = [MODULES_OF.get(name, name) for name in ASSETS[asset].prune]  # type: ignore[index]
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        f"for handler in {HANDLERS_BY_ASSET[asset]!r}:\n"
        "    __import__('fusou_compaction.handlers.' + handler)\n"
    )
    # When the asset's handlers are imported, Then none of them needs a pruned package at import
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr


def test_assets_get_bytecode_compiled_by_the_runtimes_python(build_assets: ModuleType, tmp_path: Path) -> None:
    # Given a copy of the package as an asset holds it (no caches of this machine's interpreter)
    asset = tmp_path / "asset"
    shutil.copytree(
        FUNCTIONS_DIR / "fusou_compaction",
        asset / "fusou_compaction",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    sources = sorted(asset.rglob("*.py"))
    # When make build compiles it
    report = build_assets.compile_bytecode(asset)
    # Then every module has bytecode of the Lambda runtime's Python, usable without its source's mtime
    assert str(report["version"]).startswith(build_assets.LAMBDA_PYTHON_VERSION + ".")
    assert report["tag"] == "cpython-" + build_assets.LAMBDA_PYTHON_VERSION.replace(".", "")
    assert report["sources"] == report["compiled"] == len(sources)
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.{report['tag']}.pyc"
        header = pyc.read_bytes()[:8]
        assert header[:4].hex() == report["magic"]
        assert int.from_bytes(header[4:8], "little") == 0b01  # hash-based, unchecked: no mtime compare


def test_a_built_asset_ships_its_bytecode_and_the_source_never_does(tmp_path: Path) -> None:
    from fusou_infra.app import build_app

    # Given built assets (marker, package, bytecode of the runtime's Python)
    build = tmp_path / "build"
    for name in ASSETS:
        package = build / name / "fusou_compaction"
        (package / "__pycache__").mkdir(parents=True)
        (package / "__init__.py").write_text(f"# {name}\n")  # distinct content: one staged asset each
        (package / "__pycache__" / "__init__.cpython-314.pyc").write_bytes(b"pyc")
        (build / name / ".fusou-asset.json").write_text("{}")
    # When the app is synthesized from them
    out = tmp_path / "cdk.out"
    app, _, _ = build_app({"stage": "t", "assetsDir": str(build), "nag": "false"}, outdir=str(out))
    app.synth()
    # Then each staged asset holds the bytecode and not the build's marker
    staged = [d for d in out.iterdir() if d.is_dir() and d.name.startswith("asset.")]
    ours = [d for d in staged if (d / "fusou_compaction").is_dir()]
    assert len(ours) == len(ASSETS)
    for d in ours:
        assert (d / "fusou_compaction" / "__pycache__" / "__init__.cpython-314.pyc").is_file()
        assert not (d / ".fusou-asset.json").exists()
