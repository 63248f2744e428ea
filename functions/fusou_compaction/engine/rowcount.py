"""Rows of a Parquet file, counted as readers count them: from its row groups.

A footer states a file's row count twice: the file-level ``num_rows`` and each row group's.
Readers (pyarrow, DuckDB) decode row groups and never look at the file-level count, and an early
version of the Rust ``parquet`` crate (FUSOU's uploader is written in Rust) wrote files whose
file-level count says 0 while the row group holds the rows. Trusting the file-level count made
such a file look empty, and compaction retired it with its rows. So the count is the sum of the
row groups', each checked against its column chunks here (cheap: footer only) and against what
is decoded wherever rows are decoded (:func:`check_decoded`).

A file-level count that disagrees with the row groups is not an error: every reader goes by the
row groups, so that is what the file holds. A row group whose own count disagrees with its
columns is: readers then disagree with each other (pyarrow silently reads the row group's count
of rows, DuckDB refuses the file), so no count of ours could be trusted.

The same pass over the column chunks also bounds what each row group can decode to
(``FooterRows.decode_bounds``), for engine/read.py: a pass of its own cost as much again per
tiny fragment.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.parquet as pq


class RowCountMismatch(ValueError):
    """The footer's counts contradict each other or the decoded data; ``str()`` says where."""


@dataclass(frozen=True, slots=True)
class FooterRows:
    total: int  # sum of the row groups' counts: what readers decode
    row_groups: tuple[int, ...]
    file_level: int  # the footer's file-level num_rows, as written
    # Per row group, an upper bound of the Arrow bytes it decodes to, if the footer is honest:
    # a leaf value takes at most 16 bytes (an 8-byte value, validity, list offsets) plus the
    # longest string it can repeat, and no value is longer than its column chunk's uncompressed
    # pages. Loose (a string column counts every value as long as its whole chunk), but it costs
    # nothing and lets engine/read.py look closer only at inputs that could decode big.
    decode_bounds: tuple[int, ...] = ()

    @property
    def file_level_disagrees(self) -> bool:
        return self.file_level != self.total


def count_rows(md: pq.FileMetaData) -> FooterRows:
    """The rows of a file from its row groups; raises RowCountMismatch on an inconsistent footer.

    Each row group's count is checked against its column chunks' value counts: a leaf that is not
    repeated holds exactly one value (or null) per row; a repeated leaf holds at least one level
    entry per row (an empty or null list still writes one).
    """
    schema = md.schema
    repeated = [schema.column(j).max_repetition_level > 0 for j in range(md.num_columns)]
    counts: list[int] = []
    bounds: list[int] = []
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        rows = rg.num_rows
        if rows < 0:
            raise RowCountMismatch(f"row group {i} says it holds {rows} rows")
        bound = 0
        for j, is_repeated in enumerate(repeated):
            column = rg.column(j)
            values = column.num_values
            bound += values * (16 + column.total_uncompressed_size)
            if values < rows if is_repeated else values != rows:
                raise RowCountMismatch(
                    f"row group {i} says it holds {rows} rows but column {schema.column(j).path!r} "
                    f"holds {values} values"
                )
        counts.append(rows)
        bounds.append(bound)
    return FooterRows(sum(counts), tuple(counts), md.num_rows, tuple(bounds))


def check_decoded(expected: int, decoded: int, where: str) -> None:
    """Raise RowCountMismatch unless ``decoded`` rows is what the footer promised for ``where``."""
    if decoded != expected:
        raise RowCountMismatch(f"{where}: the footer says {expected} rows but {decoded} were decoded")
