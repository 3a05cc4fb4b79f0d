"""Reader for the BIOSCAN HDF5 layout (docs/method.md, Data): the published 1M and 5M files and the ones we build.

One group per split; in a group, equally long datasets: ``image`` uint8 [N, L] (JPEG bytes, zero padded),
``image_mask`` [N] (byte lengths), the byte-string columns (``barcode``, ``order`` ... ``species``,
``sampleid``, ``image_file``, ``processid`` in 5M, ``dna_bin`` in 1M) and optionally the stored BERT
tokens ``language_tokens_{input_ids,attention_mask,token_type_ids}`` [N, 20].

:class:`BioscanH5` opens the file lazily and is fork-safe: each process (DataLoader worker) opens its own
h5py handle the first time it reads (the handle is reopened when ``os.getpid()`` changes) and pickling
keeps only the path. Strings come back decoded (UTF-8) as object arrays of ``str``; fixed-width and
variable-length string datasets are both accepted.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bioclip_cli.data.taxonomy import LEVELS, NOT_CLASSIFIED
from bioclip_cli.errors import DataError

STRING_COLUMNS: tuple[str, ...] = (
    "barcode",
    "order",
    "family",
    "genus",
    "species",
    "sampleid",
    "image_file",
    "processid",
    "dna_bin",
)
TOKEN_KEYS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
TOKEN_PREFIX = "language_tokens_"
_LENGTH_SOURCES = ("image_mask", "barcode", "species", "image_file", "processid", "sampleid")
_BLOCK = 65536  # rows read at once by the column readers: bounds memory on multi-million-row groups
_OPENINGS = itertools.count(1)  # numbers each opening of a file: readers made for one are not used with another
_MAX_CHUNK_TABLE = 1 << 22  # chunks whose file offsets a raw reader may remember (8 bytes each)


class BioscanH5:
    """A BIOSCAN HDF5 file, opened lazily once per process. Use :meth:`group` to read a split."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(
                self.path,
                f"dataset file {self.path} does not exist",
                f"build it with `bioclip build-hdf5 5m --root data/ --out {self.path}` or `bioclip download 5m`",
            )
        self._reset()

    def _reset(self) -> None:
        self._file = None
        self._pid: int | None = None
        self._datasets: dict[tuple[str, str], object] = {}
        self._fd: int | None = None
        self.opening = 0  # which opening of the file this process reads (0: none yet)

    def __getstate__(self) -> dict:  # nothing h5py crosses a pickle (DataLoader workers, spawn)
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._reset()

    @property
    def file(self):
        """The h5py.File of this process (opened on first use, reopened after a fork)."""
        if self._file is None or self._pid != os.getpid():
            import h5py

            self._datasets = {}
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(self.path, f"{self.path} is not a readable HDF5 file ({exc})") from exc
            self._pid = os.getpid()
            self._fd = None
            self.opening = next(_OPENINGS)
        return self._file

    def raw_fd(self) -> int:
        """A plain read-only descriptor of the file for this opening (``os.pread`` of raw-stored rows)."""
        self.file  # noqa: B018 -- opens, or reopens after a fork, first
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return self._fd

    def close(self) -> None:
        if self._pid == os.getpid():
            if self._file is not None:
                self._file.close()
            if self._fd is not None:
                os.close(self._fd)
        self._reset()

    def __enter__(self) -> BioscanH5:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def group_names(self) -> list[str]:
        import h5py

        return sorted(name for name, obj in self.file.items() if isinstance(obj, h5py.Group))

    def has_group(self, name: str) -> bool:
        return name in self.group_names()

    def group(self, name: str) -> GroupReader:
        names = self.group_names()
        if name not in names:
            raise DataError(
                self.path,
                f"{self.path} has no group {name!r}; its groups are: {', '.join(names) or '(none)'}",
                "check data.train_group / data.key_group / data.val_groups, or rebuild with `bioclip build-hdf5`",
            )
        return GroupReader(self, name)

    def dataset(self, group: str, name: str):
        key = (group, name)
        file = self.file  # may reset the cache after a fork
        ds = self._datasets.get(key)
        if ds is None:
            grp = file[group]
            if name not in grp:
                raise DataError(
                    self.path,
                    f"{self.path}: group {group!r} has no dataset {name!r}; it has: {', '.join(sorted(grp.keys()))}",
                    "rebuild the file with `bioclip build-hdf5` (add --text-tokenizer for language tokens)",
                )
            ds = grp[name]
            self._datasets[key] = ds
        return ds

    def __repr__(self) -> str:
        return f"BioscanH5({str(self.path)!r})"


class GroupReader:
    """One split of a :class:`BioscanH5`: per-row access for datasets, vectorised column access for the rest."""

    def __init__(self, h5: BioscanH5, name: str):
        self.h5 = h5
        self.name = name
        self._len: int | None = None
        self._image_lengths: np.ndarray | None = None
        self._row_readers: dict[str, _RowReader | _RawRows | None] = {}
        self._opening = 0  # the file opening the readers were made for
        self._names: list[str] | None = None

    def __getstate__(self) -> dict:
        keep = ("h5", "name", "_len", "_image_lengths", "_names")
        return {key: self.__dict__[key] for key in keep}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._row_readers, self._opening = {}, 0

    def _readers(self) -> dict:
        """The per-row readers made for the file's current opening (HDF5 ids survive neither a fork, after which
        each process opens the file again, nor a ``close()``)."""
        self.h5.file  # noqa: B018 -- opens, or reopens after a fork
        if self._opening != self.h5.opening:
            self._row_readers, self._opening = {}, self.h5.opening
        return self._row_readers

    def _rows_of(self, name: str) -> _RowReader:
        readers = self._readers()
        reader = readers.get(name)
        if reader is None:
            reader = readers[name] = _RowReader(self.dataset(name))
        return reader

    def _raw_images(self) -> _RawRows | None:
        readers = self._readers()
        if "image:raw" not in readers:
            readers["image:raw"] = _RawRows.open(self.dataset("image"), self.h5.raw_fd)
        return readers["image:raw"]

    # ----------------------------------------------------------------------------------- structure
    def names(self) -> list[str]:
        """The datasets of this group (read once; the file is opened read-only)."""
        if self._names is None:
            self._names = sorted(self.h5.file[self.name].keys())
        return self._names

    def has(self, name: str) -> bool:
        return name in self.names()

    def dataset(self, name: str):
        return self.h5.dataset(self.name, name)

    def __len__(self) -> int:
        if self._len is None:
            group = self.h5.file[self.name]
            for name in (*_LENGTH_SOURCES, *group.keys()):
                if name in group:
                    self._len = int(group[name].shape[0])
                    break
            else:
                self._len = 0
        return self._len

    def __repr__(self) -> str:
        return f"GroupReader({str(self.h5.path)!r}, {self.name!r}, rows={len(self)})"

    # ------------------------------------------------------------------------------------- images
    def image_lengths(self) -> np.ndarray:
        """``image_mask``: the JPEG byte length of every row (read once, then cached)."""
        if self._image_lengths is None:
            self._image_lengths = np.asarray(self.dataset("image_mask")[()], dtype=np.int64)
        return self._image_lengths

    @property
    def image_width(self) -> int:
        """L, the padded width of the ``image`` dataset."""
        return int(self.dataset("image").shape[1])

    def image_bytes(self, i: int) -> bytes:
        """Row `i`'s JPEG file bytes (the padded row cut at ``image_mask``): read straight from the file where
        HDF5 stores the rows raw (:class:`_RawRows`), through HDF5 otherwise."""
        i = self._check_row(i)
        n = int(self.image_lengths()[i])
        if n <= 0:
            return b""
        raw = self._raw_images()
        data = raw.read(i, n) if raw is not None else None
        return data if data is not None else self._rows_of("image").read(i, n).tobytes()

    # ------------------------------------------------------------------------------------ strings
    def string(self, name: str, i: int) -> str:
        """One decoded string cell."""
        value = self._rows_of(name).read(self._check_row(i))
        return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)

    def strings(self, name: str, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """A string column (or the given rows of it), decoded: object array of str."""
        return _decode(read_rows(self.dataset(name), rows))

    def taxonomy(self, rows: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``{order, family, genus, species}`` -> str arrays; empty cells read as ``not_classified``."""
        out = {}
        for level in LEVELS:
            values = self.strings(level, rows)
            values[values == ""] = NOT_CLASSIFIED
            out[level] = values
        return out

    @property
    def id_column(self) -> str:
        """The sample-id column: ``processid`` (5M) when present, else ``image_file`` (1M)."""
        return "processid" if self.has("processid") else "image_file"

    def sample_ids(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        return self.strings(self.id_column, rows)

    def barcodes(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        return self.strings("barcode", rows)

    def row(self, i: int) -> dict:
        """Everything about one specimen: id, image (bytes), barcode, order, family, genus, species."""
        out = {"id": self.string(self.id_column, i)}
        out["image"] = self.image_bytes(i) if self.has("image") else None
        out["barcode"] = self.string("barcode", i) if self.has("barcode") else None
        for level in LEVELS:
            out[level] = (self.string(level, i) or NOT_CLASSIFIED) if self.has(level) else NOT_CLASSIFIED
        return out

    # ------------------------------------------------------------------------------------- tokens
    def has_language_tokens(self) -> bool:
        return self.has(TOKEN_PREFIX + "input_ids")

    def language_tokens(self, rows: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray] | None:
        """The stored BERT tokens (int64 arrays ``input_ids``, ``attention_mask``, ``token_type_ids``), or None."""
        if not self.has_language_tokens():
            return None
        ids = np.asarray(read_rows(self.dataset(TOKEN_PREFIX + "input_ids"), rows), dtype=np.int64)
        out = {"input_ids": ids}
        for key, default in (("attention_mask", lambda: (ids != 0).astype(np.int64)), ("token_type_ids", None)):
            if self.has(TOKEN_PREFIX + key):
                out[key] = np.asarray(read_rows(self.dataset(TOKEN_PREFIX + key), rows), dtype=np.int64)
            else:
                out[key] = default() if default else np.zeros_like(ids)
        return out

    def language_token_row(self, i: int) -> dict[str, np.ndarray]:
        """One row of stored tokens (faster than ``language_tokens([i])`` for per-item access)."""
        i = self._check_row(i)
        ids = np.asarray(self._rows_of(TOKEN_PREFIX + "input_ids").read(i), dtype=np.int64)
        out = {"input_ids": ids}
        for key in ("attention_mask", "token_type_ids"):
            if self.has(TOKEN_PREFIX + key):
                out[key] = np.asarray(self._rows_of(TOKEN_PREFIX + key).read(i), dtype=np.int64)
            else:
                out[key] = (ids != 0).astype(np.int64) if key == "attention_mask" else np.zeros_like(ids)
        return out

    def _check_row(self, i) -> int:
        i = int(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} is out of range for group {self.name!r} of {self.h5.path} ({n} rows)")
        return i


class _RowReader:
    """Reads one row of a dataset through h5py's low-level API (no selection objects rebuilt per call).

    Several times faster than ``ds[i]`` for per-item access; made per opening of the file (HDF5 ids and
    spaces are not fork-safe).
    """

    def __init__(self, ds):
        from h5py import h5s, h5t

        self.id = ds.id
        self.shape = ds.shape
        self.fspace = ds.id.get_space()
        row_shape = (1, *self.shape[1:])
        self.count = row_shape
        self.buffer = np.empty(row_shape, dtype=ds.dtype)
        self.mspace = h5s.create_simple(row_shape)
        self.mtype = h5t.py_create(ds.dtype)
        self._h5s = h5s

    def read(self, i: int, width: int | None = None):
        """Row `i` (a scalar for 1-D datasets); for 2-D, only the first `width` columns when given."""
        if width is None:
            self.fspace.select_hyperslab((i,) + (0,) * (len(self.shape) - 1), self.count)
            self.id.read(self.mspace, self.fspace, self.buffer, self.mtype)
            return self.buffer[0].copy() if len(self.shape) > 1 else self.buffer[0]
        count = (1, width)
        out = np.empty(count, dtype=self.buffer.dtype)
        self.fspace.select_hyperslab((i, 0), count)
        self.id.read(self._h5s.create_simple(count), self.fspace, out, self.mtype)
        return out[0]


class _RawRows:
    """The leading bytes of rows of a uint8 [N, L] dataset, read straight from the file with ``os.pread`` where
    HDF5 stores them as they are: contiguously (the published files), or in chunks without filters (ours).

    HDF5's own read of one row costs some 25-70 us in a training loop (the selection, the chunk lookup and
    cache, the type path, all with cold CPU caches after a decode); this costs a few. A chunk's file offset is
    looked up once (HDF5's chunk index) and remembered. :meth:`open` returns None for what it does not read
    (compression or other filters, compact or external storage, another file driver, a table of chunk
    offsets that would be too large), and :meth:`read` None for a row in a chunk never written or past the
    end of the file: HDF5 reads those.
    """

    def __init__(self, fd: int, shape: tuple[int, int], base: int | None = None, chunks=None, lookup=None):
        self.fd, self.width, self.base = fd, shape[1], base
        if base is None:
            self.rows_per_chunk, self.chunk_width = chunks
            self._lookup = lookup
            grid = (-(-shape[0] // chunks[0]), -(-shape[1] // chunks[1]))
            self._offsets = np.full(grid, -2, dtype=np.int64)  # file offset of each chunk; -1 never written

    @classmethod
    def open(cls, ds, opener) -> _RawRows | None:
        """A reader for dataset `ds`, reading through the descriptor ``opener()`` gives, or None (class doc)."""
        from h5py import h5d

        if ds.ndim != 2 or ds.dtype != np.uint8 or ds.file.driver != "sec2" or not hasattr(os, "pread"):
            return None
        plist = ds.id.get_create_plist()
        if plist.get_nfilters() or plist.get_external_count():
            return None
        layout, base = plist.get_layout(), ds.id.get_offset()
        if layout == h5d.CONTIGUOUS and base is not None:
            reader = cls(opener(), ds.shape, base=base)
        elif (
            layout == h5d.CHUNKED and hasattr(ds.id, "get_chunk_info_by_coord") and _chunk_grid(ds) <= _MAX_CHUNK_TABLE
        ):
            reader = cls(opener(), ds.shape, chunks=ds.chunks, lookup=ds.id.get_chunk_info_by_coord)
        else:
            return None
        return reader if reader._agrees_with(ds) else None

    def _agrees_with(self, ds) -> bool:
        """The first and last rows read here equal HDF5's reading of them (the file offsets mean what we take)."""
        for i in {0, ds.shape[0] - 1} if ds.shape[0] else ():
            data = self.read(i, self.width)
            if data is not None and data != ds[i].tobytes():
                return False
        return True

    def _chunk_offset(self, chunk_row: int, chunk_col: int) -> int:
        offset = int(self._offsets[chunk_row, chunk_col])
        if offset == -2:
            coord = (chunk_row * self.rows_per_chunk, chunk_col * self.chunk_width)
            info = self._lookup(coord)
            offset = -1 if info.byte_offset is None else int(info.byte_offset)
            self._offsets[chunk_row, chunk_col] = offset
        return offset

    def read(self, i: int, n: int) -> bytes | None:
        """The first `n` bytes of row `i` (0 <= i < N, 0 < n <= L), or None when HDF5 must read them."""
        if n > self.width:
            return None
        if self.base is not None:
            data = os.pread(self.fd, n, self.base + i * self.width)
        else:
            chunk_row, within = divmod(i, self.rows_per_chunk)
            step, parts = self.chunk_width, []
            for chunk_col, start in enumerate(range(0, n, step)):
                offset = self._chunk_offset(chunk_row, chunk_col)
                if offset < 0:
                    return None
                parts.append(os.pread(self.fd, min(step, n - start), offset + within * step))
            data = parts[0] if len(parts) == 1 else b"".join(parts)
        return data if len(data) == n else None


def _chunk_grid(ds) -> int:
    """How many chunks a chunked dataset's shape spans."""
    return math.prod(-(-n // c) for n, c in zip(ds.shape, ds.chunks))


def read_rows(ds, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Rows of a dataset along axis 0, in the order given (duplicates allowed), reading block by block.

    Dense selections are read as contiguous slices and picked in memory; sparse ones with h5py's point
    selection. `rows=None` reads everything.
    """
    n = ds.shape[0]
    if rows is None:
        if n <= _BLOCK:
            return ds[()]
        return np.concatenate([ds[lo : lo + _BLOCK] for lo in range(0, n, _BLOCK)])
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if rows.size == 0:
        return ds[0:0]
    if rows.min() < -n or rows.max() >= n:
        raise IndexError(f"rows out of range for {ds.name} ({n} rows)")
    rows = np.where(rows < 0, rows + n, rows)
    unique, inverse = np.unique(rows, return_inverse=True)
    parts = []
    bounds = np.searchsorted(unique, np.arange(0, n + _BLOCK, _BLOCK))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi <= lo:
            continue
        sel = unique[lo:hi]
        first, last = int(sel[0]), int(sel[-1])
        if hi - lo > 64 or last - first + 1 <= 8 * (hi - lo):
            parts.append(ds[first : last + 1][sel - first])
        else:
            parts.append(ds[sel])
    return np.concatenate(parts)[inverse]


def _decode(values: np.ndarray) -> np.ndarray:
    """Byte strings (fixed-width ``S`` or variable-length) -> object array of str."""
    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8").astype(object)
    if values.dtype.kind == "U":
        return values.astype(object)
    out = np.empty(values.shape, dtype=object)
    flat = values.ravel()
    out.ravel()[:] = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]
    return out
