"""Synthetic KanColle battle-record fragments, with the schema drift real clients produce.

Used by the engine tests, the benchmark and the demo. Generation is vectorized with Arrow compute
(seeded ``pc.random``), so ten million rows take seconds, and numpy is not needed.

Drift, drawn per fragment when ``drift=True`` (mixed client versions upload side by side):
- an extra nullable column that newer clients add (in ``air_battle`` a new struct field);
- a widened integer (``cell_id`` int16 -> int32, ``exp`` int32 -> int64, ``level`` int16 -> int32);
- low-cardinality strings written dictionary-encoded by some clients, plain by others;
- timestamps in ms or us, zone UTC, Asia/Tokyo or none;
- a column that is all null written with Arrow's null type;
- empty (zero-row) fragments;
- with ``storage_drift=True`` (off by default, so existing seeds give the same bytes): the
  compression codec (snappy, zstd, gzip or none) and several row groups in some fragments.

``ship_state_wide`` (not in ``TABLE_NAMES``) is a wide snapshot table: ~70 columns, most of them
small scalars, plus ``list<struct<...>>`` of equipment and special effects.
"""

from __future__ import annotations

import dataclasses
import io
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TABLE_NAMES: tuple[str, ...] = ("battle", "hougeki", "air_battle", "ship_state")
WIDE_TABLE_NAMES: tuple[str, ...] = ("ship_state_wide",)
# Relative row counts: a battle has many shelling rows, a snapshot many ships.
_ROW_WEIGHT = {"battle": 0.5, "hougeki": 2.0, "air_battle": 0.5, "ship_state": 1.0, "ship_state_wide": 1.0}
# Parquet codecs clients write with (pyarrow's names; "none" is uncompressed).
CODECS: tuple[str, ...] = ("snappy", "zstd", "gzip", "none")

_SHIP_BASE = [
    "Fubuki",
    "Shirayuki",
    "Hatsuyuki",
    "Murakumo",
    "Ayanami",
    "Shikinami",
    "Akatsuki",
    "Hibiki",
    "Ikazuchi",
    "Inazuma",
    "Kongou",
    "Hiei",
    "Haruna",
    "Kirishima",
    "Nagato",
    "Mutsu",
    "Yamato",
    "Musashi",
    "Akagi",
    "Kaga",
    "Souryuu",
    "Hiryuu",
    "Shoukaku",
    "Zuikaku",
    "Taihou",
    "Mogami",
    "Mikuma",
    "Suzuya",
    "Kumano",
    "Tone",
    "Chikuma",
    "Myoukou",
    "Nachi",
    "Ashigara",
    "Haguro",
    "Takao",
    "Atago",
    "Maya",
    "Choukai",
    "Yuubari",
    "Shimakaze",
    "Yukikaze",
    "Amatsukaze",
    "Tokitsukaze",
    "Kasumi",
    "Asashio",
    "Ooshio",
]
SHIP_NAMES: tuple[str, ...] = tuple(f"{n}{s}" for n in _SHIP_BASE for s in ("", " Kai", " Kai Ni", " Kai Ni B"))
MAP_IDS: tuple[str, ...] = tuple(f"{a}-{b}" for a in range(1, 8) for b in range(1, 6))
RANKS: tuple[str, ...] = ("S", "A", "B", "C", "D", "E")
SHIP_TYPES: tuple[str, ...] = ("DD", "CL", "CLT", "CA", "CAV", "BB", "BBV", "CV", "CVL", "CVB", "SS", "SSV", "AV")
_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
_INT64 = pa.int64()


class Rng:
    """Seeded, vectorized random columns: one Python call per column, never per row."""

    def __init__(self, seed: str | int) -> None:
        self._py = random.Random(seed)  # noqa: S311  (synthetic data, seeded on purpose)

    def uniform(self, n: int) -> pa.DoubleArray:
        return pc.random(n, initializer=self._py.getrandbits(63))  # type: ignore[no-any-return]

    def integers(self, lo: int, hi: int, n: int, t: pa.DataType = _INT64) -> pa.Array[Any]:
        """Uniform integers in [lo, hi)."""
        scaled = pc.floor(pc.multiply(self.uniform(n), float(hi - lo)))
        return pc.add(pc.cast(scaled, pa.int64()), lo).cast(t)

    def bools(self, p: float, n: int) -> pa.BooleanArray:
        return pc.less(self.uniform(n), p)  # type: ignore[call-overload, no-any-return]

    def pick(self, values: Sequence[str], n: int) -> pa.Array[Any]:
        return pa.array(values, pa.string()).take(self.integers(0, len(values), n))

    def random(self) -> float:
        return self._py.random()

    def choice(self, n: int) -> int:
        return self._py.randrange(n)

    def uuid_strings(self, n: int) -> pa.StringArray:
        """n random UUID-formatted strings, built from one hex buffer."""
        hexed = self._py.randbytes(16 * n).hex().encode()
        offsets = pa.array(range(0, 32 * n + 1, 32), pa.int32())
        raw = pa.Array.from_buffers(pa.string(), n, [None, offsets.buffers()[1], pa.py_buffer(hexed)])
        parts = [pc.utf8_slice_codeunits(raw, a, b) for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))]
        return pc.binary_join_element_wise(*parts, "-")  # type: ignore[call-overload, no-any-return]


def _arange(n: int) -> pa.Array[Any]:
    return pc.subtract(pc.cumulative_sum(pa.repeat(1, n)), 1) if n else pa.array([], pa.int64())


@dataclass(frozen=True, slots=True)
class Drift:
    """How one fragment's client differs from the baseline."""

    extra_column: bool = False
    wide_ints: bool = False
    dictionary_strings: bool = False
    ts_unit: str = "ms"
    ts_tz: str | None = "UTC"
    null_typed_column: bool = False
    empty: bool = False
    codec: str = "snappy"  # one of CODECS
    row_groups: int = 1  # row groups the fragment's rows are split into (as evenly as possible)

    @staticmethod
    def draw(rng: random.Random, *, storage: bool = False) -> Drift:
        """A random client; ``storage`` also draws the codec and row-group count (extra draws
        after the others, so without it a seed gives the same drifts as before)."""
        d = Drift(
            extra_column=rng.random() < 0.3,
            wide_ints=rng.random() < 0.4,
            dictionary_strings=rng.random() < 0.5,
            ts_unit=rng.choice(["ms", "us"]),
            ts_tz=rng.choice([None, "UTC", "Asia/Tokyo"]),
            null_typed_column=rng.random() < 0.1,
            empty=rng.random() < 0.01,
        )
        if not storage:
            return d
        # Desktop clients mostly write snappy; others zstd, gzip or nothing. ~25% of fragments
        # are written in 2-4 row groups (a client flushing as it goes).
        codec = rng.choices(CODECS, weights=(4, 2, 1, 1))[0]
        row_groups = rng.choice((1, 1, 1, 2, 3, 4)) if rng.random() < 0.5 else 1
        return dataclasses.replace(d, codec=codec, row_groups=row_groups)


@dataclass(frozen=True, slots=True)
class SynthFragment:
    table: str
    seq: int
    name: str
    data: bytes
    rows: int


def _lists(rng: Rng, n: int, lo: int, hi: int, values: Callable[[int], pa.Array[Any]]) -> pa.Array[Any]:
    lengths = rng.integers(lo, hi + 1, n, pa.int32())
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(lengths)])
    return pa.ListArray.from_arrays(offsets, values(offsets[-1].as_py()))  # type: ignore[no-any-return, call-overload]


def _ints(rng: Rng, lo: int, hi: int, t: pa.DataType) -> Callable[[int], pa.Array[Any]]:
    return lambda total: rng.integers(lo, hi, total, t)


def _timestamps(rng: Rng, n: int, seq: int, drift: Drift) -> pa.Array[Any]:
    ms = pc.add(rng.integers(0, 600_000, n).sort(), _EPOCH_MS + seq * 600_000)
    values = pc.multiply(ms, 1000) if drift.ts_unit == "us" else ms
    return values.cast(pa.timestamp(drift.ts_unit, tz=drift.ts_tz))


def _with_nulls(rng: Rng, arr: pa.Array[Any], fraction: float) -> pa.Array[Any]:
    return pc.if_else(rng.bools(fraction, len(arr)), pa.scalar(None, arr.type), arr)  # type: ignore[no-any-return]


def _battle(rng: Rng, n: int, seq: int, d: Drift) -> dict[str, pa.Array[Any]]:
    wide = d.wide_ints
    cols: dict[str, pa.Array[Any]] = {
        "battle_id": rng.uuid_strings(n),
        "user_id": rng.pick(["u-7f3a", "u-11c0", "u-9d42"], n),
        "battle_at": _timestamps(rng, n, seq, d),
        "map_id": rng.pick(MAP_IDS, n),
        "cell_id": rng.integers(0, 30, n, pa.int32() if wide else pa.int16()),
        "formation": rng.integers(1, 7, n, pa.int16()),
        "enemy_fleet_id": rng.integers(1, 20_000, n, pa.int32()),
        "rank": rng.pick(RANKS, n),
        "exp": rng.integers(0, 5000, n, pa.int64() if wide else pa.int32()),
        "ship_ids": _lists(rng, n, 4, 6, _ints(rng, 1, 1500, pa.int32())),
        "hp_before": _lists(rng, n, 6, 6, _ints(rng, 1, 100, pa.int16())),
        "hp_after": _lists(rng, n, 6, 6, _ints(rng, 0, 100, pa.int16())),
        "drop_ship_id": _with_nulls(rng, rng.integers(1, 1500, n, pa.int32()), 0.5),
        "drop_ship_name": (
            pa.nulls(n, pa.null()) if d.null_typed_column else _with_nulls(rng, rng.pick(SHIP_NAMES, n), 0.5)
        ),
    }
    if d.extra_column:
        cols["smoke_type"] = _with_nulls(rng, rng.integers(0, 4, n, pa.int16()), 0.7)
    return cols


def _hougeki(rng: Rng, n: int, seq: int, d: Drift) -> dict[str, pa.Array[Any]]:
    per_battle = 12
    index = _arange(n)
    cols: dict[str, pa.Array[Any]] = {
        "battle_id": rng.uuid_strings(n // per_battle + 1).take(pc.divide(index, per_battle)),
        "at": _timestamps(rng, n, seq, d),
        "phase": rng.integers(1, 4, n, pa.int16()),
        "turn": pc.remainder(index, per_battle).cast(pa.int16()),  # type: ignore[attr-defined]
        "attacker_index": rng.integers(0, 12, n, pa.int16()),
        "attack_type": rng.integers(0, 8, n, pa.int16()),
        "defender_index": _lists(rng, n, 1, 2, _ints(rng, 0, 12, pa.int16())),
        "damage": _lists(rng, n, 1, 2, _ints(rng, 0, 300, pa.int32())),
        "critical": _lists(rng, n, 1, 2, lambda total: rng.bools(0.2, total)),
        "equipment_ids": _lists(rng, n, 0, 4, _ints(rng, 1, 500, pa.int32())),
    }
    if d.extra_column:
        cols["night_flag"] = _with_nulls(rng, rng.bools(0.3, n), 0.5)
    return cols


def _air_battle(rng: Rng, n: int, seq: int, d: Drift) -> dict[str, pa.Array[Any]]:
    def stage(extra: bool, null_fraction: float) -> pa.StructArray:
        names = ["f_count", "f_lost", "e_count", "e_lost", "disp_seiku"]
        arrays = [
            rng.integers(0, 200, n, pa.int32()),
            rng.integers(0, 50, n, pa.int32()),
            rng.integers(0, 200, n, pa.int32()),
            rng.integers(0, 150, n, pa.int32()),
            rng.integers(0, 5, n, pa.int16()),
        ]
        if extra:  # a newer client adds a field inside the struct
            names.append("air_fire_idx")
            arrays.append(_with_nulls(rng, rng.integers(0, 40, n, pa.int32()), 0.6))
        mask = rng.bools(null_fraction, n) if null_fraction else None
        return pa.StructArray.from_arrays(arrays, names=names, mask=mask)

    return {
        "battle_id": rng.uuid_strings(n),
        "at": _timestamps(rng, n, seq, d),
        "stage_flag": _lists(rng, n, 3, 3, _ints(rng, 0, 2, pa.int16())),
        "plane_from": _lists(rng, n, 0, 2, _ints(rng, 0, 7, pa.int16())),
        "stage1": stage(d.extra_column, 0.0),
        "stage2": stage(False, 0.4),
        "touch_plane": _lists(rng, n, 2, 2, _ints(rng, -1, 300, pa.int32())),
    }


def _ship_state(rng: Rng, n: int, seq: int, d: Drift) -> dict[str, pa.Array[Any]]:
    ship_idx = rng.integers(0, len(SHIP_NAMES), n, pa.int32())
    cols: dict[str, pa.Array[Any]] = {
        "snapshot_at": _timestamps(rng, n, seq, d),
        "ship_uid": rng.integers(1, 100_000_000, n, pa.int64()),
        "ship_id": pc.add(ship_idx, pa.scalar(1, pa.int32())),
        "ship_name": pa.array(SHIP_NAMES, pa.string()).take(ship_idx),
        "level": rng.integers(1, 180, n, pa.int32() if d.wide_ints else pa.int16()),
        "cond": rng.integers(0, 100, n, pa.int16()),
        "nowhp": rng.integers(0, 100, n, pa.int16()),
        "maxhp": rng.integers(10, 100, n, pa.int16()),
        "fuel": rng.integers(0, 200, n, pa.int32()),
        "bull": rng.integers(0, 200, n, pa.int32()),
        "slot": _lists(rng, n, 5, 5, _ints(rng, -1, 2000, pa.int32())),
        "exp": rng.integers(0, 10_000_000, n, pa.int64()),
        "locked": rng.bools(0.8, n),
    }
    if d.extra_column:
        cols["sp_effect"] = _with_nulls(rng, rng.pick(["none", "fire", "smoke"], n), 0.8)
    return cols


_WIDE_STATS = ("karyoku", "raisou", "taiku", "soukou", "kaihi", "taisen", "sakuteki", "lucky")


def _ship_state_wide(rng: Rng, n: int, seq: int, d: Drift) -> dict[str, pa.Array[Any]]:
    """A port snapshot as the game's ship list gives it: one row per ship, ~70 columns."""
    ship_idx = rng.integers(0, len(SHIP_NAMES), n, pa.int32())
    i16, i32 = pa.int16(), pa.int32()
    cols: dict[str, pa.Array[Any]] = {
        "snapshot_at": _timestamps(rng, n, seq, d),
        "user_id": rng.pick(["u-7f3a", "u-11c0", "u-9d42"], n),
        "ship_uid": rng.integers(1, 100_000_000, n, pa.int64()),
        "ship_id": pc.add(ship_idx, pa.scalar(1, i32)),
        "sortno": rng.integers(1, 2000, n, i32),
        "ship_name": pa.array(SHIP_NAMES, pa.string()).take(ship_idx),
        "ship_type": rng.pick(SHIP_TYPES, n),
        "level": rng.integers(1, 180, n, i32 if d.wide_ints else i16),
        "exp": rng.integers(0, 10_000_000, n, pa.int64() if d.wide_ints else i32),
        "exp_next": rng.integers(0, 200_000, n, i32),
        "exp_progress": rng.integers(0, 100, n, i16),
        "nowhp": rng.integers(0, 100, n, i16),
        "maxhp": rng.integers(10, 100, n, i16),
        "soku": rng.integers(0, 4, n, i16),
        "leng": rng.integers(1, 5, n, i16),
        "slotnum": rng.integers(1, 6, n, i16),
        "fuel": rng.integers(0, 200, n, i32),
        "bull": rng.integers(0, 200, n, i32),
        "cond": rng.integers(0, 100, n, i16),
        "srate": rng.integers(0, 6, n, i16),
        "backs": rng.integers(1, 8, n, i16),
        "ndock_time": _with_nulls(rng, rng.integers(0, 86_400_000, n, pa.int64()), 0.8),
        "ndock_fuel": rng.integers(0, 400, n, i32),
        "ndock_steel": rng.integers(0, 800, n, i32),
        "sally_area": _with_nulls(rng, rng.integers(0, 10, n, i16), 0.7),
        "locked": rng.bools(0.8, n),
        "locked_equip": rng.bools(0.5, n),
        "married": rng.bools(0.05, n),
    }
    for stat in _WIDE_STATS:
        cols[f"{stat}_now"] = rng.integers(0, 200, n, i16)
        cols[f"{stat}_max"] = rng.integers(50, 250, n, i16)
    for k in range(5):
        cols[f"kyouka_{k}"] = rng.integers(0, 60, n, i16)
    for k in range(5):
        cols[f"onslot_{k}"] = rng.integers(0, 80, n, i16)
    for k in range(5):
        cols[f"slot_{k}"] = rng.integers(-1, 200_000, n, i32)
    cols["slot_ex"] = _with_nulls(rng, rng.integers(-1, 200_000, n, i32), 0.4)
    cols["hp_ratio"] = rng.uniform(n)
    cols["fuel_ratio"] = rng.uniform(n)
    cols["bull_ratio"] = rng.uniform(n)
    cols["remodel_stage"] = rng.integers(0, 4, n, i16)
    cols["fleet_id"] = _with_nulls(rng, rng.integers(1, 5, n, i16), 0.9)
    cols["fleet_pos"] = _with_nulls(rng, rng.integers(0, 7, n, i16), 0.9)
    cols["note"] = pa.nulls(n, pa.null()) if d.null_typed_column else _with_nulls(rng, rng.pick(MAP_IDS, n), 0.95)

    def equipment(total: int) -> pa.StructArray:
        names = ["slot_id", "item_id", "level", "alv", "locked"]
        arrays = [
            rng.integers(1, 200_000, total, i32),
            rng.integers(1, 500, total, i32),
            rng.integers(0, 11, total, i16),
            _with_nulls(rng, rng.integers(0, 8, total, i16), 0.6),
            rng.bools(0.7, total),
        ]
        if d.extra_column:  # a newer client adds a field inside the list's struct
            names.append("proficiency")
            arrays.append(_with_nulls(rng, rng.integers(0, 121, total, i16), 0.5))
        return pa.StructArray.from_arrays(arrays, names=names)

    def sp_effects(total: int) -> pa.StructArray:
        arrays = [rng.integers(1, 3, total, i16)] + [rng.integers(0, 3, total, i16) for _ in range(4)]
        return pa.StructArray.from_arrays(arrays, names=["kind", "houg", "raig", "souk", "kaih"])

    cols["equipment"] = _lists(rng, n, 0, 5, equipment)
    cols["sp_effect_items"] = _lists(rng, n, 0, 1, sp_effects)
    if d.extra_column:
        cols["sp_effect"] = _with_nulls(rng, rng.pick(["none", "fire", "smoke"], n), 0.8)
    return cols


_BUILDERS = {
    "battle": _battle,
    "hougeki": _hougeki,
    "air_battle": _air_battle,
    "ship_state": _ship_state,
    "ship_state_wide": _ship_state_wide,
}
_LOW_CARDINALITY = {"user_id", "map_id", "rank", "drop_ship_name", "ship_name", "sp_effect", "ship_type"}


def make_table(table: str, rows: int, *, seed: int = 0, seq: int = 0, drift: Drift | None = None) -> pa.Table:
    """One fragment's rows for ``table``, as a client of the given drift would write them."""
    if table not in _BUILDERS:
        raise ValueError(f"unknown table {table!r}; choose from {TABLE_NAMES + WIDE_TABLE_NAMES}")
    d = drift or Drift()
    rng = Rng(f"{seed}:{seq}:{table}")
    out = pa.table(_BUILDERS[table](rng, 0 if d.empty else rows, seq, d))
    if d.dictionary_strings:
        # Some clients dictionary-encode low-cardinality strings in Arrow before writing.
        for i, f in enumerate(out.schema):
            if f.name in _LOW_CARDINALITY and pa.types.is_string(f.type):
                out = out.set_column(i, f.name, out.column(i).dictionary_encode())
    return out


def fragment_bytes(table: pa.Table, *, row_group_size: int | None = None, compression: str = "snappy") -> bytes:
    buf = io.BytesIO()
    # snappy: what desktop clients write by default
    pq.write_table(table, buf, compression=compression, row_group_size=row_group_size)  # type: ignore[arg-type]
    return buf.getvalue()


def drifted_fragment_bytes(table: pa.Table, drift: Drift) -> bytes:
    """The fragment as the drift's client writes it: its codec, its number of row groups."""
    size = math.ceil(table.num_rows / drift.row_groups) if drift.row_groups > 1 and table.num_rows else None
    return fragment_bytes(table, row_group_size=size, compression=drift.codec)


def iter_fragments(
    *,
    tables: Iterable[str] = TABLE_NAMES,
    fragments: int = 10,
    rows_per_fragment: int = 5000,
    seed: int = 0,
    drift: bool = True,
    storage_drift: bool = False,
    rows_range: tuple[int, int] | None = None,
) -> Iterator[SynthFragment]:
    """In-memory fragments, ``fragments`` per table, interleaved in upload order (seq).

    ``storage_drift`` adds codec and row-group drift (needs ``drift``); ``rows_range`` (lo, hi)
    draws each fragment's rows uniformly from it instead of around ``rows_per_fragment``.
    """
    names = list(tables)
    for name in names:
        if name not in _BUILDERS:
            raise ValueError(f"unknown table {name!r}; choose from {TABLE_NAMES + WIDE_TABLE_NAMES}")
    rng = random.Random(f"fragments:{seed}")  # noqa: S311
    seq = 0
    for k in range(fragments):
        for name in names:
            d = Drift.draw(rng, storage=storage_drift) if drift else Drift()
            if rows_range is not None:
                rows = rng.randint(*rows_range)
            else:
                mean = rows_per_fragment * _ROW_WEIGHT[name]
                rows = rng.randint(int(mean * 0.5), int(mean * 1.5))
            t = make_table(name, rows, seed=seed, seq=seq, drift=d)
            yield SynthFragment(name, seq, f"frag-{k:06d}.parquet", drifted_fragment_bytes(t, d), t.num_rows)
            seq += 1


def generate_fragments(
    out_dir: str | Path,
    *,
    tables: Iterable[str] = TABLE_NAMES,
    fragments: int = 10,
    rows_per_fragment: int = 5000,
    seed: int = 0,
    drift: bool = True,
    storage_drift: bool = False,
    rows_range: tuple[int, int] | None = None,
) -> list[Path]:
    """Write fragments to ``out_dir/<table>/frag-NNNNNN.parquet``; returns their paths in seq order."""
    out = Path(out_dir)
    paths: list[Path] = []
    for frag in iter_fragments(
        tables=tables,
        fragments=fragments,
        rows_per_fragment=rows_per_fragment,
        seed=seed,
        drift=drift,
        storage_drift=storage_drift,
        rows_range=rows_range,
    ):
        path = out / frag.table / frag.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(frag.data)
        paths.append(path)
    return paths
