"""HDF5 embedding cache, schema 1 (DESIGN.md §4.1).

Layout of ``CACHE.h5``:

=====================  ===========================  ==========================================
path                   type                         meaning
=====================  ===========================  ==========================================
``/embeddings``        float32|float16 (N, D)       L2-normalised image embeddings
``/ids``               UTF-8 str (N,)               sha256 of the decoded pixels (stable key)
``/paths``             UTF-8 str (N,)               source path relative to the input
``/labels``            float32 (N, C), NaN=unknown  optional; attr ``names`` = JSON list
``/patch_embeddings``  float16 (N, P, D)            optional per-location embeddings
root attrs             ``schema_version`` = 1, ``encoder`` = JSON, ``embedding_dim`` = D
=====================  ===========================  ==========================================

Crash safety. HDF5 is not journaled: a process killed while the library flushes metadata can
leave a file that no longer opens. So a writer never modifies ``CACHE.h5`` in place while it
embeds. New rows go to small *segment* files in ``CACHE.h5.wip/`` (each written to a temporary
name and renamed, so a segment is either complete or absent). :meth:`CacheWriter.commit` then
merges the segments into a copy of the cache and atomically replaces the original. A kill at
any moment therefore leaves the last committed cache intact plus complete segments, and the
next run picks the segments up (resume) instead of embedding those images again.

Readers read in row chunks, so caches larger than memory work.
"""

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from medsae_desktop.core.errors import MedsaeError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
EMBEDDINGS = "embeddings"
IDS = "ids"
PATHS = "paths"
LABELS = "labels"
PATCHES = "patch_embeddings"
_STR = h5py.string_dtype("utf-8")
_ROW_CHUNK = 1024  # HDF5 chunk height: appends and slice reads touch few chunks


def wip_dir(cache_path: str | os.PathLike[str]) -> Path:
    """Folder holding the uncommitted segments of ``cache_path``."""
    p = Path(cache_path)
    return p.with_name(p.name + ".wip")


class EmbeddingCache:
    """Read-only view of one committed cache file.

    Use as a context manager, or call :meth:`close`. All array readers return numpy arrays.

    Parameters
    ----------
    path
        The ``.h5`` file. Raises :class:`MedsaeError` with a one-line reason when it is missing,
        not HDF5, of an unknown schema version, or lacks required datasets.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MedsaeError("embedding cache not found", self.path)
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            raise MedsaeError(f"not a readable HDF5 embedding cache ({_short(exc)})", self.path) from exc
        try:
            _validate_open(self._f, self.path)
        except Exception:
            self._f.close()
            raise

    # ---- metadata -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._f[EMBEDDINGS].shape[0])

    @property
    def n(self) -> int:
        """Number of images."""
        return len(self)

    @property
    def embedding_dim(self) -> int:
        """Embedding width D."""
        return int(self._f[EMBEDDINGS].shape[1])

    @property
    def encoder(self) -> dict[str, Any]:
        """Encoder description (key, variant, weights sha256, preprocessing)."""
        return dict(json.loads(self._f.attrs.get("encoder", "{}")))

    @property
    def has_labels(self) -> bool:
        """Whether ``/labels`` exists."""
        return LABELS in self._f

    @property
    def label_names(self) -> list[str]:
        """Label column names (empty without labels)."""
        if not self.has_labels:
            return []
        return list(json.loads(self._f[LABELS].attrs["names"]))

    @property
    def has_patches(self) -> bool:
        """Whether per-location embeddings are stored."""
        return PATCHES in self._f

    @property
    def ids(self) -> np.ndarray:
        """All image ids as an object array of str, shape (N,)."""
        return self._f[IDS].asstr()[...]

    @property
    def paths(self) -> np.ndarray:
        """All relative source paths, shape (N,)."""
        return self._f[PATHS].asstr()[...]

    # ---- data -----------------------------------------------------------------------------
    def read_embeddings(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Embeddings of rows ``start:stop`` as float32, shape (n, D)."""
        return np.asarray(self._f[EMBEDDINGS][start:stop], dtype=np.float32)

    def take_embeddings(self, rows_n: Sequence[int] | np.ndarray) -> np.ndarray:
        """Embeddings of arbitrary rows (any order), float32 (n, D)."""
        rows_n = np.asarray(rows_n, dtype=np.int64)
        order = np.argsort(rows_n, kind="stable")
        # h5py fancy indexing needs increasing unique indices; read sorted then undo the sort.
        uniq, inverse = np.unique(rows_n[order], return_inverse=True)
        got = np.asarray(self._f[EMBEDDINGS][uniq], dtype=np.float32)[inverse]
        out_nd = np.empty_like(got)
        out_nd[order] = got
        return out_nd

    def read_labels(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Labels of rows ``start:stop`` as float32 (n, C); NaN = unknown, −1 = uncertain."""
        if not self.has_labels:
            raise MedsaeError("cache has no /labels (pass a labels CSV)", self.path)
        return np.asarray(self._f[LABELS][start:stop], dtype=np.float32)

    def read_patches(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Per-location embeddings of rows ``start:stop``, float32 (n, P, D)."""
        if not self.has_patches:
            raise MedsaeError("cache has no /patch_embeddings (embed with --patches)", self.path)
        return np.asarray(self._f[PATCHES][start:stop], dtype=np.float32)

    def iter_chunks(self, chunk_rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_row, embeddings_nd)`` over the whole cache, ``chunk_rows`` at a time."""
        n = len(self)
        for start in range(0, n, chunk_rows):
            yield start, self.read_embeddings(start, min(n, start + chunk_rows))

    def row_of_id(self) -> dict[str, int]:
        """Map image id → row."""
        return {k: i for i, k in enumerate(self.ids)}

    # ---- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_cache(path: str | os.PathLike[str]) -> EmbeddingCache:
    """Open a committed cache for reading (see :class:`EmbeddingCache`)."""
    return EmbeddingCache(path)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _validate_open(f: h5py.File, path: Path) -> None:
    version = f.attrs.get("schema_version")
    if version is None:
        raise MedsaeError("not a medsae embedding cache (no schema_version attribute)", path)
    if int(version) > SCHEMA_VERSION:
        raise MedsaeError(
            f"cache schema_version {int(version)} is newer than this program supports "
            f"({SCHEMA_VERSION}); upgrade medsae-desktop", path)
    if int(version) < 1:
        raise MedsaeError(f"unknown cache schema_version {int(version)}", path)
    for name in (EMBEDDINGS, IDS, PATHS):
        if name not in f:
            raise MedsaeError(f"broken embedding cache: dataset /{name} is missing", path)
    n = f[EMBEDDINGS].shape[0]
    if f[EMBEDDINGS].ndim != 2:
        raise MedsaeError("broken embedding cache: /embeddings is not 2-D", path)
    for name in (IDS, PATHS, LABELS, PATCHES):
        if name in f and f[name].shape[0] != n:
            raise MedsaeError(
                f"broken embedding cache: /{name} has {f[name].shape[0]} rows, "
                f"/embeddings has {n}", path)
    if LABELS in f and "names" not in f[LABELS].attrs:
        raise MedsaeError("broken embedding cache: /labels has no 'names' attribute", path)


def _create_layout(
    f: h5py.File,
    *,
    embedding_dim: int,
    encoder: dict[str, Any],
    dtype: str,
    label_names: Sequence[str] | None,
    patch_shape: tuple[int, int] | None,
) -> None:
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["encoder"] = json.dumps(encoder, sort_keys=True)
    f.attrs["embedding_dim"] = int(embedding_dim)
    d = int(embedding_dim)
    f.create_dataset(EMBEDDINGS, shape=(0, d), maxshape=(None, d), dtype=dtype,
                     chunks=(_ROW_CHUNK, d))
    f.create_dataset(IDS, shape=(0,), maxshape=(None,), dtype=_STR, chunks=(_ROW_CHUNK,))
    f.create_dataset(PATHS, shape=(0,), maxshape=(None,), dtype=_STR, chunks=(_ROW_CHUNK,))
    if label_names is not None:
        c = len(label_names)
        ds = f.create_dataset(LABELS, shape=(0, c), maxshape=(None, c), dtype="float32",
                              chunks=(_ROW_CHUNK, max(c, 1)))
        ds.attrs["names"] = json.dumps(list(label_names))
    if patch_shape is not None:
        p, pd = patch_shape
        f.create_dataset(PATCHES, shape=(0, p, pd), maxshape=(None, p, pd), dtype="float16",
                         chunks=(16, p, pd))


def _append_rows(
    f: h5py.File,
    ids: Sequence[str],
    paths: Sequence[str],
    embeddings_nd: np.ndarray,
    labels_nc: np.ndarray | None,
    patches_npd: np.ndarray | None,
) -> None:
    n_new = len(ids)
    if n_new == 0:
        return
    assert embeddings_nd.shape[0] == n_new == len(paths), "row counts disagree"
    n0 = f[EMBEDDINGS].shape[0]
    n1 = n0 + n_new
    for name, values in ((EMBEDDINGS, embeddings_nd), (IDS, list(ids)), (PATHS, list(paths))):
        f[name].resize(n1, axis=0)
        f[name][n0:n1] = values
    if LABELS in f:
        c = f[LABELS].shape[1]
        lab = np.full((n_new, c), np.nan, np.float32) if labels_nc is None else labels_nc
        f[LABELS].resize(n1, axis=0)
        f[LABELS][n0:n1] = lab
    if PATCHES in f:
        if patches_npd is None:
            raise MedsaeError("cache stores patch embeddings but none were given")
        f[PATCHES].resize(n1, axis=0)
        f[PATCHES][n0:n1] = patches_npd.astype(np.float16)


class CacheWriter:
    """Crash-safe, resumable writer for one cache (see module docstring).

    Typical use::

        with CacheWriter(path, embedding_dim=512, encoder=info) as w:
            todo = [x for x in items if x.id not in w.known_ids]
            for batch in ...:
                w.add(ids, paths, emb_nd, labels_nc)   # one durable segment per call
        # leaving the block commits (merges segments into the .h5 atomically)

    Parameters
    ----------
    path
        Cache file. Created (empty, committed) when missing.
    embedding_dim, encoder, dtype, label_names, patch_shape
        Layout of a new cache. For an existing cache they must agree with it (encoder key and
        weights hash included), otherwise :class:`MedsaeError`: mixing encoders in one cache
        would silently corrupt every downstream result.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        embedding_dim: int,
        encoder: dict[str, Any],
        dtype: str = "float32",
        label_names: Sequence[str] | None = None,
        patch_shape: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self._layout = dict(embedding_dim=embedding_dim, encoder=encoder, dtype=dtype,
                            label_names=None if label_names is None else list(label_names),
                            patch_shape=patch_shape)
        self.wip = wip_dir(self.path)
        # Pending segments first: they must belong to this encoder before anything is created.
        pending_ids: set[str] = set()
        for seg in self._segments():
            try:
                with EmbeddingCache(seg) as s:
                    seg_ids = s.ids.tolist()
                    stale = _encoder_mismatch(s.encoder, encoder)
            except MedsaeError:
                logger.warning("dropping unreadable segment %s", seg.name)
                seg.unlink()
                continue
            if stale:
                # Pending rows of another encoder (e.g. the cache was deleted and restarted with
                # a different model): never merge them, never delete the user's work silently.
                raise MedsaeError(
                    f"pending segments in {self.wip.name}/ were embedded with {stale}; "
                    "re-run with that encoder to finish them, or delete that folder", self.path)
            pending_ids.update(seg_ids)
        stale_new = self.path.with_name(self.path.name + ".new.tmp")
        if stale_new.exists():
            stale_new.unlink()  # creation of the empty cache was killed before its rename
        if not self.path.exists():
            self._write_empty(self.path)
        with EmbeddingCache(self.path) as c:
            self._check_compatible(c)
            self.known_ids: set[str] = set(c.ids.tolist()) | pending_ids
        self.wip.mkdir(exist_ok=True)
        for tmp in self.wip.glob("*.tmp"):
            tmp.unlink()  # half-written segment of a killed run: never renamed, never counted

    # ---- public ---------------------------------------------------------------------------
    @property
    def n_pending(self) -> int:
        """Number of segment files waiting to be committed."""
        return len(self._segments())

    def add(
        self,
        ids: Sequence[str],
        paths: Sequence[str],
        embeddings_nd: np.ndarray,
        labels_nc: np.ndarray | None = None,
        patches_npd: np.ndarray | None = None,
    ) -> None:
        """Durably store one batch as a new segment (atomic: complete or absent)."""
        if len(ids) == 0:
            return
        self.wip.mkdir(exist_ok=True)  # commit() removes it when empty
        name = f"seg-{len(self._segments()):06d}-{uuid.uuid4().hex[:8]}"
        tmp = self.wip / (name + ".tmp")
        with h5py.File(tmp, "w") as f:
            _create_layout(f, **self._layout)
            _append_rows(f, ids, paths, embeddings_nd, labels_nc, patches_npd)
        _fsync_file(tmp)
        os.replace(tmp, self.wip / (name + ".h5"))
        self.known_ids.update(ids)

    def commit(self) -> int:
        """Merge pending segments into the cache atomically; returns rows added."""
        segs = self._segments()
        if not segs:
            self._cleanup_wip()
            return 0
        # The merge copy lives in the wip folder (same file system, so the rename is atomic):
        # a kill -9 mid-merge leaves it where the next writer's start-up sweep removes it.
        tmp = self.wip / f"merge-{uuid.uuid4().hex[:8]}.tmp"
        shutil.copyfile(self.path, tmp)
        added = 0
        try:
            with h5py.File(tmp, "r+") as f:
                have = set(f[IDS].asstr()[...].tolist())
                for seg in segs:
                    with EmbeddingCache(seg) as s:
                        keep = [i for i, k in enumerate(s.ids.tolist()) if k not in have]
                        if not keep:
                            continue
                        sl = np.asarray(keep)
                        ids = s.ids[sl].tolist()
                        _append_rows(
                            f, ids, s.paths[sl].tolist(), s.read_embeddings()[sl],
                            s.read_labels()[sl] if s.has_labels else None,
                            s.read_patches()[sl] if s.has_patches else None)
                        have.update(ids)
                        added += len(keep)
            _fsync_file(tmp)
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()
        for seg in segs:
            seg.unlink()
        self._cleanup_wip()
        return added

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # Commit on success and on Ctrl-C/cancel alike: segments are complete, so keeping
        # them is always correct; a kill -9 skips this and the next run commits instead.
        self.commit()

    # ---- internals ------------------------------------------------------------------------
    def _segments(self) -> list[Path]:
        return sorted(self.wip.glob("seg-*.h5")) if self.wip.is_dir() else []

    def _cleanup_wip(self) -> None:
        if self.wip.is_dir() and not any(self.wip.iterdir()):
            self.wip.rmdir()

    def _write_empty(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".new.tmp")
        with h5py.File(tmp, "w") as f:
            _create_layout(f, **self._layout)
        _fsync_file(tmp)
        os.replace(tmp, path)

    def _check_compatible(self, c: EmbeddingCache) -> None:
        lay = self._layout
        if c.embedding_dim != lay["embedding_dim"]:
            raise MedsaeError(
                f"cache holds {c.embedding_dim}-d embeddings, encoder gives "
                f"{lay['embedding_dim']}-d", self.path)
        stale = _encoder_mismatch(c.encoder, lay["encoder"])
        if stale:
            raise MedsaeError(f"cache was built with {stale}; use a new cache file", self.path)
        if (lay["label_names"] is not None) and c.label_names != lay["label_names"]:
            raise MedsaeError("labels differ from the cache's label columns", self.path)
        if lay["patch_shape"] is not None and not c.has_patches:
            raise MedsaeError("cache has no patch embeddings; use a new file for --patches",
                              self.path)
        if lay["patch_shape"] is None and c.has_patches:
            raise MedsaeError("cache stores patch embeddings; pass --patches to add to it",
                              self.path)
        if lay["label_names"] is None and c.has_labels:
            lay["label_names"] = c.label_names  # unlabelled additions get NaN rows


def _encoder_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Describe ``old`` when it is a different encoder from ``new`` (key or weights), else None."""
    if all(old.get(k) == new.get(k) for k in ("key", "weights_sha256")):
        return None
    return (f"encoder {old.get('key')!r} (weights {str(old.get('weights_sha256'))[:12]}), not "
            f"{new.get('key')!r} (weights {str(new.get('weights_sha256'))[:12]})")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_cache(
    path: str | os.PathLike[str],
    embeddings_nd: np.ndarray,
    *,
    ids: Iterable[str] | None = None,
    paths: Iterable[str] | None = None,
    labels_nc: np.ndarray | None = None,
    label_names: Sequence[str] | None = None,
    encoder: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a complete cache in one go (tests, synthetic data, conversions).

    Ids default to ``"row-<i>"`` and paths to ``""``. The file is written to a temporary name
    and renamed, so it is never left half-written.
    """
    path = Path(path)
    n, d = embeddings_nd.shape
    ids_l = [f"row-{i}" for i in range(n)] if ids is None else list(ids)
    paths_l = [""] * n if paths is None else list(paths)
    if labels_nc is not None and label_names is None:
        label_names = [f"label_{j}" for j in range(labels_nc.shape[1])]
    tmp = path.with_name(path.name + ".new.tmp")
    with h5py.File(tmp, "w") as f:
        _create_layout(f, embedding_dim=d, encoder=encoder or {"key": "unknown"}, dtype=dtype,
                       label_names=label_names, patch_shape=None)
        _append_rows(f, ids_l, paths_l, embeddings_nd, labels_nc, None)
    os.replace(tmp, path)
    return path
