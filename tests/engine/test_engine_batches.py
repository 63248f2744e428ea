"""Small inputs are decoded several to a task (engine/read.py, Reader._batch): what each input's
rows become must not depend on which batch it fell in."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from engine_testkit import input_files, output_paths, run_bin, write_fragment

from fusou_compaction.engine import InputFile, LocalDirSink, MergeTuning, SchemaCastError, compact_bin
from fusou_compaction.engine.read import Piece


def _tiny(i: int, rows: int, wide: bool) -> pa.Table:
    # Two physical schemas side by side in the same batch: int32 and int64 "value".
    value_type = pa.int64() if wide else pa.int32()
    return pa.table(
        {
            "src": pa.array([i] * rows, pa.int32()),
            "value": pa.array(range(rows), value_type),
            # incompressible, so a few kilobytes of output hold few inputs
            "payload": pa.array([f"{i}-{r}-{random.Random(i * 1000 + r).getrandbits(160):040x}" for r in range(rows)]),
        }
    )


def test_outputs_list_exactly_the_inputs_whose_rows_they_hold(tmp_path: Path) -> None:
    # Given 300 tiny inputs of 0-40 rows with drifting types, and outputs that roll over every
    # few kilobytes, so batches of inputs are cut across row groups and outputs
    rng = random.Random(7)
    paths = [
        write_fragment(tmp_path / "in" / f"f{i:04d}.parquet", _tiny(i, rng.randint(0, 40), rng.random() < 0.5))
        for i in range(300)
    ]
    inputs = input_files(paths)
    tuning = MergeTuning(row_group_bytes=16 * 1024, read_ahead_bytes=64 * 1024, batch_bytes=32 * 1024)
    seen: list[str] = []

    # When they are compacted
    result = compact_bin(
        inputs,
        source_fs=pafs.LocalFileSystem(),
        open_output=LocalDirSink(tmp_path / "out"),
        target_file_size=24 * 1024,
        tuning=tuning,
        on_input_read=lambda f: seen.append(f.id),
    )

    # Then every output names, in order, exactly the inputs it holds rows of
    assert len(result.outputs) > 5
    by_src = {i: inp.id for i, inp in enumerate(inputs)}
    for out, path in zip(result.outputs, output_paths(tmp_path / "out"), strict=True):
        src = pq.read_table(path, columns=["src"]).column("src").to_pylist()
        holds = [by_src[s] for s in dict.fromkeys(src)]
        assert out.input_ids == holds, out.name
    # And progress reports each input once, in upload order (empty ones included)
    assert sorted(seen) == sorted(i.id for i in inputs)
    nonempty = [i.id for i, p in zip(inputs, paths, strict=True) if pq.read_metadata(p).num_rows]
    assert [s for s in seen if s in set(nonempty)] == nonempty
    # And the rows are those of the inputs, in upload order
    got = pa.concat_tables(pq.read_table(p) for p in output_paths(tmp_path / "out"))
    want = [_tiny(i, pq.read_metadata(p).num_rows, True) for i, p in enumerate(paths)]
    assert got.column("src").to_pylist() == [s for t in want for s in t.column("src").to_pylist()]
    assert got.column("payload").to_pylist() == [s for t in want for s in t.column("payload").to_pylist()]


def test_a_value_that_cannot_be_cast_names_its_input_inside_a_batch(tmp_path: Path) -> None:
    # Given small inputs with microsecond timestamps and, among them, one in milliseconds whose
    # value overflows microseconds (the unified type)
    def ts(unit: str, value: int) -> pa.Table:
        return pa.table({"at": pa.array([value, value], pa.timestamp(unit, "UTC"))})

    paths = [
        write_fragment(
            tmp_path / "in" / f"f{i:02d}.parquet",
            ts("ms", 9_300_000_000_000_000) if i == 6 else ts("us", 1_700_000_000_000_000 + i),
        )
        for i in range(12)
    ]

    # When they are compacted as one batch
    with pytest.raises(SchemaCastError) as caught:
        run_bin(input_files(paths), tmp_path / "out", tuning=MergeTuning(batch_inputs=64))

    # Then the error names the input that does not cast, and nothing is left behind
    assert caught.value.input_id == "in-0006"
    assert output_paths(tmp_path / "out") == []


@pytest.mark.parametrize(
    ("offset", "rows", "expected"),
    [(0, 3, ["a"]), (2, 2, ["a", "c"]), (3, 1, ["c"]), (0, 10, ["a", "c", "d"]), (8, 2, ["d"])],
)
def test_piece_names_the_inputs_of_a_slice(offset: int, rows: int, expected: list[str]) -> None:
    # Given a piece of three inputs of 3, 0 and 5 rows (plus an empty one between)
    piece = Piece((("a", 3), ("b", 0), ("c", 2), ("d", 5)), pa.table({"x": list(range(10))}), 80)

    # Then a slice names exactly the inputs with rows in it
    assert list(piece.ids_in(offset, rows)) == expected


def test_one_input_per_task_when_asked_gives_the_same_bytes(tmp_path: Path) -> None:
    # Given drifting tiny inputs
    paths = [write_fragment(tmp_path / "in" / f"f{i:03d}.parquet", _tiny(i, 5 + i % 7, i % 3 == 0)) for i in range(90)]
    inputs: list[InputFile] = input_files(paths)

    # When compacted in batches and one input per task
    batched = run_bin(inputs, tmp_path / "a", tuning=MergeTuning(batch_inputs=32))
    single = run_bin(inputs, tmp_path / "b", tuning=MergeTuning(batch_inputs=1))

    # Then the outputs are byte for byte the same
    assert [o.sha256 for o in batched.outputs] == [o.sha256 for o in single.outputs]
    assert pc.sum(pq.read_table(output_paths(tmp_path / "a")[0]).column("src")).as_py() == sum(
        i * (5 + i % 7) for i in range(90)
    )
