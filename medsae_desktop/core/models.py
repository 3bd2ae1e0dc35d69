"""Known model files (``models/manifest.json``) and the local model store.

The store is ``paths.models_dir()/<name>/`` with an ``installed.json`` that records the sha256
of every file at install time, so ``verify`` detects changed or truncated weights later.

Network: :func:`install_model` downloads only when the user passes an explicit ``http(s)://``
URL; nothing else in medsae-desktop opens a connection.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medsae_desktop import paths
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.progress import Progress

MANIFEST_PATH = paths.bundled_dir("models") / "manifest.json"
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class ModelSpec:
    """One entry of the manifest."""

    name: str
    kind: str
    variant: str
    files: tuple[str, ...]
    alt_files: tuple[str, ...]
    sha256: str | None
    source: str
    licence: str
    notes: str = ""


def load_manifest(path: Path = MANIFEST_PATH) -> list[ModelSpec]:
    """Read the manifest of known models (validated)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MedsaeError(f"cannot read model manifest ({exc})", path) from exc
    if raw.get("schema_version") != 1:
        raise MedsaeError(f"unsupported manifest schema_version {raw.get('schema_version')}", path)
    specs = []
    for m in raw["models"]:
        specs.append(ModelSpec(
            name=m["name"], kind=m["kind"], variant=m["variant"], files=tuple(m["files"]),
            alt_files=tuple(m.get("alt_files", ())), sha256=m.get("sha256"), source=m["source"],
            licence=m["licence"], notes=m.get("notes", "")))
    return specs


def get_spec(name: str) -> ModelSpec:
    """The manifest entry called ``name`` (MedsaeError when unknown)."""
    for s in load_manifest():
        if s.name == name:
            return s
    known = ", ".join(s.name for s in load_manifest())
    raise MedsaeError(f"unknown model {name!r} (known: {known})")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def installed_dir(name: str) -> Path:
    """Folder an installed model lives in (may not exist)."""
    return paths.models_dir() / name


def installed_record(name: str) -> dict[str, Any] | None:
    """The ``installed.json`` of a model, or None if not installed."""
    p = installed_dir(name) / "installed.json"
    if not p.is_file():
        return None
    try:
        return dict(json.loads(p.read_text(encoding="utf-8")))
    except ValueError as exc:
        raise MedsaeError(f"broken install record ({exc})", p) from exc


def _has_required_files(folder: Path, spec: ModelSpec) -> bool:
    return all((folder / f).is_file() for f in spec.files) or (
        bool(spec.alt_files) and all((folder / f).is_file() for f in spec.alt_files))


def install_model(source: str, name: str) -> Generator[Progress, None, Path]:
    """Copy (or, for an explicit URL, download) a model into the store.

    Parameters
    ----------
    source
        A local folder, a local ``.zip``, or an ``http(s)://`` URL of a zip or single file.
    name
        Manifest name (e.g. ``medclip-resnet``).

    Yields
    ------
    Progress over bytes copied/downloaded. Returns the installed folder.
    """
    spec = get_spec(name)
    dest = installed_dir(name)
    with tempfile.TemporaryDirectory(dir=paths.models_dir(), prefix=f".{name}-") as tmp_s:
        tmp = Path(tmp_s)
        stage = tmp / "stage"
        stage.mkdir()
        parsed = urllib.parse.urlparse(source)
        if parsed.scheme in ("http", "https"):
            fname = Path(parsed.path).name or "download"
            local = tmp / fname
            yield from _download(source, local)
            src: Path = local
        elif parsed.scheme not in ("", "file"):
            raise MedsaeError(f"unsupported source scheme {parsed.scheme!r}", source)
        else:
            src = Path(parsed.path if parsed.scheme == "file" else source).expanduser()
            if not src.exists():
                raise MedsaeError("model source not found", src)
        if src.is_dir():
            files = [p for p in src.rglob("*") if p.is_file()]
            total = sum(p.stat().st_size for p in files)
            done = 0
            for p in files:
                out = stage / p.relative_to(src)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, out)
                done += p.stat().st_size
                yield Progress(done, total, f"copying {p.name}")
        elif zipfile.is_zipfile(src):
            _safe_unzip(src, stage)
        else:
            shutil.copyfile(src, stage / src.name)
        root = _find_model_root(stage, spec)
        if root is None:
            want = " + ".join(spec.files) + (f" (or {' + '.join(spec.alt_files)})" if spec.alt_files else "")
            raise MedsaeError(f"does not contain the files of {name}: expected {want}", source)
        record = {
            "name": name, "source": source if parsed.scheme else str(Path(source).resolve()),
            "installed_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": {str(p.relative_to(root)): sha256_file(p)
                      for p in sorted(root.rglob("*")) if p.is_file()},
        }
        if spec.sha256:
            main = next((f for f in spec.files if f in record["files"]), None)
            if main and record["files"][main] != spec.sha256:
                raise MedsaeError(f"checksum mismatch for {main}: not the known {name} file", source)
        (root / "installed.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(root, dest)
    return dest


def _download(url: str, out: Path) -> Generator[Progress, None, None]:
    # The one network path in the application, reached only from an explicit user request.
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(out, "wb") as f:  # noqa: S310
            total = int(resp.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                done += len(chunk)
                yield Progress(done, total, "downloading")
    except OSError as exc:
        raise MedsaeError(f"download failed ({exc})", url) from exc


def _safe_unzip(zip_path: Path, out: Path) -> None:
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            target = (out / info.filename).resolve()
            if not str(target).startswith(str(out.resolve()) + os.sep) and target != out.resolve():
                raise MedsaeError(f"unsafe path in zip: {info.filename!r}", zip_path)
        z.extractall(out)


def _find_model_root(stage: Path, spec: ModelSpec) -> Path | None:
    for folder in [stage, *sorted(p for p in stage.rglob("*") if p.is_dir())]:
        if _has_required_files(folder, spec):
            return folder
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of re-hashing one installed model."""

    name: str
    ok: bool
    problems: tuple[str, ...]


def verify_model(name: str) -> VerifyResult:
    """Re-hash an installed model's files against its install record."""
    rec = installed_record(name)
    if rec is None:
        return VerifyResult(name, False, ("not installed",))
    folder = installed_dir(name)
    problems = []
    for rel, digest in rec["files"].items():
        p = folder / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(p) != digest:
            problems.append(f"{rel}: sha256 changed since install")
    return VerifyResult(name, not problems, tuple(problems))
