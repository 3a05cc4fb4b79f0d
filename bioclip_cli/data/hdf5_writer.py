"""Writer for the BIOSCAN HDF5 layout (the counterpart of :mod:`.hdf5`).

Rows are appended in batches to chunked, resizable datasets, so a file of any size is written with
bounded memory. ``image`` is uint8 [N, L] with L the longest JPEG so far (the width grows as needed;
rows are zero padded), ``image_mask`` int64 [N] the byte lengths, language tokens int64 [N, max_len].
Strings are fixed-width UTF-8 byte strings, as in the published files, for the columns whose widest
value is known beforehand (``string_widths``: `build-hdf5` scans the metadata first); otherwise
variable-length UTF-8.

Image rows are stored 8 to a chunk and written with HDF5's direct chunk write (no selection or type
machinery per row: several times faster than a plain slice assignment); a random row read then touches
one chunk. Image rows are copied, as they are appended, into a zeroed buffer of 64 padded rows (each row's
tail zeroed again only where a longer row left bytes), which is written as whole chunks when full or at
:meth:`close`; a row longer than the chunk width also fills further chunk columns.
Datasets are created and written through h5py's low-level API (one call per column and append; the
creation properties are made once per file), which keeps the cost of the many small groups low.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bioclip_cli.data.hdf5 import TOKEN_KEYS, TOKEN_PREFIX

IMAGE_CHUNK_ROWS = 8  # image rows per chunk
_ROW_CHUNK = 4096  # rows per chunk of the 1-D datasets (fewer for wide fixed-width strings: about 64 KiB a chunk)
_STRING_CHUNK_BYTES = 1 << 16
_TOKEN_CHUNK = 512  # rows per chunk of the token datasets (3 x 80 KiB fit h5py's default 1 MiB chunk cache)
_WIDTH_STEP = 256  # image chunk width: the first batch's longest JPEG rounded up to this
_STAGE_ROWS = 64  # image rows padded in place before their chunks are written (a buffer that stays in cache)


class GroupWriter:
    """Appends rows to one group. Datasets are created on the first append (or by :meth:`create`).

    :meth:`append` takes whole rows; a builder may instead give the image rows (:meth:`append_images`, copied at
    once) and the other columns (:meth:`append_rows`) separately, in the same row order."""

    def __init__(self, group, maker: _DatasetMaker):
        self.group = group
        self._maker = maker
        self._string_names: list[str] | None = None
        self._has_images: bool | None = None
        self._has_tokens: bool | None = None
        self._rows = 0
        self._image_rows = 0  # rows given to append_images (written, or staged)
        self._handles: dict = {}  # name -> low-level DatasetID
        self._chunks: tuple[int, int] | None = None
        self._stage: np.ndarray | None = None  # [_STAGE_ROWS, chunk width]: image rows padded, until written
        self._staged = 0  # rows in the stage
        self._stage_lengths: list[int] = []  # bytes of each staged row (within the chunk width)
        self._zeros: memoryview | None = None
        self._image_rows_written = 0
        self._image_width = 0  # the longest image row so far
        self._masks: list[np.ndarray] = []  # image lengths not written yet
        self._masks_written = 0
        self._spill: dict[int, bytes] = {}  # staged row -> its bytes beyond the chunk width

    def __len__(self) -> int:
        return self._rows

    def append(
        self,
        strings: Mapping[str, Sequence[str] | np.ndarray],
        images: Sequence[bytes] | None = None,
        tokens: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Append equally long columns: strings by dataset name, JPEG bytes, tokens by key (input_ids...)."""
        lengths = {len(v) for v in strings.values()}
        if images is not None:
            lengths.add(len(images))
        if tokens is not None:
            lengths |= {len(tokens[k]) for k in TOKEN_KEYS}
        if len(lengths) != 1:
            raise ValueError(f"columns of different lengths appended to group {self.group.name}: {sorted(lengths)}")
        n = lengths.pop()
        if self._string_names is None:
            longest = max((len(b) for b in images), default=1) if images is not None else None
            token_len = np.asarray(tokens["input_ids"]).shape[1] if tokens is not None else None
            self.create(list(strings), image_width=longest, token_len=token_len, rows_hint=n)
        if (images is not None) != self._has_images:
            raise ValueError(f"group {self.group.name}: every append must give the same columns")
        columns = self._columns(strings, tokens)  # (checked before anything is written)
        if images is not None:
            ends = np.cumsum(np.fromiter(map(len, images), dtype=np.int64, count=n))
            self.append_images(np.frombuffer(b"".join(images), dtype=np.uint8), ends - np.diff(ends, prepend=0), ends)
        self._write_columns(columns, n)

    def append_rows(
        self, strings: Mapping[str, Sequence[str] | np.ndarray], tokens: Mapping[str, np.ndarray] | None = None
    ) -> None:
        """Append the string (and token) columns of rows whose images :meth:`append_images` took."""
        lengths = {len(v) for v in strings.values()} | ({len(tokens[k]) for k in TOKEN_KEYS} if tokens else set())
        if len(lengths) != 1:
            raise ValueError(f"columns of different lengths appended to group {self.group.name}: {sorted(lengths)}")
        n = lengths.pop()
        if self._rows + n > self._image_rows:
            raise ValueError(f"group {self.group.name}: rows appended before their images")
        self._write_columns(self._columns(strings, tokens), n)

    def _columns(self, strings, tokens) -> dict[str, np.ndarray]:
        if self._string_names is None or sorted(strings) != self._string_names:
            raise ValueError(f"group {self.group.name}: every append must give the same columns")
        if (tokens is not None) != self._has_tokens:
            raise ValueError(f"group {self.group.name}: every append must give tokens, or none")
        columns = {name: self._maker.string_column(name, values) for name, values in strings.items()}
        if tokens is not None:
            for key in TOKEN_KEYS:
                columns[TOKEN_PREFIX + key] = np.ascontiguousarray(tokens[key], dtype=np.int64)
        return columns

    def _write_columns(self, columns: dict[str, np.ndarray], n: int) -> None:
        if n:
            for name, column in columns.items():
                self._write_rows(name, self._rows, column)
            self._rows += n

    def _dataset(self, name: str):
        """The low-level h5py DatasetID of `name` (kept from its creation: a group lookup per call costs)."""
        dsid = self._handles.get(name)
        if dsid is None:
            dsid = self._handles[name] = self.group[name].id
        return dsid

    def _write_rows(self, name: str, start: int, values: np.ndarray) -> None:
        """Write `values` as rows ``start...`` of dataset `name`, growing it, through the low-level API."""
        from h5py import h5s

        dsid = self._dataset(name)
        shape = dsid.shape
        end = start + len(values)
        if end > shape[0]:
            dsid.set_extent((end, *shape[1:]))
        fspace = dsid.get_space()
        fspace.select_hyperslab((start,) + (0,) * (len(shape) - 1), values.shape)
        dsid.write(h5s.create_simple(values.shape), fspace, values)

    def create(
        self,
        string_names: Sequence[str],
        image_width: int | None = 1,
        token_len: int | None = None,
        rows_hint: int | None = None,
    ) -> None:
        """Create the (empty) datasets: the string columns, ``image``/``image_mask`` unless `image_width`
        is None (it sets the chunk width), and the language tokens when `token_len` is given.
        `rows_hint` (the rows of the first append) caps the rows per chunk of the row datasets, so that a
        small group gets small chunks. A group that receives no rows still gets its datasets this way.
        Does nothing once created."""
        if self._string_names is not None:
            return
        self._string_names = sorted(string_names)
        self._has_images = image_width is not None
        self._has_tokens = token_len is not None
        rows = max(64, 1 << max(0, (rows_hint or 0) - 1).bit_length()) if rows_hint is not None else None
        make = self._maker.create
        for name in self._string_names:
            self._handles[name] = make(self.group, name, self._maker.string_dtype(name), rows=rows)
        if image_width is not None:
            width = max(_WIDTH_STEP, -(-image_width // _WIDTH_STEP) * _WIDTH_STEP)
            self._handles["image"] = make(self.group, "image", np.uint8, (IMAGE_CHUNK_ROWS, width))
            self._handles["image_mask"] = make(self.group, "image_mask", np.int64, rows=rows)
            self._chunks = (IMAGE_CHUNK_ROWS, width)
        if token_len is not None:
            for key in TOKEN_KEYS:
                name = TOKEN_PREFIX + key
                chunk = (min(_TOKEN_CHUNK, rows or _TOKEN_CHUNK), token_len)
                self._handles[name] = make(self.group, name, np.int64, chunk)

    def append_images(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        """Append image rows: row i is ``data[starts[i]:ends[i]]`` (uint8). The bytes are copied at once (into
        zero-padded chunks), so `data` may be reused afterwards. The group must have been created with images."""
        if not self._has_images:
            raise ValueError(f"group {self.group.name}: created without images")
        lengths = np.asarray(ends, dtype=np.int64) - np.asarray(starts, dtype=np.int64)
        n = len(lengths)
        if not n:
            return
        first = self._image_rows
        self._image_width = max(self._image_width, int(lengths.max()))
        self._masks.append(lengths)
        chunk_rows, width = self._chunks
        if self._stage is None:
            self._stage = np.zeros((_STAGE_ROWS, width), dtype=np.uint8)
            self._stage_lengths = [0] * _STAGE_ROWS
            self._zeros = memoryview(bytes(width))
        flat = memoryview(self._stage).cast("B")  # (memoryview slices: a plain memcpy each, no numpy machinery)
        source = memoryview(np.ascontiguousarray(data, dtype=np.uint8)).cast("B")
        used, zeros = self._stage_lengths, self._zeros
        r = self._staged
        for start, length in zip(np.asarray(starts).tolist(), lengths.tolist()):
            inside = length if length < width else width
            at = r * width
            flat[at : at + inside] = source[start : start + inside]
            if used[r] > inside:  # what a longer row left here before
                flat[at + inside : at + used[r]] = zeros[: used[r] - inside]
            used[r] = inside
            if length > width:
                self._spill[r] = bytes(source[start + width : start + length])
            r += 1
            if r == _STAGE_ROWS:
                self._staged = r
                self._write_stage()
                r = 0
        self._staged = r
        self._image_rows = first + n
        if self._image_rows - self._masks_written >= _ROW_CHUNK:
            self._write_masks()

    def _write_masks(self) -> None:
        """Write the image lengths given since the last call (``image_mask``)."""
        if self._masks:
            lengths = np.concatenate(self._masks)
            self._write_rows("image_mask", self._masks_written, lengths)
            self._masks_written += len(lengths)
            self._masks = []

    def _write_stage(self) -> None:
        """Write the staged rows as whole chunks at the rows before them (the last chunk zero-filled)."""
        chunk_rows, width = self._chunks
        n = self._staged
        if not n:
            return
        first = self._image_rows_written
        self._dataset("image").set_extent((first + n, self._image_width))
        padded = -(-n // chunk_rows) * chunk_rows
        used = self._stage_lengths
        if padded > n:
            self._stage[n:padded] = 0
            used[n:padded] = [0] * (padded - n)
        write = self._dataset("image").write_direct_chunk
        for lo in range(0, padded, chunk_rows):
            if any(used[lo : lo + chunk_rows]):  # an all-empty chunk stays unwritten (it reads as zeros)
                write((first + lo, 0), self._stage[lo : lo + chunk_rows])  # a C-contiguous view: no copy
        if self._spill:
            self._write_spill(first)
        self._image_rows_written = first + n
        self._staged = 0

    def _write_spill(self, first: int) -> None:
        """The chunk columns after the first, for the chunks holding a row longer than the chunk width."""
        chunk_rows, width = self._chunks
        write = self._dataset("image").write_direct_chunk
        by_chunk: dict[int, list[int]] = {}
        for r in self._spill:
            by_chunk.setdefault(r - r % chunk_rows, []).append(r)
        for lo, rows in sorted(by_chunk.items()):
            columns = max(len(self._spill[r]) for r in rows)
            for c in range(-(-columns // width)):
                block = np.zeros((chunk_rows, width), dtype=np.uint8)
                for r in rows:
                    part = self._spill[r][c * width : (c + 1) * width]
                    block[r - lo, : len(part)] = np.frombuffer(part, dtype=np.uint8)
                write((first + lo, (c + 1) * width), block)
        self._spill = {}

    def finish(self) -> None:
        """Write the image rows still staged (called by :meth:`BioscanH5Writer.close`); check every row has
        its images."""
        if self._staged:
            self._write_stage()
        self._write_masks()
        if self._has_images and self._image_rows != self._rows:
            raise ValueError(
                f"group {self.group.name}: {self._image_rows} image rows but {self._rows} rows of the other columns"
            )


class _DatasetMaker:
    """Creates the datasets of one file through the low-level API, with each creation property list and type made
    once, and converts string columns to their stored type."""

    def __init__(self, file, string_widths: Mapping[str, int]):
        self.file = file
        self.string_widths = dict(string_widths)
        self._types: dict = {}
        self._plists: dict = {}

    def string_dtype(self, name: str) -> np.dtype:
        import h5py

        width = self.string_widths.get(name)
        return np.dtype(f"S{max(1, width)}") if width is not None else h5py.string_dtype("utf-8")

    def create(self, group, name: str, dtype, chunks: tuple[int, ...] | None = None, rows: int | None = None):
        """An empty dataset [0, ...] growing along its first axis (and its second for 2-D ``image``); 1-D
        datasets get chunks of `rows` rows at most (and of about 64 KiB at most for wide strings)."""
        from h5py import h5d, h5p, h5s, h5t

        dtype = np.dtype(dtype)
        if chunks is None:
            chunks = (max(64, min(_ROW_CHUNK, rows or _ROW_CHUNK, _STRING_CHUNK_BYTES // dtype.itemsize)),)
        key = (dtype.str, dtype.metadata and "vlen", chunks)
        tid = self._types.get(key[:2])
        if tid is None:
            tid = self._types[key[:2]] = h5t.py_create(dtype, logical=True)
        dcpl = self._plists.get(chunks)
        if dcpl is None:
            dcpl = self._plists[chunks] = h5p.create(h5p.DATASET_CREATE)
            dcpl.set_chunk(chunks)
        if len(chunks) == 1:
            space = h5s.create_simple((0,), (h5s.UNLIMITED,))
        elif name == "image":
            space = h5s.create_simple((0, 0), (h5s.UNLIMITED, h5s.UNLIMITED))
        else:
            space = h5s.create_simple((0, chunks[1]), (h5s.UNLIMITED, chunks[1]))
        return h5d.create(group.id, name.encode(), tid, space, dcpl=dcpl)

    def string_column(self, name: str, values: Sequence[str] | np.ndarray) -> np.ndarray:
        """`values` (str, or a numpy array of UTF-8 byte strings) as the stored type: fixed-width UTF-8 bytes
        (never cut: a longer value is an error) or variable-length str (values that are not str are written as
        ``str(value)``)."""
        width = self.string_widths.get(name)
        if isinstance(values, np.ndarray) and values.dtype.kind == "S":
            if width is None:
                values = [v.decode("utf-8") for v in values.tolist()]
            elif values.dtype.itemsize <= max(1, width):
                return values.astype(f"S{max(1, width)}", copy=values.dtype.itemsize != max(1, width))
            else:
                values = [v.decode("utf-8") for v in values.tolist()]  # (the error below names the value)
        if width is None:
            column = np.empty(len(values), dtype=self.string_dtype(name))
            column[:] = [v if isinstance(v, str) else str(v) for v in values]
            return column
        width = max(1, width)
        try:
            too_wide = len(values) > 0 and max(map(len, values)) > width  # characters: a lower bound of the bytes
            column = None if too_wide else np.array(values, dtype=f"S{width}")  # ASCII: numpy encodes
        except UnicodeEncodeError:
            encoded = [v.encode("utf-8") for v in values]
            too_wide = max(map(len, encoded)) > width
            column = None if too_wide else np.array(encoded, dtype=f"S{width}")
        if too_wide:
            longest = max(values, key=lambda v: len(v.encode("utf-8")))
            raise ValueError(
                f"a {name} value is wider ({len(longest.encode())} bytes) than its dataset ({width}): {longest!r}"
            )
        return column


class BioscanH5Writer:
    """Creates a BIOSCAN HDF5 file; ``with BioscanH5Writer(path) as w: w.group("val_seen").append(...)``.

    `string_widths` (column -> widest value in UTF-8 bytes) makes those columns fixed-width byte strings."""

    def __init__(
        self,
        path: str | Path,
        attrs: Mapping[str, object] | None = None,
        string_widths: Mapping[str, int] | None = None,
    ):
        import h5py

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.path, "w")
        for key, value in (attrs or {}).items():
            self.file.attrs[key] = value
        self._maker = _DatasetMaker(self.file, string_widths or {})
        self._groups: dict[str, GroupWriter] = {}

    def group(self, name: str) -> GroupWriter:
        if name not in self._groups:
            self._groups[name] = GroupWriter(self.file.create_group(name), self._maker)
        return self._groups[name]

    def close(self, finish: bool = True) -> None:
        """Write what waits (unless not `finish`: a file given up on) and close the file."""
        if self.file.id.valid:
            try:
                if finish:
                    for group in self._groups.values():
                        group.finish()
            finally:
                self.file.close()

    def __enter__(self) -> BioscanH5Writer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(finish=exc_type is None)  # (after an error the rows may be incomplete: nothing is checked)


def write_groups(path: str | Path, groups: Mapping[str, Mapping[str, object]], attrs=None) -> Path:
    """Write whole groups at once (tests, small files): ``{group: {"image": [bytes], "barcode": [...], ...}}``.

    Keys: ``image`` (list of JPEG bytes), any string column, and optionally ``language_tokens`` (a dict
    with input_ids / attention_mask / token_type_ids arrays).
    """
    with BioscanH5Writer(path, attrs=attrs) as writer:
        for name, columns in groups.items():
            columns = dict(columns)
            images = columns.pop("image", None)
            tokens = columns.pop("language_tokens", None)
            writer.group(name).append(columns, images=images, tokens=tokens)
    return Path(path)
