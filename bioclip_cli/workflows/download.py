"""`bioclip download` as two functions a notebook can call: plan what to fetch, then fetch it.

    plan = plan_downloads("checkpoints", preset="idt-5m", root="~/bioscan")
    results = download(plan, jobs=2)            # or download(plan, dry_run=True) to only look

Every entry comes from the artifact registry (:mod:`bioclip_cli.data.artifacts`). Plain files go
through :func:`bioclip_cli.data.transfer.fetch` (resume, retries, size + checksum before the rename);
archives are then unpacked into the raw layout; Hugging Face hub files get their sha256 from the hub's
file metadata at download time, and encoders go into the local Hugging Face cache (`snapshot_download`).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bioclip_cli.data.artifacts import (
    DATASET_WHATS,
    TARGETS,
    Artifact,
    Checksum,
    format_size,
    list_artifacts,
)
from bioclip_cli.data.transfer import (
    MIRROR_HINT,
    TransferError,
    TransferSettings,
    check_url_allowed,
    fetch,
    file_digest,
    probe_size,
    verify_file,
)
from bioclip_cli.data.unpack import archive_size, unpack
from bioclip_cli.errors import BioclipError, ChecksumMismatch, DataError, Interrupted, MissingArtifact
from bioclip_cli.models.file_format import check_format, expected_format, looks_like
from bioclip_cli.progress import is_quiet, progress_bar


@dataclass(frozen=True)
class PlannedFile:
    """One registry artifact resolved against `--root` and `--mirror`."""

    artifact: Artifact
    urls: tuple[str, ...]  # sources in the order tried (mirror applied); empty = no published URL
    dest: Path | None  # the file (for archives: the archive); None for hf-model (the HF cache)
    root: Path
    unpack_into: Path | None = None
    mirror: str | None = None

    @property
    def name(self) -> str:
        return self.artifact.name

    @property
    def url(self) -> str | None:
        return self.urls[0] if self.urls else None

    @property
    def marker(self) -> Path | None:
        """Written after an archive was unpacked and verified (the archive itself is then deleted)."""
        return self.dest.with_name(self.dest.name + ".unpacked") if self.unpack_into and self.dest else None

    @property
    def part(self) -> Path | None:
        return self.dest.with_name(self.dest.name + ".part") if self.dest else None

    def destination(self) -> str:
        if self.artifact.kind == "hf-model":
            from huggingface_hub import constants

            return str(Path(constants.HF_HUB_CACHE) / f"models--{self.artifact.repo_id.replace('/', '--')}")
        return str(self.unpack_into / self.artifact.layout if self.unpack_into else self.dest)


@dataclass
class DownloadResult:
    """The outcome for one planned file: `status` is one short phrase, `error` set when it failed."""

    planned: PlannedFile
    status: str
    done: bool = False
    size: int | None = None
    error: BioclipError | None = None
    verification: str = ""  # how the bytes in place were checked: verified, format-checked or unverified

    def row(self) -> dict:
        art = self.planned.artifact
        size = self.size if self.size is not None else art.expected_size
        return {
            "what": self.planned.name,
            "source": self.planned.url or "no published URL",
            "size": format_size(size, approx=self.size is None and art.size is None and size is not None),
            "checksum": art.checksum_label,
            "destination": self.planned.destination(),
            "status": self.status,
        }


# ------------------------------------------------------------------------------------------- planning


def _mirrored(url: str, mirror: str | None) -> str:
    """The same path (and query) on the mirror host."""
    if not mirror:
        return url
    parts = urlsplit(url)
    return mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def _check_mirror(mirror: str | None) -> None:
    if mirror is None:
        return
    parts = urlsplit(mirror)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BioclipError(f"--mirror {mirror!r} is not an http(s) base URL", "e.g. --mirror https://data.example.org")


def _preset_references(preset: str) -> tuple[set[str], set[str]]:
    """Paths (data.hdf5, DNA weights, the starting checkpoint) and hub ids (encoders) that a preset's configuration names."""
    from bioclip_cli.config import load_config

    cfg = load_config(preset)
    paths = {p for p in (cfg.data.hdf5, cfg.model.dna.weights, cfg.model.checkpoint) if p}
    hub_ids = {cfg.model.image.weights} if "image" in cfg.model.modalities else set()
    if "text" in cfg.model.modalities:
        hub_ids |= {cfg.model.text.weights, cfg.model.text.tokenizer}
    return paths, {h for h in hub_ids if h}


def _needed_by(artifact: Artifact, preset: str, references: tuple[set[str], set[str]]) -> bool:
    paths, hub_ids = references
    return preset in artifact.presets or artifact.dest in paths or artifact.repo_id in hub_ids


def plan_downloads(
    target: str,
    what: str | None = "hdf5",
    preset: str | None = None,
    root: str | Path = ".",
    mirror: str | None = None,
) -> list[PlannedFile]:
    """The files `bioclip download TARGET` would fetch, in registry order (nothing is read or written).

    `what` picks the 5m/1m flavour (hdf5, raw, metadata, partition); `preset` keeps only what that preset
    needs (checkpoints, embeddings, encoders); `mirror` fetches the same URL paths from another host.
    """
    if target not in TARGETS:
        raise BioclipError(
            f"unknown download target {target!r}; valid targets: {', '.join(TARGETS)}",
            "e.g. `bioclip download 5m --dry-run`",
        )
    _check_mirror(mirror)
    artifacts = list_artifacts(target)
    if target in DATASET_WHATS:
        what = what or "hdf5"
        if target == "5m" and what == "partition":
            raise BioclipError(
                "BIOSCAN-5M has no separate partition files: its splits are the `split` column of the metadata",
                "bioclip download 5m --what metadata",
            )
        if what not in DATASET_WHATS[target]:
            raise BioclipError(
                f"--what {what!r} is not valid for {target}; valid: {', '.join(DATASET_WHATS[target])}",
                f"bioclip download {target} --what raw --dry-run",
            )
        artifacts = [a for a in artifacts if what in a.what]
    else:
        if what not in (None, "hdf5"):
            raise BioclipError(f"--what applies to the 5m and 1m targets only, not to {target}")
        if preset:
            references = _preset_references(preset)
            artifacts = [a for a in artifacts if _needed_by(a, preset, references)]
    root = Path(root).expanduser()
    plan = []
    for art in artifacts:
        urls = tuple(_mirrored(u, mirror) for u in art.urls)
        dest = root / art.dest if art.kind != "hf-model" else None
        into = root / art.unpack_into if art.kind == "zip-to-unpack" and art.unpack_into is not None else None
        plan.append(PlannedFile(art, urls, dest, root, into, mirror))
    return plan


# -------------------------------------------------------------------------------------------- status


def _hub_cached(art: Artifact) -> bool:
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(art.repo_id, name, revision=art.revision), str)

    return cached("config.json") and (cached("model.safetensors") or cached("pytorch_model.bin"))


def _marker_ok(pf: PlannedFile) -> bool:
    try:
        record = json.loads(pf.marker.read_text())
    except (OSError, ValueError):
        return False
    checks = pf.artifact.check_files
    return record.get("checksum") == str(pf.artifact.checksum) and all((pf.root / f).is_file() for f in checks)


def file_status(pf: PlannedFile) -> tuple[str, bool]:
    """(what is on disk now, whether nothing needs doing) for one planned file; reads only local files."""
    art = pf.artifact
    if not pf.urls:
        return "no published URL", False
    if art.kind == "hf-model":
        return ("cached", True) if _hub_cached(art) else ("missing", False)
    if pf.marker is not None and pf.marker.is_file() and _marker_ok(pf):
        return f"unpacked, {art.checksum_label} verified", True
    if pf.dest.is_file():
        if art.hub_checksum:
            return "present (sha256 checked against the hub when downloading)", False
        if art.checksum is None and art.size is None:
            fmt = expected_format(pf.dest)
            if fmt is None:
                return "present, unverified (no checksum published)", True
            if not looks_like(pf.dest, fmt):  # e.g. an error page saved by an earlier version
                return f"present but not a {fmt} file: will download again", False
            return "present (no checksum published; format checked when downloaded)", True
        if verify_file(pf.dest, art.size, art.checksum):
            verified = art.checksum.kind if art.checksum else "size"
            return (f"present, {verified} verified" + (", not unpacked" if pf.unpack_into else "")), not pf.unpack_into
        return "present but does not verify: will download again", False
    if pf.part.is_file():
        return f"partial: {format_size(pf.part.stat().st_size)} downloaded", False
    return "missing", False


# ----------------------------------------------------------------------------------------- execution


def _free_space_root(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def check_disk_space(todo: list[PlannedFile], settings: TransferSettings) -> dict[str, int | None]:
    """Sizes (registry, else a HEAD request) of what is left to fetch; refuses when the disk is short.

    Archives count twice (archive + unpacked files: JPEGs do not compress). Returns name -> size.
    """
    sizes: dict[str, int | None] = {}
    need = 0
    for pf in todo:
        if pf.artifact.kind == "hf-model":  # huggingface_hub checks its own cache's disk
            sizes[pf.name] = None
            continue
        size = pf.artifact.expected_size
        if size is None:
            size = probe_size(pf.url, settings, allow_http=pf.mirror is not None)
        sizes[pf.name] = size
        if size is None:
            continue
        on_disk = pf.dest if pf.unpack_into and pf.dest.is_file() else pf.part  # an archive to unpack, or a partial
        have = on_disk.stat().st_size if on_disk.is_file() else 0
        need += max(size - have, 0) + (size if pf.unpack_into else 0)
    if todo and need:
        where = _free_space_root(todo[0].root)
        free = shutil.disk_usage(where).free
        if need > free:
            raise BioclipError(
                f"not enough free disk space under {where}: this download needs {format_size(need)}, "
                f"{format_size(free)} is free",
                "free some space, or pass --root DIR on a larger disk",
            )
    return sizes


def _hub_checksum(pf: PlannedFile, settings: TransferSettings) -> tuple[Checksum | None, int | None]:
    """The sha256 (and size) the hub publishes for an hf-file, read from its file metadata now."""
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import HfHubHTTPError

    try:
        meta = get_hf_file_metadata(pf.url, timeout=settings.timeout)
    except HfHubHTTPError as exc:
        code = getattr(exc.response, "status_code", None)
        if code == 404:
            raise TransferError(pf.url, f"{pf.url} was not found on the hub (HTTP 404)", MIRROR_HINT) from None
        raise TransferError(pf.url, f"the hub refused {pf.url} (HTTP {code})", MIRROR_HINT) from None
    except Exception as exc:  # the hub client's network errors (httpx, offline mode...)
        raise TransferError(
            pf.url, f"cannot reach {urlsplit(pf.url).netloc} for the file metadata ({type(exc).__name__})", MIRROR_HINT
        ) from None
    etag = (meta.etag or "").lower()
    checksum = Checksum("sha256", etag) if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) else None
    return checksum, meta.size


def _weight_files(filenames: list[str]) -> list[str]:
    """One copy of a hub model's weights: safetensors when the repo has them, else the PyTorch .bin files."""
    if any(f.endswith(".safetensors") for f in filenames):
        return ["*.safetensors", "*.safetensors.index.json"]
    return [f for f in filenames if f.startswith("pytorch_model") and f.endswith((".bin", ".bin.index.json"))]


def _fetch_model(pf: PlannedFile) -> DownloadResult:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    art = pf.artifact
    if is_quiet():
        disable_progress_bars()
    endpoint = pf.mirror.rstrip("/") if pf.mirror else None
    try:
        files = HfApi(endpoint=endpoint).list_repo_files(art.repo_id, revision=art.revision)
        patterns = [*art.allow_patterns, *_weight_files(files)]
        snapshot = snapshot_download(art.repo_id, revision=art.revision, allow_patterns=patterns, endpoint=endpoint)
    except Exception as exc:  # the hub client's errors: missing repo, network, offline mode
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
        where = endpoint or "the Hugging Face hub"
        raise TransferError(pf.url, f"cannot fetch {art.repo_id} from {where} ({detail})", MIRROR_HINT) from None
    verified = _verify_snapshot(Path(snapshot))
    return DownloadResult(pf, f"downloaded into the Hugging Face cache, {verified} file(s) sha256 verified", True)


def _verify_snapshot(snapshot: Path) -> int:
    """Hash the LFS files of a hub snapshot against their sha256, which the cache uses as the blob's name.

    huggingface_hub checks sizes only; a blob named by a 64-hex etag must hash to that name.
    """
    verified = 0
    for link in sorted(snapshot.rglob("*")):
        blob = link.resolve()
        name = blob.name
        if not link.is_symlink() or len(name) != 64 or any(c not in "0123456789abcdef" for c in name):
            continue
        actual = file_digest(blob, "sha256")
        if actual != name:
            raise ChecksumMismatch(
                link, "sha256", name, actual, f"delete {snapshot.parents[1]} and run the command again"
            )
        verified += 1
    return verified


def _fetch_file(
    pf: PlannedFile, settings: TransferSettings, on_bytes, allow_unverified: bool = False
) -> DownloadResult:
    art = pf.artifact
    checksum, exact = art.checksum, art.size
    if art.hub_checksum:
        checksum, exact = _hub_checksum(pf, settings)
        if pf.dest.is_file() and checksum is not None and verify_file(pf.dest, exact, checksum):
            return DownloadResult(
                pf, "skipped: present, sha256 verified against the hub", True, exact, None, "verified"
            )
        if checksum is None and not allow_unverified:
            raise TransferError(
                pf.url,
                f"the source gives no readable sha256 for {pf.url}, so {pf.dest.name} cannot be verified",
                "try again later, or pass --allow-unverified to accept it after a format check",
                try_next_source=False,
            )
    fmt = expected_format(pf.dest) if checksum is None else None
    if fmt is not None and pf.dest.is_file() and not looks_like(pf.dest, fmt):
        os.replace(pf.dest, pf.dest.with_name(pf.dest.name + ".bad"))  # not a fmt file: fetch it again
    checked: list[str] = []

    def check(part: Path) -> None:
        checked.append(check_format(part, pf.dest))

    errors: list[TransferError] = []
    for url in pf.urls:
        if any(e.message == _unreachable_host_message(e, url) for e in errors):
            continue  # the same host already refused: asking it again only repeats the message
        try:
            result = fetch(url, pf.dest, size=exact, checksum=checksum, settings=settings,
                           allow_http=pf.mirror is not None, on_bytes=on_bytes,
                           check=check if fmt is not None else None)  # fmt: skip
        except TransferError as exc:
            errors.append(exc)
            if exc.try_next_source:
                continue
            raise
        if result.skipped:
            return DownloadResult(pf, "skipped: already present", not pf.unpack_into, result.size)
        size_note = "size checked; " if exact is not None else ""
        if checksum:
            how, level = f"{checksum.kind} verified", "verified"
        elif checked:
            source = "the source gave no hub sha256" if art.hub_checksum else "no checksum published"
            how, level = f"format-checked: {checked[0]} ({size_note}{source})", "format-checked"
        elif art.hub_checksum:
            how, level = f"unverified ({size_note}the source gave no hub sha256)", "unverified"
        else:
            how, level = f"unverified ({size_note}no checksum published)", "unverified"
        resumed = f", resumed at {format_size(result.resumed_from)}" if result.resumed_from else ""
        return DownloadResult(pf, f"downloaded, {how}{resumed}", not pf.unpack_into, result.size, None, level)
    if len({e.message for e in errors}) == 1:
        raise errors[0]
    tried = "; ".join(dict.fromkeys(e.message for e in errors))
    raise TransferError(pf.url, f"no source of {pf.name} worked: {tried}", MIRROR_HINT)


def _unreachable_host_message(error: TransferError, url: str) -> str | None:
    """`error`'s message when it says that the host of `url` cannot be reached at all, else None."""
    host = urlsplit(url).netloc
    return error.message if error.message.startswith(f"cannot reach {host} (") else None


def _unpack_archive(pf: PlannedFile, result: DownloadResult) -> DownloadResult:
    art = pf.artifact
    with progress_bar(archive_size(pf.dest), f"unpacking {pf.dest.name}", unit="B") as bar:
        done = unpack(pf.dest, pf.unpack_into, art.layout, on_bytes=bar.advance)
    for rel, checksum in art.check_files.items():
        path = pf.root / rel
        if not path.is_file():
            raise DataError(
                path,
                f"{pf.dest.name} unpacked, but {path} is not there: the archive layout is not the expected one",
                "report it with the list of the archive's members (`unzip -l`)",
            )
        actual = file_digest(path, checksum.kind)
        if actual != checksum.value:
            raise ChecksumMismatch(path, checksum.kind, checksum.value, actual)
    record = {"archive": pf.dest.name, "checksum": str(art.checksum), "files": done.files + done.skipped}
    pf.marker.write_text(json.dumps(record, indent=2) + "\n")
    pf.dest.unlink()
    return DownloadResult(pf, result.status + f", unpacked {done.files + done.skipped} files", True, result.size)


def download(
    plan: list[PlannedFile],
    jobs: int = 2,
    dry_run: bool = False,
    settings: TransferSettings | None = None,
    allow_unverified: bool = False,
) -> list[DownloadResult]:
    """Fetch (or with `dry_run`, only inspect) every planned file; results in plan order.

    Verified files are skipped without a request. Up to `jobs` files download at once, then archives
    are unpacked. Failures do not stop the other files: each is returned in its result's `error`
    (see :func:`raise_failures`). Files without a published checksum are format-checked before the rename
    (:mod:`bioclip_cli.models.file_format`); a hub file whose sha256 cannot be read fails unless
    `allow_unverified`. Refuses up front when a source is not HTTPS (without a mirror) or
    the disk is too small.
    """
    settings = settings or TransferSettings.from_env()
    results: dict[str, DownloadResult] = {}
    todo: list[PlannedFile] = []
    for pf in plan:
        status, done = file_status(pf)
        if dry_run or done:
            results[pf.name] = DownloadResult(pf, status if dry_run else f"skipped: {status}", done)
        elif not pf.urls:
            error = MissingArtifact(pf.name, f"{pf.name} has no published download URL", pf.artifact.note or None)
            results[pf.name] = DownloadResult(pf, "failed: no published URL", error=error)
        else:
            todo.append(pf)
    if dry_run or not todo:
        return [results[pf.name] for pf in plan]
    for pf in todo:
        for url in pf.urls:
            check_url_allowed(url, allow_http=pf.mirror is not None)
    if any(pf.artifact.kind.startswith("hf-") for pf in todo) and os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise BioclipError("HF_HUB_OFFLINE is set, so the Hugging Face hub cannot be reached", "unset HF_HUB_OFFLINE")
    sizes = check_disk_space(todo, settings)
    files = [pf for pf in todo if pf.artifact.kind != "hf-model"]
    known = [sizes[pf.name] for pf in files if sizes[pf.name] is not None]
    stop = threading.Event()

    def one(pf: PlannedFile, on_bytes) -> DownloadResult:
        try:
            if pf.artifact.kind == "hf-model":
                return _fetch_model(pf)
            return _fetch_file(pf, settings, on_bytes, allow_unverified)
        except BioclipError as exc:
            return DownloadResult(pf, "failed", error=exc)
        except OSError as exc:  # local disk trouble while writing
            error = DataError(pf.dest or pf.root, f"writing {pf.dest or pf.name} failed: {exc.strerror or exc}")
            return DownloadResult(pf, "failed", error=error)

    try:
        if files:
            with progress_bar(sum(known) or None, f"downloading {len(files)} file(s)", unit="B") as bar:

                def on_bytes(n: int) -> None:
                    if stop.is_set():  # Ctrl-C: end this transfer now, keeping its .part for the next run
                        raise _Stopped
                    bar.advance(n)

                pool = ThreadPoolExecutor(max_workers=max(1, jobs))
                try:
                    for result in pool.map(lambda pf: one(pf, on_bytes), files):
                        results[result.planned.name] = result
                except KeyboardInterrupt:
                    stop.set()
                    raise
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
        for pf in todo:
            if pf.artifact.kind == "hf-model":  # huggingface_hub draws its own bars
                results[pf.name] = one(pf, None)
    except KeyboardInterrupt:
        raise Interrupted(
            "download interrupted; the partial files are kept and the same command resumes them"
        ) from None
    for pf in files:
        result = results[pf.name]
        if result.error is None and pf.unpack_into is not None:
            try:
                results[pf.name] = _unpack_archive(pf, result)
            except BioclipError as exc:
                results[pf.name] = DownloadResult(pf, "failed while unpacking", error=exc)
    return [results[pf.name] for pf in plan]


class _Stopped(Exception):
    """Raised inside a transfer thread after Ctrl-C, so that it stops at the next block."""


def raise_failures(results: list[DownloadResult]) -> None:
    """Raise the error of a failed download (a summary naming all of them when several failed)."""
    failed = [r for r in results if r.error is not None]
    if not failed:
        return
    if len(failed) == 1:
        raise failed[0].error
    names = ", ".join(r.planned.name for r in failed)
    first = failed[0].error
    if len({r.error.message.split(" (")[0] for r in failed}) == 1 and first.message.startswith("cannot reach "):
        raise BioclipError(f"{len(failed)} of {len(results)} downloads failed ({names}): {first.message}", first.hint)
    raise BioclipError(
        f"{len(failed)} of {len(results)} downloads failed ({names}); first: {first.message}", first.hint
    )


def verification_counts(results: list[DownloadResult]) -> dict[str, int]:
    """How the files fetched now were checked: {verified, format-checked, unverified} -> count."""
    counts = {"verified": 0, "format-checked": 0, "unverified": 0}
    for r in results:
        if r.error is None and r.verification in counts:
            counts[r.verification] += 1
    return counts


def next_command(target: str, what: str | None, root: str | Path, results: list[DownloadResult]) -> str | None:
    """The command to run after a successful download, built from the user's own --root."""
    if any(r.error for r in results) or not results:
        return None
    root = Path(root)
    if target == "5m" and what == "raw":
        return f"bioclip build-hdf5 5m --root {root} --out {root / 'data/BIOSCAN_5M/BIOSCAN_5M.hdf5'}"
    if target == "insect" and what != "metadata":
        return f"bioclip build-hdf5 insect --root {root} --out {root / 'data/INSECT/INSECT.hdf5'}"
    if target == "embeddings":
        feats = [r.planned.dest for r in results if r.planned.dest and r.planned.dest.suffix == ".hdf5"]
        if feats:
            labels = feats[0].with_name("labels_val.json")
            return f"bioclip eval --embeddings {feats[0]} --labels {labels}"
    return None
