"""The metadata tables of the raw BIOSCAN releases (CSV/TSV), parsed in blocks with numpy.

:class:`Table` checks the header, streams rows, or cuts the file into blocks of about 1 MB of whole lines;
:meth:`Table.widest` scans the file once, with numpy over the raw bytes, for the widest value of each column
(the HDF5 stores fixed-width strings). :class:`BlockSpec` cuts one block's wanted cells at the separator
positions found by numpy and hands them on column by column as UTF-8 bytes, exactly as the csv module would
read them (a block with quotes, NULs or bare CRs is parsed as text instead). The cell helpers clean ranks
(:func:`clean_ranks`), strip whitespace as ``str.strip`` does (:func:`stripped_cells`), make fixed-width
arrays (:func:`bytes_column`) and pick rows (:func:`rows_picker`). The csv module parses one row at a time
in Python objects: too slow for 5 million rows of 23 columns, hence this module.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from pathlib import Path

import numpy as np

from bioclip_cli.data.taxonomy import clean_rank
from bioclip_cli.errors import DataError

_STR_ONLY_SPACE = (b"\x1c", b"\x1d", b"\x1e", b"\x1f")  # ASCII whitespace to str.strip, not to bytes.strip
_BLOCK_CHARS = 1 << 20  # metadata characters parsed per block


@dataclass(frozen=True, slots=True)
class BlockSpec:
    """Where the cells of a block are: the file (for errors), delimiter, header width, column indices."""

    path: str
    delimiter: str
    width: int
    idx: tuple[int | None, ...]

    def cells(self, block: bytes) -> tuple[int, list[list[bytes]]]:
        """The rows of a block of whole lines and its cells at `idx`, column-wise, as UTF-8 bytes: exactly what
        the csv module reads (a column the file lacks, or a cell a short row lacks, is empty).

        A plain block (no quote, NUL or bare CR; every line as wide as the header) is cut at the positions of
        its separators (numpy), only the wanted cells made into objects; any other is parsed as text."""
        if not block.isascii():
            try:
                block.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    self.path,
                    f"{self.path} is not UTF-8 text ({exc.reason} in a block of {len(block):,} bytes)",
                    "save the metadata as UTF-8",
                ) from None
        crs = block.count(b"\r") if b"\r" in block else 0  # (`in` is a fast scan, count is not)
        if b'"' not in block and b"\0" not in block and (not crs or crs == block.count(b"\r\n")):
            cut = _plain_cells(block.replace(b"\r\n", b"\n") if crs else block, self.delimiter, self.width, self.idx)
            if cut is not None:
                return cut
        n, columns = _block_columns(block.decode("utf-8"), self.delimiter, self.width, list(self.idx))
        return n, [[cell.encode("utf-8") for cell in column] for column in columns]


class Table:
    """A CSV/TSV read as a stream of rows or of column blocks; the header is checked on construction and
    ``columns`` maps each name to its index."""

    def __init__(self, path: Path, delimiter: str, required: tuple[str, ...], any_of: tuple[str, ...] = ()):
        self.path = path
        self.delimiter = delimiter
        with open(path, "rb") as fh:
            first = fh.readline()
        try:
            header = next(csv.reader([first.decode("utf-8")], delimiter=delimiter), [])
        except UnicodeDecodeError as exc:
            raise DataError(path, f"{path} is not UTF-8 text ({exc.reason} in its header)") from None
        missing = [c for c in required if c not in header]
        if any_of and not set(any_of) & set(header):
            missing.append(" or ".join(any_of))
        if missing:
            raise DataError(path, f"{path} lacks column(s) {', '.join(missing)}; it has: {', '.join(header)}")
        self.header = header
        self.columns = {name: i for i, name in reversed(list(enumerate(header)))}  # first one wins

    def __iter__(self) -> Iterator[list[str]]:
        """The rows after the header, as ``csv.reader`` gives them (a blank line is ``[]``)."""
        for block in self._blocks():
            yield from _split_lines(block, self.delimiter)

    def spec(self, names: Sequence[str]) -> BlockSpec:
        """Where the cells of the columns `names` are (a column the file lacks reads as ``""``)."""
        return BlockSpec(str(self.path), self.delimiter, len(self.header), tuple(self.columns.get(n) for n in names))

    def raw_blocks(self) -> Iterator[bytes]:
        """The bytes after the header in blocks of whole lines (see :meth:`_blocks`)."""
        return self._blocks(binary=True)

    def column_blocks(self, names: Sequence[str]) -> Iterator[tuple[int, list[list[bytes]]]]:
        """``(rows, columns)`` per block of rows: the cells of the columns `names` as UTF-8 bytes (a column the
        file lacks, or a cell a short row lacks, is empty), exactly what :meth:`__iter__` gives, column-wise
        (what :class:`Parse5M` and :class:`Parse1M` parse; see :meth:`BlockSpec.cells`)."""
        spec = self.spec(names)
        for block in self.raw_blocks():
            yield spec.cells(block)

    def widest(self, names: Sequence[str], progress=None) -> tuple[int, list[int]]:
        """The number of rows and, per column of `names`, the widest cell in UTF-8 bytes (0 for a column the
        file lacks). The cell lengths of a plain block (no quotes, every line as wide as the header) come from
        the positions of its separators (numpy, no str objects); other blocks are parsed. `progress(nbytes)` is
        called after each block."""
        rows = 0
        widest = [0] * len(names)
        for nbytes, n, found in map(_BlockWidths(self.spec(names)), self.raw_blocks()):
            rows += n
            widest = [max(w, f) for w, f in zip(widest, found)]
            if progress is not None:
                progress(nbytes)
        return rows, widest

    def _blocks(self, binary: bool = False) -> Iterator:
        """The text after the header in blocks of whole lines (each ending with a newline); bytes when `binary`
        (cut at the same lines: a newline byte is never inside a UTF-8 character).

        A block is extended until its quotes balance, so that no quoted field is cut."""
        newline, quote = (b"\n", b'"') if binary else ("\n", '"')
        with open(self.path, "rb") if binary else open(self.path, newline="", encoding="utf-8") as fh:
            fh.readline()  # the header (checked in __init__)
            tail = newline[:0]
            while True:
                block = fh.read(_BLOCK_CHARS)
                if not block:
                    break
                block = tail + block
                cut = block.rfind(newline) + 1
                if cut == 0:  # no line end yet: read on
                    tail = block
                    continue
                block, tail = block[:cut], block[cut:]
                if quote in block and block.count(quote) % 2:  # a quoted field runs on: read on
                    tail = block + tail
                    continue
                yield block
            if tail:
                yield tail if tail.endswith(newline) else tail + newline


def _block_columns(block: str, delimiter: str, width: int, idx: list[int | None]) -> tuple[int, list[list[str]]]:
    """The rows of a block of whole lines and its cells at `idx`, column-wise (see :meth:`Table.column_blocks`)."""
    crs = block.count("\r") if "\r" in block else 0
    if '"' not in block and "\0" not in block and (not crs or crs == block.count("\r\n")):
        if crs:
            block = block.replace("\r\n", "\n")
        lines = block.split("\n")
        lines.pop()  # after the last newline
        if set(map(str.count, lines, repeat(delimiter))) == {width - 1}:
            n = len(lines)
            cells = block[:-1].replace("\n", delimiter).split(delimiter)
            return n, [cells[i::width] if i is not None else [""] * n for i in idx]
        rows = [line.split(delimiter) if line else [] for line in lines]
    else:
        rows = list(_split_lines(block, delimiter))
    picked = [_pad(row, idx) for row in rows]
    return len(rows), [list(col) for col in zip(*picked)] if picked else [[] for _ in idx]


@dataclass(frozen=True, slots=True)
class _BlockWidths:
    """``(bytes, rows, widest cell per column)`` of a block (see :meth:`Table.widest`)."""

    spec: BlockSpec

    def __call__(self, block: bytes) -> tuple[int, int, list[int]]:
        crs = block.count(b"\r") if b"\r" in block else 0  # (`in` is a fast scan, count is not)
        plain = b'"' not in block and b"\0" not in block and (not crs or crs == block.count(b"\r\n"))
        lengths = _cell_lengths(block, self.spec.delimiter, self.spec.width) if plain else None  # bare CR: parse
        if lengths is not None:
            n = len(lengths)
            top = lengths.max(axis=0).tolist() if n else [0] * self.spec.width
            return len(block), n, [top[i] if i is not None else 0 for i in self.spec.idx]
        n, columns = self.spec.cells(block)
        return len(block), n, [max(map(len, cells), default=0) for cells in columns]


def bytes_column(values: list[bytes]) -> np.ndarray:
    """A column of byte strings as a fixed-width array, as wide as the widest (at least 1)."""
    return np.fromiter(values, dtype=f"S{max(1, max(map(len, values), default=1))}", count=len(values))


def _plain_cells(block: bytes, delimiter: str, width: int, idx: tuple[int | None, ...]):
    """``(rows, cells at idx column-wise)`` of a block of whole lines with no quote, NUL or CR, or None when a
    line is not `width` cells wide. The cells are cut at the separator positions found by numpy."""
    ends = _cell_ends(block, delimiter, width)
    if ends is None:
        return None
    n = len(ends)
    line_starts = np.empty(n, dtype=ends.dtype)
    line_starts[:1] = 0
    line_starts[1:] = ends[:-1, -1] + 1
    cut = block.__getitem__
    columns = []
    for i in idx:
        if i is None:
            columns.append([b""] * n)
            continue
        starts = (ends[:, i - 1] + 1 if i else line_starts).tolist()
        columns.append(list(map(cut, map(slice, starts, ends[:, i].tolist()))))
    return n, columns


def _cell_ends(block: bytes, delimiter: str, width: int) -> np.ndarray | None:
    """[rows, width] positions of the separator or newline that ends each cell of a block of whole lines, or
    None when a line is not `width` cells wide."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero((data == ord(delimiter)) | (data == ord("\n")))
    n = len(ends) // width
    newline = data[ends] == ord("\n")
    if len(ends) != n * width or np.count_nonzero(newline) != n or not newline[width - 1 :: width].all():
        return None
    return ends.reshape(n, width)


def _cell_lengths(block: bytes, delimiter: str, width: int) -> np.ndarray | None:
    """[rows, width] byte lengths of the cells of a block of whole lines, or None when a line is not `width`
    cells wide (then the block is parsed instead). A CR before the newline counts in the last cell."""
    ends = _cell_ends(block, delimiter, width)
    if ends is None:
        return None
    flat = ends.reshape(-1)
    starts = np.empty_like(flat)
    starts[:1] = 0
    starts[1:] = flat[:-1] + 1
    return (flat - starts).reshape(ends.shape)


_RANKS: dict[bytes, bytes] = {}  # raw rank cell -> clean_rank(cell): a few thousand distinct values repeat


def clean_ranks(cells: list[bytes]) -> list[bytes]:
    """:func:`clean_rank` of every cell (UTF-8 bytes; through a cache of the distinct values)."""
    out = list(map(_RANKS.get, cells))
    if None in out:
        for i, value in enumerate(out):
            if value is None:
                cell = cells[i]
                value = out[i] = clean_rank(cell).encode("utf-8")
                if len(_RANKS) < 1 << 20:
                    _RANKS[cell] = value
    return out


def stripped_cells(cells: list[bytes]) -> list[bytes]:
    """Each UTF-8 cell with its leading and trailing whitespace removed, as ``str.strip`` removes it (bytes'
    strip where that is the same: ASCII without the information separators \\x1c-\\x1f)."""
    joined = b"".join(cells)
    if joined.isascii() and not any(space in joined for space in _STR_ONLY_SPACE):
        return list(map(bytes.strip, cells))
    return [cell.decode("utf-8").strip().encode("utf-8") for cell in cells]


def rows_picker(rows: np.ndarray, n: int) -> Callable[[list], list]:
    """A function that picks `rows` (indices) out of a list of length `n`, as a list (C-speed ``itemgetter``)."""
    if len(rows) == n and (n == 0 or (rows[0] == 0 and rows[-1] == n - 1)):  # all, in order
        return lambda cells: cells
    if len(rows) == 1:
        i = int(rows[0])
        return lambda cells: [cells[i]]
    if len(rows) == 0:
        return lambda cells: []
    pick = itemgetter(*rows.tolist())
    return lambda cells: list(pick(cells))


def _split_lines(block: str, delimiter: str) -> Iterator[list[str]]:
    """The rows of a block of whole lines (ending with a newline), as csv.reader parses them."""
    crs = block.count("\r")
    if '"' in block or "\0" in block or (crs and crs != block.count("\r\n")):  # quotes, NUL, a bare CR
        yield from csv.reader(io.StringIO(block, newline=""), delimiter=delimiter)
        return
    lines = block.split("\n")
    lines.pop()  # after the last newline
    crlf = crs > 0
    for line in lines:
        if crlf and line.endswith("\r"):
            line = line[:-1]
        yield line.split(delimiter) if line else []


def _pad(row: list[str], idx: list[int | None]) -> list[str]:
    """The cells at `idx` of a row (cells a short row lacks read as empty)."""
    return [row[i] if i is not None and i < len(row) else "" for i in idx]
