"""Read DICOM, PNG and JPEG images into a display float image and the default 8-bit render.

This module is the display pipeline of DESIGN.md §5.1. Its 8-bit ``render_hw`` (MONOCHROME2
orientation: bright = dense) is exactly what the encoders see, so it must be correct and
deterministic; its ``display_hw`` float image lets the viewer re-window interactively through
:func:`apply_window`.

DICOM pipeline (reference ``models_and_dicom.md`` §4.1)::

    decode (pydicom 3: pylibjpeg/openjpeg/rle/Pillow plugins in-process; gdcm, which can
    abort the process on corrupt data, only in a worker process: core/safe_decode.py)
    -> padding mask on stored values
    -> Modality LUT / rescale -> VOI LUT sequence or window (VOILUTFunction honoured)
    -> invert once if MONOCHROME1 -> padding to black -> uint8

PNG/JPEG: 8-bit grayscale is used as is, 16-bit grayscale is scaled min-max to 8 bits, colour
is converted to grayscale (ITU-R BT.601 luma) with a warning.

Every problem with an input file raises :class:`~medsae_desktop.core.errors.MedsaeError`
with one line naming the file and the problem; nothing here prints, logs identifying header
values, or imports Qt.

Array names carry their shape: ``_hw`` (rows, columns), ``_hwc`` (rows, columns, channels).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import secrets
import stat
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medsae_desktop.core.errors import MedsaeError

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_FRAME_PIXELS",
    "MAX_PIXEL_DATA_BYTES",
    "HeaderSummary",
    "LoadedImage",
    "VoiLut",
    "Window",
    "apply_window",
    "image_content_hash",
    "is_probably_image",
    "read_header",
    "read_image",
    "save_png",
]

#: File name endings scanned as images in folders (compared case-insensitively).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".dcm", ".dicom", ".png", ".jpg", ".jpeg"})

#: Largest frame accepted, in pixels. The biggest radiographs (scanned film at 50 µm, large
#: mammograms) stay well under 70 MP; 100 MP leaves margin while keeping the float32 pipeline
#: (about 4 bytes + 1 byte + the decoded frame per pixel) within a desktop's memory.
MAX_FRAME_PIXELS: int = 100_000_000

#: Largest declared pixel data (all frames, decoded), in bytes. Checked against the header
#: BEFORE anything is decoded, so a corrupt or hostile header cannot make us allocate gigabytes.
MAX_PIXEL_DATA_BYTES: int = 1 << 30

#: Percentiles of the non-padding pixels used as the window when none is stored (DESIGN §5.1).
AUTO_WINDOW_PERCENTILES: tuple[float, float] = (0.5, 99.5)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# Formats people drop into image folders by mistake; naming them beats "unrecognised content".
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
)
# First tag of a DICOM data set written without the 128-byte preamble and "DICM" (old ACR-NEMA
# style files, raw dumps): group 0x0002 or 0x0008 in little or big endian.
_RAW_DICOM_STARTS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")

_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
# BT.601 luma, the weights Pillow's "L" conversion uses, so DICOM and PNG colour agree.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------------------------
# Public data
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Window:
    """A display window over the values of :attr:`LoadedImage.display_hw`.

    Attributes
    ----------
    center
        Window centre, in the value space of ``display_hw`` (after the Modality LUT).
    width
        Window width (> 0), same units.
    explanation
        Label for a window picker (DICOM WindowCenterWidthExplanation, or how it was chosen).
    """

    center: float
    width: float
    explanation: str = ""


@dataclasses.dataclass(frozen=True)
class VoiLut:
    """One item of a DICOM VOI LUT Sequence, decoded to a table.

    Attributes
    ----------
    first_mapped
        Input value mapped to ``table[0]``; inputs below map to ``table[0]``, inputs beyond the
        end to ``table[-1]`` (PS3.3 C.11.2.1.1).
    table
        Output value per input, 1-D unsigned integers.
    bits
        Bits per output entry (LUT Descriptor 3rd value); the output range is 0 .. 2**bits - 1.
    explanation
        LUTExplanation, or "".
    """

    first_mapped: int
    table: np.ndarray
    bits: int
    explanation: str = ""


@dataclasses.dataclass(frozen=True)
class HeaderSummary:
    """What ``medsae info`` and the viewer's header panel show.

    Attributes
    ----------
    fields
        Technical fields, safe to show and log (modality, size, bit depth, windows ...), in
        display order.
    phi
        Identifying fields (names, IDs, dates/times, institution, device identity, instance
        UIDs, free-text descriptions, private tags, overlays, EXIF/PNG text). Hidden unless the
        user explicitly asks; never log these.
    burned_in_annotation
        True when DICOM BurnedInAnnotation is "YES": the pixels may contain identifying text.
    warnings
        Problems a user should know about (for example the burned-in annotation).
    """

    fields: dict[str, str]
    phi: dict[str, str]
    burned_in_annotation: bool
    warnings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class LoadedImage:
    """A decoded image: display float values, its default 8-bit render and how it was made.

    All arrays are read-only; :func:`apply_window` returns new arrays.

    Attributes
    ----------
    path
        The file read.
    kind
        "dicom", "png" or "jpeg".
    display_hw
        float32 (rows, columns) values after the Modality LUT/rescale (colour: luma). Windows
        in :attr:`windows` and :attr:`default_window` are in this value space.
    render_hw
        uint8 (rows, columns) default render in MONOCHROME2 orientation (bright = dense): the
        encoder input. Equal to ``apply_window(image)``.
    windows
        Every valid stored window, in file order; may be empty.
    default_window
        First stored window, else the 0.5–99.5 percentile window of the non-padding pixels
        (PNG/JPEG: the 8-bit range or the 16-bit min–max).
    invert
        True for MONOCHROME1: the render is inverted once, after the VOI step.
    padding_mask_hw
        bool (rows, columns), True where the stored value is DICOM pixel padding (rendered
        black); None when the image has no padding pixels.
    voi_lut
        First VOI LUT Sequence item; when present it, not ``default_window``, makes the
        default render (pydicom's ``prefer_lut=True`` rule).
    voi_function
        VOILUTFunction used for windows: "LINEAR" (DICOM default), "LINEAR_EXACT" (used for
        PNG/JPEG and colour, where centre ± width/2 maps exactly to 0 and 255) or "SIGMOID".
    n_frames
        Number of frames in the file.
    frame
        Index of the frame read (0-based).
    header
        Header summary (technical fields and hidden identifying fields).
    warnings
        Things the user should know (colour converted, burned-in annotation, ...).
    value_range
        (min, max) of ``display_hw`` over non-padding pixels, for window sliders.
    """

    path: str
    kind: str
    display_hw: np.ndarray
    render_hw: np.ndarray
    windows: tuple[Window, ...]
    default_window: Window
    invert: bool
    padding_mask_hw: np.ndarray | None
    voi_lut: VoiLut | None
    voi_function: str
    n_frames: int
    frame: int
    header: HeaderSummary
    warnings: tuple[str, ...]
    value_range: tuple[float, float]


# ----------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str], frame: int = 0) -> LoadedImage:
    """Read a DICOM, PNG or JPEG file through the display pipeline.

    Parameters
    ----------
    path
        The image file. The format is recognised from the content, not the name.
    frame
        Frame of a multi-frame DICOM (0-based). PNG/JPEG have only frame 0.

    Returns
    -------
    LoadedImage
        Display values, default render, windows and header summary.

    Raises
    ------
    MedsaeError
        For every unreadable input (missing, empty, directory, permission, not an image,
        truncated, no pixel data, unsupported compression, absurd dimensions, bad frame), with
        one line naming the file and the problem.
    """
    path_str = os.fspath(path)
    kind = _sniff(path_str)
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
        raise MedsaeError(f"frame must be an integer, got {frame!r}", path_str)
    if kind in ("png", "jpeg"):
        with _corrupt_file_guard(path_str, kind.upper()):
            return _read_raster(path_str, kind, int(frame))
    return _read_dicom(path_str, int(frame), raw=(kind == "dicom-raw"))


def read_header(path: str | os.PathLike[str]) -> HeaderSummary:
    """Read only the header of an image file (no pixel decoding).

    Parameters
    ----------
    path
        DICOM, PNG or JPEG file. A DICOM file without pixel data (an SR, an RT plan) is
        summarised too, with a warning that it is not an image.

    Returns
    -------
    HeaderSummary

    Raises
    ------
    MedsaeError
        When the file cannot be read or is not a DICOM, PNG or JPEG file.
    """
    path_str = os.fspath(path)
    kind = _sniff(path_str)
    if kind in ("png", "jpeg"):
        with _corrupt_file_guard(path_str, kind.upper()), _open_pil(path_str) as im:
            return _raster_header(path_str, im, kind)
    with _quiet_reading(), _corrupt_file_guard(path_str):
        ds = _dcmread(path_str, raw=(kind == "dicom-raw"), stop_before_pixels=True)
        summary = _dicom_header(ds)
        if "Rows" not in ds or "Columns" not in ds:
            sop_name = _sop_class_name(ds)
            summary = dataclasses.replace(
                summary,
                warnings=summary.warnings + (f"{sop_name} with no image attributes: not an image",),
            )
    return summary


def apply_window(image: LoadedImage, window: Window | None = None) -> np.ndarray:
    """Render an image to 8 bits with a given window (the viewer's window/level).

    Parameters
    ----------
    image
        A result of :func:`read_image`.
    window
        Window over ``image.display_hw`` values, applied with ``image.voi_function``. None
        gives the default render (VOI LUT sequence if the file has one, else
        ``image.default_window``), identical to ``image.render_hw``.

    Returns
    -------
    numpy.ndarray
        New uint8 (rows, columns) array, MONOCHROME2 orientation (MONOCHROME1 inverted once),
        padding pixels black.

    Raises
    ------
    MedsaeError
        When the window width is not a positive finite number or the centre is not finite.
    """
    if window is not None:
        if not (np.isfinite(window.center) and np.isfinite(window.width) and window.width > 0):
            raise MedsaeError(
                f"invalid window: centre {window.center:g}, width {window.width:g} "
                "(the width must be > 0)",
                image.path,
            )
        return _render(image.display_hw, None, window, image.voi_function, image.invert,
                       image.padding_mask_hw)
    return _render(image.display_hw, image.voi_lut, image.default_window, image.voi_function,
                   image.invert, image.padding_mask_hw)


def image_content_hash(image: LoadedImage) -> str:
    """Stable identity of the decoded pixel data (cache key, DESIGN §4.1 ``/ids``).

    The hash covers the shape and the float32 display values (decoded pixels after the Modality
    LUT), so the same pixels give the same id whatever the file format, compression, name or
    header text (RG1_UNCR and its lossless JPEG 2000 twin share an id), and different frames
    of one file get different ids.

    Parameters
    ----------
    image
        A result of :func:`read_image`.

    Returns
    -------
    str
        64 lowercase hex characters (sha256).
    """
    values_hw = np.ascontiguousarray(image.display_hw, dtype=np.float32)
    digest = hashlib.sha256()
    # The prefix versions the scheme: changing what is hashed must change every id.
    digest.update(f"medsae-pixels-v1:float32:{values_hw.shape[0]}x{values_hw.shape[1]}:".encode())
    digest.update(memoryview(values_hw).cast("B"))
    return digest.hexdigest()


def save_png(array_hw_uint8: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write an 8-bit grayscale PNG atomically.

    The image goes to a temporary file in the target folder, is flushed to disk and then
    renamed over ``path`` (``os.replace``), so a crash or error never leaves a partial file and
    an existing file is replaced only by a complete one.

    Parameters
    ----------
    array_hw_uint8
        uint8 (rows, columns) array.
    path
        Output file.

    Raises
    ------
    ValueError
        If the array is not 2-D uint8 (a programming error).
    MedsaeError
        If the file cannot be written (missing folder, permission, disk full).
    """
    from PIL import Image

    array_hw_uint8 = np.asarray(array_hw_uint8)
    if array_hw_uint8.ndim != 2 or array_hw_uint8.dtype != np.uint8:
        raise ValueError(
            f"save_png needs a 2-D uint8 array, got {array_hw_uint8.dtype} {array_hw_uint8.shape}"
        )
    out_path = Path(os.fspath(path))
    out_dir = out_path.parent if str(out_path.parent) else Path(".")
    if not out_dir.is_dir():
        raise MedsaeError("cannot write: the output folder does not exist", out_path)
    if out_path.is_dir():
        raise MedsaeError("cannot write: the output path is a directory", out_path)
    image = Image.fromarray(np.ascontiguousarray(array_hw_uint8))  # uint8 2-D -> mode "L"
    # A hidden, unique name in the target folder (os.replace is atomic only within one file
    # system). os.open with mode 0o666 lets the umask set the final permissions, as for any
    # new file, without touching the process-wide umask.
    tmp_path = out_dir / f".{out_path.name}.{secrets.token_hex(6)}.tmp"
    created = False
    try:
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
        created = True
        with os.fdopen(fd, "wb") as tmp:
            # compress_level 1: on a full-size radiograph (RG1, 3.6 MP) about 5x faster than
            # Pillow's default 6 (0.33 s vs 1.9 s here) for a 17 % larger file (1.5 vs 1.3 MB).
            image.save(tmp, format="PNG", compress_level=1)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_path, out_path)
        created = False
    except OSError as exc:
        raise MedsaeError(f"cannot write: {exc.strerror or exc}", out_path) from exc
    finally:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)


def is_probably_image(path: str | os.PathLike[str]) -> bool:
    """Whether a folder scan should try to read this file as an image.

    Parameters
    ----------
    path
        A file found while scanning a folder.

    Returns
    -------
    bool
        True for names ending in one of :data:`IMAGE_EXTENSIONS` (any case) and for
        extension-less files (or UID-like names such as "1.2.840.1136") with the DICOM "DICM"
        marker at byte 128. False for hidden files
        (names starting with "." — this skips macOS "._x.dcm" resource forks), for DICOMDIR
        index files, for directories and for unreadable files. This only looks at the name and
        at most 132 bytes; :func:`read_image` decides.
    """
    p = Path(os.fspath(path))
    name = p.name
    if not name or name.startswith(".") or name.upper() == "DICOMDIR":
        return False
    suffix = p.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return p.is_file()
    # PACS exports often name files by their UID ("1.2.840.113619.2.55.3"), whose last
    # component looks like an extension: treat numeric suffixes as no extension.
    if suffix and not suffix[1:].isdigit():
        return False
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


# ----------------------------------------------------------------------------------------------
# Format sniffing and error translation
# ----------------------------------------------------------------------------------------------


def _sniff(path: str) -> str:
    """Check that ``path`` is a readable regular file and recognise its format.

    Returns "dicom", "dicom-raw" (no preamble), "png" or "jpeg"; raises MedsaeError otherwise.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MedsaeError("no such file", path) from None
    except PermissionError:
        raise MedsaeError("permission denied", path) from None
    except OSError as exc:
        raise MedsaeError(f"cannot read: {exc.strerror or exc}", path) from None
    if stat.S_ISDIR(st.st_mode):
        raise MedsaeError("is a directory, not an image file", path)
    if not stat.S_ISREG(st.st_mode):
        # FIFOs and devices would block or stream forever on read.
        raise MedsaeError("is not a regular file", path)
    if st.st_size == 0:
        raise MedsaeError("file is empty (0 bytes)", path)
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except PermissionError:
        raise MedsaeError("permission denied", path) from None
    except OSError as exc:
        raise MedsaeError(f"cannot read: {exc.strerror or exc}", path) from None

    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    for magic, what in _OTHER_MAGIC:
        if head.startswith(magic):
            raise MedsaeError(f"is {what}, not a DICOM, PNG or JPEG image", path)
    if head[:2] in _RAW_DICOM_STARTS and len(head) >= 8:
        return "dicom-raw"
    if _looks_like_text(head):
        raise MedsaeError("is a text file, not a DICOM, PNG or JPEG image", path)
    raise MedsaeError("not a DICOM, PNG or JPEG image (unrecognised content)", path)


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the sample.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(ch.isprintable() or ch in "\r\n\t\f" for ch in text)


def _clean(text: object, limit: int = 300) -> str:
    """One printable line of at most ``limit`` characters.

    Corrupt headers put control bytes and megabytes of junk into names and messages; keep the
    user's terminal line clean and short.
    """
    text = " ".join(str(text).split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """A third-party exception as a short single line (tracebacks never reach the user)."""
    return _clean(str(exc) or type(exc).__name__, limit)


def _syntax_label(ts: Any) -> str:
    """'Name (UID)', or just the UID when pydicom does not know it."""
    name, uid = _clean(getattr(ts, "name", ""), 100), _clean(str(ts), 70)
    return f"{name} ({uid})" if name and name != uid else f"unknown UID {uid}"


# Exceptions that must pass through: the user's Ctrl-C, interpreter exit, generator close.
# Everything else raised while decoding a file is that file's problem.
_NOT_OURS = (KeyboardInterrupt, SystemExit, GeneratorExit)


@contextlib.contextmanager
def _corrupt_file_guard(path: str, label: str = "DICOM") -> Iterator[None]:
    """Turn any exception from a corrupt file into one MedsaeError line.

    The original exception is chained, so ``medsae --debug`` still shows where it came from.
    """
    try:
        yield
    except MedsaeError:
        raise
    except MemoryError:
        raise MedsaeError(f"not enough memory to read this {label} file", path) from None
    except _NOT_OURS:
        raise
    except BaseException as exc:  # noqa: BLE001 - includes pyo3 PanicException from plugins
        raise MedsaeError(
            f"corrupt {label} file ({type(exc).__name__}: {_one_line(exc)})", path
        ) from exc


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved: tuple[int, Any] | None = None  # pydicom logger level, warnings.showwarning
_quiet_thread = threading.local()


def _drop_or_show_warning(  # noqa: ANN001 - the signature of warnings.showwarning
    message, category, filename, lineno, file=None, line=None
):
    """``warnings.showwarning`` while a read is in progress: drop in reading threads only."""
    if getattr(_quiet_thread, "depth", 0) > 0:
        return
    saved = _quiet_saved[1] if _quiet_saved is not None else None
    if saved is not None and saved is not warnings._showwarning_orig:  # a custom hook
        saved(message, category, filename, lineno, file, line)
        return
    # The standard path (which catch_warnings(record=True) redirects to its list).
    warnings._showwarnmsg_impl(  # type: ignore[attr-defined]
        warnings.WarningMessage(message, category, filename, lineno, file, line)
    )


@contextlib.contextmanager
def _quiet_reading() -> Iterator[None]:
    """Silence library warnings and pydicom's log records while this thread reads a file.

    pydicom reports recoverable problems through ``warnings`` (often quoting header values,
    which may be PHI) and logs every failed decoding plugin with a full traceback on the
    "pydicom" logger; Pillow warns too. Left alone these would reach the command line's
    stderr, whose contract is one line. ``warnings.catch_warnings`` is not thread-safe and the
    embed pipeline reads on a thread pool, so instead the first reader in installs a
    ``showwarning`` hook that drops warnings raised by reading threads (and passes the others
    on), raises the "pydicom" logger level (which silences its child loggers too), and the
    last one out restores both.
    """
    global _quiet_depth, _quiet_saved
    # pydicom sets its logger's level when first imported; import it first so that our
    # override is not replaced by an import that happens inside this block.
    import pydicom  # noqa: F401

    pydicom_logger = logging.getLogger("pydicom")
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved = (pydicom_logger.level, warnings.showwarning)
            pydicom_logger.setLevel(logging.CRITICAL + 1)
            warnings.showwarning = _drop_or_show_warning
        _quiet_depth += 1
    _quiet_thread.depth = getattr(_quiet_thread, "depth", 0) + 1
    try:
        yield
    finally:
        _quiet_thread.depth -= 1
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_saved is not None:
                level, showwarning = _quiet_saved
                pydicom_logger.setLevel(level)
                # Restore only our own hook: whoever replaced it since then owns it now.
                if warnings.showwarning is _drop_or_show_warning:
                    warnings.showwarning = showwarning
                _quiet_saved = None


# ----------------------------------------------------------------------------------------------
# DICOM
# ----------------------------------------------------------------------------------------------


def _dcmread(path: str, *, raw: bool, stop_before_pixels: bool) -> Any:
    """``pydicom.dcmread`` with every failure turned into one MedsaeError line."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    with _quiet_reading():
        try:
            ds = dcmread(path, force=raw, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError as exc:
            raise MedsaeError(f"not a valid DICOM file ({_one_line(exc, 120)})", path) from None
        except PermissionError:
            raise MedsaeError("permission denied", path) from None
        except OSError as exc:
            raise MedsaeError(f"cannot read: {exc.strerror or exc}", path) from None
        except Exception as exc:  # pydicom raises many types on corrupt files
            raise MedsaeError(
                f"corrupt or truncated DICOM file ({type(exc).__name__}: {_one_line(exc)})", path
            ) from None
    if raw:
        if len(ds) == 0 or not any(tag.group in (0x0008, 0x0010, 0x0028) for tag in ds.keys()):
            raise MedsaeError("not a DICOM, PNG or JPEG image (unrecognised content)", path)
        _set_raw_transfer_syntax(ds)
    return ds


def _set_raw_transfer_syntax(ds: Any) -> None:
    """Give a preamble-less data set the transfer syntax its encoding implies (pydicom needs it)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = ds.original_encoding
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif little:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian


def _sop_class_name(ds: Any) -> str:
    uid = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
    if not isinstance(uid, str) or not uid.strip():  # absent, or multi-valued junk
        return "DICOM object of unknown class"
    name = getattr(uid, "name", "") or str(uid)
    return _clean(name, 100)


def _transfer_syntax(ds: Any, path: str) -> Any:
    ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if ts is None:
        raise MedsaeError("DICOM file has no transfer syntax in its file meta information", path)
    return ts


def _int_attr(ds: Any, keyword: str, default: int | None = None) -> int | None:
    value = ds.get(keyword, default)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _check_geometry(ds: Any, path: str) -> tuple[int, int, int, int]:
    """Validate the declared image size before decoding; return rows, columns, frames, samples.

    Refusing here, from the header alone, is what keeps a corrupt or hostile header (say
    65535 x 65535 x 1000 frames) from making the decoder allocate gigabytes.
    """
    rows = _int_attr(ds, "Rows")
    columns = _int_attr(ds, "Columns")
    if rows is None or columns is None:
        raise MedsaeError("DICOM image has no valid Rows/Columns in its header", path)
    n_frames = _int_attr(ds, "NumberOfFrames", 1)
    samples = _int_attr(ds, "SamplesPerPixel", 1)
    bits_allocated = _int_attr(ds, "BitsAllocated", 16)
    if n_frames is None:
        raise MedsaeError(f"invalid NumberOfFrames {ds.get('NumberOfFrames')!r}", path)
    if rows <= 0 or columns <= 0 or n_frames <= 0:
        raise MedsaeError(
            f"invalid image dimensions in header: {rows} rows x {columns} columns x "
            f"{n_frames} frame(s)", path,
        )
    if samples not in (1, 3):
        raise MedsaeError(f"unsupported SamplesPerPixel {samples} (expected 1 or 3)", path)
    if bits_allocated is None or bits_allocated not in (1, 8, 16, 32, 64):
        raise MedsaeError(f"unsupported BitsAllocated {ds.get('BitsAllocated')!r}", path)
    frame_pixels = rows * columns
    total_bytes = frame_pixels * n_frames * samples * max(bits_allocated, 8) // 8
    if frame_pixels > MAX_FRAME_PIXELS or total_bytes > MAX_PIXEL_DATA_BYTES:
        raise MedsaeError(
            f"image too large: header declares {rows} x {columns} pixels x {n_frames} "
            f"frame(s) x {samples} sample(s) at {bits_allocated} bits "
            f"({total_bytes / 2**30:.1f} GiB decoded); the limit is "
            f"{MAX_FRAME_PIXELS // 1_000_000} MP per frame and "
            f"{MAX_PIXEL_DATA_BYTES / 2**30:.0f} GiB in all", path,
        )
    return rows, columns, n_frames, samples


def _check_decoder(ds: Any, ts: Any, path: str) -> None:
    """Refuse pixel data no installed plugin can decode, naming the syntax and what is missing."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGExtended12Bit

    syntax = _syntax_label(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise MedsaeError(
            f"unsupported transfer syntax {syntax}: no pixel data decoder exists for it", path
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin installed"
        raise MedsaeError(
            f"cannot decode transfer syntax {syntax}: no decoding plugin installed "
            f"(missing: {missing})", path,
        )
    bits_stored = _int_attr(ds, "BitsStored", 8) or 8
    # gdcm and Pillow refuse 12-bit JPEG Extended; only pylibjpeg-libjpeg decodes it, and that
    # plugin is GPL, so the product does not ship it (reference §4.2). Say so up front rather
    # than relaying two plugin tracebacks.
    if ts == JPEGExtended12Bit and bits_stored > 8 and "pylibjpeg" not in decoder.available_plugins:
        missing = "; ".join(decoder.missing_dependencies)
        raise MedsaeError(
            f"unsupported: 12-bit {syntax}: gdcm and Pillow decode only 8-bit JPEG Extended "
            f"and the GPL-licensed pylibjpeg-libjpeg plugin is not installed"
            f"{' (' + missing + ')' if missing else ''}", path,
        )


# Decoding plugins to use in-process, in order, per transfer syntax (others: every available
# plugin but gdcm, in pydicom's order). Chosen by fuzzing each plugin with corrupted test files:
# - gdcm aborts or segfaults the whole process on some corrupt JPEG Baseline, JPEG Lossless,
#   JPEG-LS and JPEG 2000 data, so it NEVER runs in this process. Where it is the only
#   decoder (JPEG Lossless and JPEG-LS: the other one, pylibjpeg-libjpeg, is GPL) it runs in a
#   worker process (core/safe_decode.py, which also says why no in-process alternative was
#   taken), and a crash there is reported as a corrupt file. It is never a fallback after
#   another plugin has failed (which signals corrupt data).
# - pylibjpeg-rle (Rust) raises pyo3's PanicException on corrupt RLE data; that is caught and
#   pydicom's own decoder (8x slower: 0.4 s for a 3.6 MP radiograph) gives the final verdict.
# - openjpeg (pylibjpeg) is the fastest JPEG 2000 decoder here; Pillow is the fallback.
_DECODE_PLUGINS: dict[str, tuple[str, ...]] = {
    "1.2.840.10008.1.2.4.50": ("pillow",),  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": ("pillow",),  # JPEG Extended (Process 2 and 4), 8-bit
    "1.2.840.10008.1.2.5": ("pylibjpeg", "pydicom"),  # RLE Lossless
    "1.2.840.10008.1.2.4.90": ("pylibjpeg", "pillow"),  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": ("pylibjpeg", "pillow"),  # JPEG 2000
    "1.2.840.10008.1.2.4.201": ("pylibjpeg",),  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": ("pylibjpeg",),  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": ("pylibjpeg",),  # HTJ2K
}

# The plugin that must never run in this process (see above).
_ISOLATED_PLUGIN = "gdcm"


class _DecoderCrashed(Exception):
    """The isolated decoder died or hung on this frame; the message is the whole verdict."""


def _decode_frame(ds: Any, ts: Any, frame: int) -> np.ndarray:
    """Decode one frame with the preferred plugins, falling back in order.

    Plugins run in this process except gdcm, which runs only in a worker process and only
    where no other plugin is available (JPEG Lossless and JPEG-LS).
    """
    from pydicom.pixels import get_decoder, pixel_array

    if not ts.is_compressed:
        return pixel_array(ds, index=frame)
    available = get_decoder(ts).available_plugins
    order = _DECODE_PLUGINS.get(str(ts), available)
    plugins = [p for p in order if p in available and p != _ISOLATED_PLUGIN]
    if not plugins:
        if _ISOLATED_PLUGIN in available:
            return _decode_frame_isolated(ds, ts, frame)
        raise RuntimeError("no in-process decoding plugin is available")
    with _native_stderr_silenced():
        failures: list[str] = []
        for plugin in plugins:
            try:
                return pixel_array(ds, index=frame, decoding_plugin=plugin)
            except (MemoryError, *_NOT_OURS):
                raise
            except BaseException as exc:  # noqa: BLE001 - pyo3 panics derive from BaseException
                failures.append(f"{plugin}: {_one_line(exc, 150)}")
        raise RuntimeError("; ".join(failures))


def _decode_frame_isolated(ds: Any, ts: Any, frame: int) -> np.ndarray:
    """Decode one frame with gdcm in a worker process (core/safe_decode.py).

    The encoded frame is cut out here by pydicom's pure-Python encapsulation code, exactly as
    its decoder would, and only that frame and the Image Pixel options cross to the worker.
    Raises RuntimeError for an ordinary decoding error (reported like any plugin's) and
    _DecoderCrashed when the worker died or hung.
    """
    from pydicom.encaps import get_frame
    from pydicom.pixels import as_pixel_options

    from medsae_desktop.core import safe_decode

    opts = as_pixel_options(ds)
    n_frames = int(opts["number_of_frames"])
    encoded = get_frame(ds.PixelData, frame, number_of_frames=n_frames,
                        extended_offsets=opts.pop("extended_offsets", None))
    opts["number_of_frames"] = 1
    options: dict[str, Any] = {}
    for key, value in opts.items():
        if value is None or isinstance(value, (int, str)):
            options[key] = value  # IS/US are int subclasses, CS a str subclass: JSON handles them
        else:  # a multi-valued or otherwise malformed Image Pixel attribute
            raise RuntimeError(f"invalid {key} value in the header")
    rows, columns = int(opts.get("rows") or 0), int(opts.get("columns") or 0)
    samples = int(opts.get("samples_per_pixel") or 1)
    # 8 bytes per sample is the widest dtype a decoder can return.
    max_bytes = max(rows * columns * samples * 8, 1)
    syntax = _clean(ts.name, 100)
    try:
        return safe_decode.decode_frame(encoded, str(ts), options, max_bytes=max_bytes)
    except safe_decode.DecodeFailedError as exc:
        raise RuntimeError(str(exc)) from None
    except safe_decode.DecoderCrashedError as exc:
        raise _DecoderCrashed(
            f"decoder crashed on corrupt {syntax} data (gdcm worker process "
            f"{_one_line(exc, 80)})"
        ) from None
    except safe_decode.DecoderTimeoutError as exc:
        raise _DecoderCrashed(
            f"decoder hung on {syntax} data (corrupt?): {_one_line(exc, 120)}; "
            "the gdcm worker process was stopped"
        ) from None
    except safe_decode.DecoderStartError as exc:
        raise _DecoderCrashed(
            f"cannot decode {syntax}: its decoder (gdcm) runs only in a separate process, "
            f"and {_one_line(exc, 150)}"
        ) from None
    except safe_decode.IsolatedDecodeError as exc:
        raise _DecoderCrashed(f"cannot decode {syntax}: {_one_line(exc, 150)}") from None


_stderr_lock = threading.Lock()
_stderr_depth = 0
_stderr_saved_fd: int | None = None
_stderr_sink: Any = None


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file while native codecs run.

    openjpeg, gdcm's libjpeg and Rust's panic hook write diagnostics straight to the process's
    stderr, bypassing Python; on a corrupt file that is a screenful of text around our one-line
    error. Redirecting the descriptor is process-wide, so concurrent decodes share one
    redirection (depth counter) and the last one out restores it; output written by other
    threads in that window is dropped. The captured text is not logged: it can echo data.
    """
    global _stderr_depth, _stderr_saved_fd, _stderr_sink
    with _stderr_lock:
        if _stderr_depth == 0:
            try:
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):
                pass
            try:
                sink = tempfile.TemporaryFile()
                saved = os.dup(2)
            except OSError:  # no usable fd 2 (some GUI launches): nothing to silence
                sink, saved = None, None
            if saved is not None:
                os.dup2(sink.fileno(), 2)
            _stderr_saved_fd, _stderr_sink = saved, sink
        _stderr_depth += 1
    try:
        yield
    finally:
        with _stderr_lock:
            _stderr_depth -= 1
            if _stderr_depth == 0 and _stderr_saved_fd is not None:
                os.dup2(_stderr_saved_fd, 2)
                os.close(_stderr_saved_fd)
                n_bytes = _stderr_sink.tell()
                _stderr_sink.close()
                _stderr_saved_fd, _stderr_sink = None, None
                if n_bytes:
                    logger.debug("native decoder wrote %d bytes to stderr (dropped)", n_bytes)


# pydicom's message for native pixel data shorter than the header implies.
_SHORT_PIXEL_DATA = re.compile(r"less than expected \((\d+) vs (\d+) bytes\)")


def _read_dicom(path: str, frame: int, *, raw: bool) -> LoadedImage:
    # pydicom converts header elements lazily, on first access, so warnings and errors from
    # a corrupt header can surface anywhere below, not just in dcmread.
    with _quiet_reading(), _corrupt_file_guard(path):
        return _read_dicom_unguarded(path, frame, raw=raw)


def _read_dicom_unguarded(path: str, frame: int, *, raw: bool) -> LoadedImage:
    ds = _dcmread(path, raw=raw, stop_before_pixels=False)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop_name = _sop_class_name(ds)
        if "Rows" in ds or "Image Storage" in sop_name:
            # An image object without its pixels is almost always a file cut short.
            raise MedsaeError(
                f"{sop_name} without pixel data: the file is probably truncated", path
            )
        raise MedsaeError(f"contains no image: {sop_name} has no pixel data", path)

    rows, columns, n_frames, samples = _check_geometry(ds, path)
    if not 0 <= frame < n_frames:
        raise MedsaeError(
            f"frame {frame} is out of range: the image has {n_frames} frame(s) "
            f"(valid: 0 to {n_frames - 1})", path,
        )
    ts = _transfer_syntax(ds, path)
    _check_decoder(ds, ts, path)

    with _quiet_reading():
        try:
            stored = _decode_frame(ds, ts, frame)
        except _DecoderCrashed as exc:
            raise MedsaeError(str(exc), path) from None
        except MemoryError:
            raise MedsaeError("not enough memory to decode the pixel data", path) from None
        except _NOT_OURS:
            raise
        except BaseException as exc:  # noqa: BLE001 - see _NOT_OURS
            # Plugins raise RuntimeError/ValueError/... on corrupt data, and the Rust-based
            # pylibjpeg-rle raises pyo3's PanicException, which derives from BaseException.
            short = _SHORT_PIXEL_DATA.search(str(exc))
            if short:
                raise MedsaeError(
                    f"pixel data are truncated: {short.group(1)} of {short.group(2)} bytes "
                    "present", path,
                ) from None
            raise MedsaeError(
                f"cannot decode pixel data ({_clean(ts.name, 100)}): {_one_line(exc)}", path
            ) from None

    expected_shape = (rows, columns) if samples == 1 else (rows, columns, samples)
    if stored.shape != expected_shape:
        raise MedsaeError(
            f"decoded pixel data have shape {stored.shape}, header says {expected_shape}", path
        )

    header = _dicom_header(ds)
    warnings_list = list(header.warnings)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()

    if samples == 3 or photometric == "PALETTE COLOR":
        display_hw, full_range = _dicom_colour_to_luma(stored, ds, photometric, path)
        warnings_list.append(f"colour image ({photometric or 'RGB'}) converted to grayscale")
        # Colour pixel values are already display values, so map the full range linearly
        # instead of stretching percentiles.
        default_window = Window(full_range / 2.0, full_range, "full range (colour)")
        return _finish(
            path, "dicom", display_hw, windows=(), default_window=default_window,
            invert=False, padding_mask_hw=None, voi_lut=None, voi_function="LINEAR_EXACT",
            n_frames=n_frames, frame=frame, header=header, warnings_list=warnings_list,
        )

    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        warnings_list.append(
            f"unknown PhotometricInterpretation '{photometric}': shown as MONOCHROME2"
        )
    invert = photometric == "MONOCHROME1"
    shape = str(ds.get("PresentationLUTShape", "")).strip().upper()
    if shape == "INVERSE" and photometric == "MONOCHROME2":
        # DX requires MONOCHROME1 with INVERSE, so INVERSE on MONOCHROME2 is a header error;
        # like dcm4chee we trust PhotometricInterpretation (reference §4.1 step 6).
        warnings_list.append(
            "PresentationLUTShape INVERSE on a MONOCHROME2 image ignored: "
            "PhotometricInterpretation decides the polarity"
        )

    padding_mask_hw = _padding_mask(stored, ds)
    display_hw = _modality_lut(stored, ds)
    del stored

    voi_function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if voi_function not in _VOI_FUNCTIONS:
        warnings_list.append(f"unknown VOILUTFunction '{voi_function}': using LINEAR")
        voi_function = "LINEAR"
    windows, window_notes = _stored_windows(ds, voi_function)
    warnings_list.extend(window_notes)
    voi_lut, lut_notes = _first_voi_lut(ds)
    warnings_list.extend(lut_notes)

    if windows:
        default_window = windows[0]
    else:
        default_window = _percentile_window(display_hw, padding_mask_hw)
    return _finish(
        path, "dicom", display_hw, windows=windows, default_window=default_window,
        invert=invert, padding_mask_hw=padding_mask_hw, voi_lut=voi_lut,
        voi_function=voi_function, n_frames=n_frames, frame=frame, header=header,
        warnings_list=warnings_list,
    )


def _finish(
    path: str,
    kind: str,
    display_hw: np.ndarray,
    *,
    windows: tuple[Window, ...],
    default_window: Window,
    invert: bool,
    padding_mask_hw: np.ndarray | None,
    voi_lut: VoiLut | None,
    voi_function: str,
    n_frames: int,
    frame: int,
    header: HeaderSummary,
    warnings_list: list[str],
) -> LoadedImage:
    """Render the default view, freeze the arrays and build the LoadedImage."""
    render_hw = _render(display_hw, voi_lut, default_window, voi_function, invert,
                        padding_mask_hw)
    valid = display_hw if padding_mask_hw is None else display_hw[~padding_mask_hw]
    value_range = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 0.0)
    for arr in (display_hw, render_hw, padding_mask_hw):
        if arr is not None:
            arr.setflags(write=False)
    return LoadedImage(
        path=path, kind=kind, display_hw=display_hw, render_hw=render_hw, windows=windows,
        default_window=default_window, invert=invert, padding_mask_hw=padding_mask_hw,
        voi_lut=voi_lut, voi_function=voi_function, n_frames=n_frames, frame=frame,
        header=header, warnings=tuple(dict.fromkeys(warnings_list)), value_range=value_range,
    )


def _padding_mask(stored_hw: np.ndarray, ds: Any) -> np.ndarray | None:
    """True where the stored value is pixel padding (PS3.3 C.7.5.1.1.2), else None if none.

    The mask is taken on the stored values, before any LUT, because that is where the
    PixelPaddingValue (and optional PixelPaddingRangeLimit) are defined.
    """
    pad_value = ds.get("PixelPaddingValue")
    if pad_value is None or pad_value == "" or not np.issubdtype(stored_hw.dtype, np.integer):
        return None
    pad_limit = ds.get("PixelPaddingRangeLimit")
    if pad_limit is None or pad_limit == "":
        mask_hw = stored_hw == int(pad_value)
    else:
        lo, hi = sorted((int(pad_value), int(pad_limit)))
        mask_hw = (stored_hw >= lo) & (stored_hw <= hi)
    return mask_hw if mask_hw.any() else None


def _modality_lut(stored_hw: np.ndarray, ds: Any) -> np.ndarray:
    """Stored values -> modality values as float32 (PS3.3 C.11.1)."""
    from pydicom.pixels import apply_modality_lut

    if ds.get("ModalityLUTSequence"):
        # A table lookup: pydicom decodes the LUT (US/OW, endianness, first-mapped clipping).
        return np.asarray(apply_modality_lut(stored_hw, ds), dtype=np.float32)
    # Rescale in float32 ourselves: pydicom's apply_modality_lut works in float64, twice the
    # memory traffic for no visible gain on <= 16-bit data (float32 is exact below 2**24).
    display_hw = stored_hw.astype(np.float32)
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    if slope is not None and intercept is not None and slope != "" and intercept != "":
        slope_f, intercept_f = float(slope), float(intercept)
        if slope_f != 1.0:
            display_hw *= np.float32(slope_f)
        if intercept_f != 0.0:
            display_hw += np.float32(intercept_f)
    return display_hw


def _stored_windows(ds: Any, voi_function: str) -> tuple[tuple[Window, ...], list[str]]:
    """All (WindowCenter, WindowWidth) pairs with their explanations, invalid ones dropped."""
    centers = _multi(ds.get("WindowCenter"))
    widths = _multi(ds.get("WindowWidth"))
    notes: list[str] = []
    if not centers or not widths:
        return (), notes
    if len(centers) != len(widths):
        notes.append(
            f"{len(centers)} window centre(s) but {len(widths)} width(s): "
            f"using the first {min(len(centers), len(widths))}"
        )
    explanations = [_clean(e, 64) for e in _multi(ds.get("WindowCenterWidthExplanation"))]
    min_width = 1.0 if voi_function == "LINEAR" else 0.0  # PS3.3 C.11.2.1.2.1 / C.11.2.1.3
    windows: list[Window] = []
    for i, (center, width) in enumerate(zip(centers, widths)):
        try:
            c, w = float(center), float(width)
        except (TypeError, ValueError):
            notes.append(f"window {i + 1} is not numeric: ignored")
            continue
        if not (np.isfinite(c) and np.isfinite(w)) or w < min_width or w <= 0:
            notes.append(f"window {i + 1} has an invalid width {w:g}: ignored")
            continue
        label = explanations[i] if i < len(explanations) and explanations[i] else f"window {i + 1}"
        windows.append(Window(c, w, label))
    return tuple(windows), notes


def _multi(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _first_voi_lut(ds: Any) -> tuple[VoiLut | None, list[str]]:
    """Decode the first VOI LUT Sequence item to a table (pydicom does the LUT parsing)."""
    from pydicom.pixels import apply_voi

    seq = ds.get("VOILUTSequence")
    if not seq:
        return None, []
    item = seq[0]
    descriptor = item.get("LUTDescriptor")
    if descriptor is None or item.get("LUTData") is None or len(descriptor) != 3:
        return None, ["VOI LUT sequence without LUT data: ignored"]
    n_entries = int(descriptor[0]) or 65536
    first_mapped = int(descriptor[1])
    bits = int(descriptor[2])
    inputs = np.arange(first_mapped, first_mapped + n_entries, dtype=np.int64)
    try:
        with _quiet_reading():
            table = np.asarray(apply_voi(inputs, ds, index=0))
    except Exception as exc:  # unsupported entry depth, short LUT data, ...
        return None, [f"VOI LUT sequence ignored: {_one_line(exc, 120)}"]
    if table.shape != (n_entries,):
        return None, ["VOI LUT sequence has the wrong number of entries: ignored"]
    table.setflags(write=False)
    explanation = _clean(item.get("LUTExplanation", "") or "", 64)
    notes = []
    if len(seq) > 1:
        notes.append(f"{len(seq)} VOI LUTs stored: the first is used")
    return VoiLut(first_mapped, table, bits, explanation), notes


def _percentile_window(display_hw: np.ndarray, padding_mask_hw: np.ndarray | None) -> Window:
    """The 0.5–99.5 percentile window of the non-padding pixels (DESIGN §5.1)."""
    values = display_hw if padding_mask_hw is None else display_hw[~padding_mask_hw]
    if values.size == 0:
        return Window(0.0, 1.0, "auto (no non-padding pixels)")
    lo, hi = np.percentile(values, AUTO_WINDOW_PERCENTILES)
    lo, hi = float(lo), float(hi)
    if not hi > lo:
        # Flat image: any width shows it as one grey; 1 keeps LINEAR valid (width >= 1).
        return Window(lo, 1.0, "auto (flat image)")
    return Window((lo + hi) / 2.0, hi - lo, "auto: 0.5–99.5 percentile")


def _dicom_colour_to_luma(
    stored: np.ndarray, ds: Any, photometric: str, path: str
) -> tuple[np.ndarray, float]:
    """Colour DICOM -> float32 luma and the value that means full brightness."""
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        try:
            with _quiet_reading():
                stored = apply_color_lut(stored, ds)
        except Exception as exc:
            raise MedsaeError(f"cannot apply the palette colour LUT: {_one_line(exc)}", path) \
                from None
        full = float(np.iinfo(stored.dtype).max) if stored.dtype.kind in "ui" else 1.0
    else:
        bits_stored = _int_attr(ds, "BitsStored", 8) or 8
        full = float(2**bits_stored - 1)
    return _luma(stored), full


def _luma(rgb_hwc: np.ndarray) -> np.ndarray:
    """BT.601 luma as float32; grey stored as RGB (equal channels) comes back unchanged."""
    red, green, blue = rgb_hwc[..., 0], rgb_hwc[..., 1], rgb_hwc[..., 2]
    if np.array_equal(red, green) and np.array_equal(red, blue):
        return red.astype(np.float32)
    luma_hw = red.astype(np.float32) * np.float32(_LUMA_WEIGHTS[0])
    luma_hw += green.astype(np.float32) * np.float32(_LUMA_WEIGHTS[1])
    luma_hw += blue.astype(np.float32) * np.float32(_LUMA_WEIGHTS[2])
    return luma_hw


# ----------------------------------------------------------------------------------------------
# Rendering (shared by read_image and apply_window, so the default render equals
# apply_window(image) bit for bit)
# ----------------------------------------------------------------------------------------------


def _render(
    display_hw: np.ndarray,
    voi_lut: VoiLut | None,
    window: Window,
    voi_function: str,
    invert: bool,
    padding_mask_hw: np.ndarray | None,
) -> np.ndarray:
    if voi_lut is not None:
        render_hw = _apply_voi_lut_8bit(display_hw, voi_lut)
    else:
        render_hw = _window_8bit(display_hw, window, voi_function)
    if invert:
        # MONOCHROME1: minimum shown white AFTER the VOI step (PS3.3 C.7.6.3.1.2), exactly once;
        # PresentationLUTShape INVERSE on MONOCHROME1 is this same inversion, not a second one.
        np.subtract(np.uint8(255), render_hw, out=render_hw)
    if padding_mask_hw is not None:
        render_hw[padding_mask_hw] = 0
    return render_hw


def _window_8bit(display_hw: np.ndarray, window: Window, voi_function: str) -> np.ndarray:
    """Window to uint8 with the DICOM VOI functions (PS3.3 C.11.2.1.2-3), in float32.

    LINEAR maps x to ((x - (c - 0.5)) / (w - 1) + 0.5), LINEAR_EXACT to ((x - c) / w + 0.5),
    each clipped to [0, 1]; SIGMOID to 1 / (1 + exp(-4 (x - c) / w)). The result is scaled to
    0..255 and rounded half up. This equals pydicom's ``apply_windowing`` rescaled to 8 bits
    (tested), at a fraction of its cost: pydicom works in float64 with boolean indexing, too
    slow for interactive window/level on a 3.6-megapixel radiograph.
    """
    center, width = float(window.center), float(window.width)
    if voi_function == "SIGMOID":
        scaled_hw = display_hw.astype(np.float32)  # a new array we may overwrite
        scaled_hw -= np.float32(center)
        scaled_hw *= np.float32(-4.0 / width)
        np.exp(scaled_hw, out=scaled_hw)
        scaled_hw += np.float32(1.0)
        np.divide(np.float32(255.0), scaled_hw, out=scaled_hw)
        scaled_hw += np.float32(0.5)
        np.clip(scaled_hw, 0.0, 255.0, out=scaled_hw)
        return scaled_hw.astype(np.uint8)
    if voi_function == "LINEAR":
        center, width = center - 0.5, width - 1.0
    if width <= 0.0:
        # LINEAR with width 1 is a threshold: values above the centre are white.
        return np.where(display_hw > center, np.uint8(255), np.uint8(0))
    # y = 255 * ((x - c) / w + 0.5) + 0.5 = a * x + b, then clip and truncate (= round half up).
    gain = 255.0 / width
    offset = 255.0 * (0.5 - center / width) + 0.5
    scaled_hw = np.multiply(display_hw, np.float32(gain), dtype=np.float32)
    scaled_hw += np.float32(offset)
    np.clip(scaled_hw, 0.0, 255.0, out=scaled_hw)
    return scaled_hw.astype(np.uint8)


def _apply_voi_lut_8bit(display_hw: np.ndarray, voi_lut: VoiLut) -> np.ndarray:
    """VOI LUT lookup straight to 8 bits through a precomputed uint8 table."""
    n_entries = voi_lut.table.shape[0]
    # The LUT output range is 0 .. 2**bits - 1 (PS3.3 C.11.2.1.1); tolerate tables that exceed
    # their declared depth rather than wrapping.
    out_max = max(float(2**voi_lut.bits - 1), float(voi_lut.table.max()), 1.0)
    table_8bit = np.floor(voi_lut.table.astype(np.float64) * (255.0 / out_max) + 0.5)
    table_8bit = table_8bit.astype(np.uint8)
    # Modality values are integers for LUT-bearing images; rint guards against float noise.
    index_hw = np.rint(display_hw).astype(np.int64)
    index_hw -= voi_lut.first_mapped
    np.clip(index_hw, 0, n_entries - 1, out=index_hw)
    return table_8bit[index_hw]


# ----------------------------------------------------------------------------------------------
# DICOM header summary
# ----------------------------------------------------------------------------------------------

# (label, keyword) of the technical fields shown by default (reference §4.3), in display order.
_TECHNICAL_FIELDS: tuple[tuple[str, str], ...] = (
    ("Modality", "Modality"),
    ("Rows", "Rows"),
    ("Columns", "Columns"),
    ("Frames", "NumberOfFrames"),
    ("Samples per pixel", "SamplesPerPixel"),
    ("Photometric interpretation", "PhotometricInterpretation"),
    ("Bits allocated", "BitsAllocated"),
    ("Bits stored", "BitsStored"),
    ("High bit", "HighBit"),
    ("Pixel representation", "PixelRepresentation"),
    ("Pixel spacing (mm)", "PixelSpacing"),
    ("Imager pixel spacing (mm)", "ImagerPixelSpacing"),
    ("View position", "ViewPosition"),
    ("Body part examined", "BodyPartExamined"),
    ("Image laterality", "ImageLaterality"),
    ("Patient orientation", "PatientOrientation"),
    ("Window center", "WindowCenter"),
    ("Window width", "WindowWidth"),
    ("Window explanation", "WindowCenterWidthExplanation"),
    ("VOI LUT function", "VOILUTFunction"),
    ("Rescale slope", "RescaleSlope"),
    ("Rescale intercept", "RescaleIntercept"),
    ("Rescale type", "RescaleType"),
    ("Presentation LUT shape", "PresentationLUTShape"),
    ("Pixel padding value", "PixelPaddingValue"),
    ("Pixel padding range limit", "PixelPaddingRangeLimit"),
    ("Lossy image compression", "LossyImageCompression"),
    ("Lossy compression ratio", "LossyImageCompressionRatio"),
    ("Lossy compression method", "LossyImageCompressionMethod"),
    ("Burned-in annotation", "BurnedInAnnotation"),
    ("Manufacturer", "Manufacturer"),
    ("Manufacturer model", "ManufacturerModelName"),
)

# Identifying attributes (PS3.15 Annex E spirit, reference §4.3). Elements with VR PN, DA, DT or
# TM, instance UIDs, private tags and overlay groups are caught by rule in _dicom_header.
_PHI_KEYWORDS: frozenset[str] = frozenset({
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs",
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthDate", "PatientBirthTime",
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "EthnicGroup", "PatientComments",
    "MilitaryRank", "BranchOfService", "MedicalRecordLocator", "CountryOfResidence",
    "RegionOfResidence", "AccessionNumber", "StudyID", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
    "ReferringPhysicianAddress", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord", "OperatorsName", "RequestingPhysician", "StationName",
    "DeviceSerialNumber", "StudyDescription", "SeriesDescription", "ProtocolName",
    "ImageComments", "RequestAttributesSequence", "PerformedProcedureStepDescription",
    "PerformedProcedureStepID", "ScheduledProcedureStepDescription", "AdditionalPatientHistory",
    "RequestedProcedureDescription", "ReasonForStudy", "DerivationDescription",
    "AcquisitionDeviceProcessingDescription", "DetectorID", "PlateID", "CassetteID",
    "GantryID", "ContentCreatorName", "ReferencedPatientSequence", "ReferencedStudySequence",
    "ReferencedPerformedProcedureStepSequence", "ReferencedImageSequence",
    "SourceImageSequence", "TextValue", "PersonName",
})

# UIDs that name a class or syntax, not an instance: not identifying.
_NON_INSTANCE_UIDS: frozenset[str] = frozenset({
    "SOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID", "ImplementationClassUID",
    "ReferencedSOPClassUID", "CodingSchemeUID", "ContextUID", "PrivateInformationCreatorUID",
    "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID", "ReferencedSOPClassUIDInFile",
})

_VALUE_LIMIT = 200


def _format_value(elem: Any) -> str:
    """A header element's value as one short line."""
    from pydicom.multival import MultiValue
    from pydicom.sequence import Sequence

    value = elem.value
    if isinstance(value, Sequence):
        return f"<sequence of {len(value)} item(s)>"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    return _clean(text, _VALUE_LIMIT)


def _dicom_header(ds: Any) -> HeaderSummary:
    """Split a data set into technical fields (shown) and identifying fields (hidden)."""
    file_meta = getattr(ds, "file_meta", None)
    fields: dict[str, str] = {"Format": "DICOM"}
    fields["SOP class"] = _sop_class_name(ds)
    ts = file_meta.get("TransferSyntaxUID") if file_meta else None
    if ts is not None:
        fields["Transfer syntax"] = _syntax_label(ts)
    for label, keyword in _TECHNICAL_FIELDS:
        if keyword in ds:
            text = _format_value(ds[keyword])
            if keyword == "PixelRepresentation" and text in ("0", "1"):
                text += " (unsigned)" if text == "0" else " (signed)"
            fields[label] = text
    if ds.get("ModalityLUTSequence"):
        fields["Modality LUT sequence"] = f"{len(ds.ModalityLUTSequence)} table(s)"
    if ds.get("VOILUTSequence"):
        fields["VOI LUT sequence"] = f"{len(ds.VOILUTSequence)} table(s)"

    phi: dict[str, str] = {}
    meta_elements = list(file_meta) if file_meta else []
    for elem in meta_elements + list(ds):
        keyword = elem.keyword or ""
        group = elem.tag.group
        if elem.tag.is_private:
            name = f"({group:04X},{elem.tag.element:04X}) private"
        elif 0x6000 <= group <= 0x60FF and group % 2 == 0:
            # Repeating-group elements have no keyword; their name is "Overlay Data" etc.
            name = f"{elem.name} ({group:04X},{elem.tag.element:04X})"
        elif (
            keyword in _PHI_KEYWORDS
            or elem.VR in ("PN", "DA", "DT", "TM")
            or (elem.VR == "UI" and keyword not in _NON_INSTANCE_UIDS)
        ):
            name = keyword or f"({group:04X},{elem.tag.element:04X})"
        else:
            continue
        phi[name] = _format_value(elem)

    burned_in = str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES"
    warnings_list = []
    if burned_in:
        warnings_list.append(
            "BurnedInAnnotation is YES: the pixels may contain identifying text"
        )
    return HeaderSummary(fields=fields, phi=phi, burned_in_annotation=burned_in,
                         warnings=tuple(warnings_list))


# ----------------------------------------------------------------------------------------------
# PNG / JPEG
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _open_pil(path: str) -> Iterator[Any]:
    """Open with Pillow (lazily: pixels are not decoded) with errors as MedsaeError."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Our own size limit applies below; Pillow's bomb warning would only add noise.
        with _quiet_reading():
            im = Image.open(path)
    except UnidentifiedImageError:
        raise MedsaeError("corrupt image file: Pillow cannot identify it", path) from None
    except Image.DecompressionBombError:
        raise MedsaeError("image too large (decompression bomb check)", path) from None
    except PermissionError:
        raise MedsaeError("permission denied", path) from None
    except OSError as exc:
        raise MedsaeError(f"cannot read image: {_one_line(exc)}", path) from None
    try:
        yield im
    finally:
        im.close()


def _png_ihdr(path: str) -> tuple[int, int] | None:
    """(bit depth, colour type) from the PNG IHDR chunk; Pillow's mode hides the bit depth."""
    try:
        with open(path, "rb") as f:
            head = f.read(33)
    except OSError:
        return None
    if len(head) < 26 or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


_PNG_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale + alpha", 6: "RGBA"}
_EXIF_TECHNICAL = frozenset({"Orientation", "XResolution", "YResolution", "ResolutionUnit"})


def _raster_header(path: str, im: Any, kind: str) -> HeaderSummary:
    from PIL import ExifTags

    fields: dict[str, str] = {"Format": kind.upper()}
    width, height = im.size
    fields["Rows"] = str(height)
    fields["Columns"] = str(width)
    fields["Mode"] = im.mode
    if kind == "png":
        ihdr = _png_ihdr(path)
        if ihdr is not None:
            fields["Bit depth"] = str(ihdr[0])
            fields["Colour type"] = _PNG_COLOUR_TYPES.get(ihdr[1], str(ihdr[1]))
    else:
        fields["Bit depth"] = "8"
        if im.info.get("progressive"):
            fields["Progressive"] = "yes"
    phi: dict[str, str] = {}
    # Free text (PNG tEXt/iTXt, JPEG comments) and EXIF can name people, places and times.
    for key, value in im.info.items():
        if isinstance(value, str) or key in ("comment",):
            text = value.decode("latin-1", "replace") if isinstance(value, bytes) else str(value)
            phi[f"text: {key}"] = " ".join(text.split())[:_VALUE_LIMIT]
    try:
        exif = im.getexif()
    except Exception:  # malformed EXIF must not stop the header view
        exif = {}
    for tag, value in exif.items():
        name = ExifTags.TAGS.get(tag, f"tag {tag}")
        text = f"<{len(value)} bytes>" if isinstance(value, bytes) else " ".join(str(value).split())
        if name in _EXIF_TECHNICAL:
            fields[f"EXIF {name}"] = text[:_VALUE_LIMIT]
        else:
            phi[f"EXIF {name}"] = text[:_VALUE_LIMIT]
    return HeaderSummary(fields=fields, phi=phi, burned_in_annotation=False)


def _read_raster(path: str, kind: str, frame: int) -> LoadedImage:
    from PIL import ImageOps

    if frame != 0:
        raise MedsaeError(
            f"frame {frame} is out of range: a {kind.upper()} image has 1 frame (valid: 0)", path
        )
    with _open_pil(path) as im:
        header = _raster_header(path, im, kind)
        width, height = im.size
        if width <= 0 or height <= 0 or width * height > MAX_FRAME_PIXELS:
            raise MedsaeError(
                f"image too large: {width} x {height} pixels (limit "
                f"{MAX_FRAME_PIXELS // 1_000_000} MP)", path,
            )
        warnings_list: list[str] = []
        try:
            with _quiet_reading():
                im.load()
                orientation = im.getexif().get(0x0112)  # EXIF Orientation; 1 = as stored
                transposed = ImageOps.exif_transpose(im) if orientation not in (None, 1) else im
        except MemoryError:
            raise MedsaeError("not enough memory to decode the image", path) from None
        except (OSError, SyntaxError, ValueError) as exc:
            # Pillow reports truncated and corrupt data as OSError ("image file is truncated")
            # and, for some PNG chunk errors, SyntaxError/ValueError.
            raise MedsaeError(f"corrupt or truncated {kind.upper()} file: {_one_line(exc)}",
                              path) from None
        if orientation not in (None, 1):
            warnings_list.append(f"rotated/flipped as its EXIF Orientation ({orientation}) says")
            im = transposed
        mode = im.mode

        if mode == "L":
            display_hw = np.array(im, dtype=np.float32)
            # 8-bit grey is display-ready (what MedCLIP was trained on): identity mapping.
            default_window = Window(127.5, 255.0, "8-bit, used as is")
        elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            values_hw = np.array(im)
            display_hw = values_hw.astype(np.float32)
            lo, hi = float(display_hw.min()), float(display_hw.max())
            default_window = (
                Window((lo + hi) / 2.0, hi - lo, "16-bit min–max") if hi > lo
                else Window(lo, 1.0, "16-bit flat image")
            )
        elif mode in ("1", "LA", "La"):
            display_hw = np.array(im.getchannel(0).convert("L"), dtype=np.float32)
            if mode != "1":
                warnings_list.append("alpha channel ignored")
            default_window = Window(127.5, 255.0, "8-bit, used as is")
        elif mode == "F":
            display_hw = np.array(im, dtype=np.float32)
            default_window = _percentile_window(display_hw, None)
        else:
            # RGB, RGBA, P, PA, CMYK, YCbCr, LAB, HSV ...: via RGB to BT.601 luma.
            rgb_hwc = np.array(im.convert("RGB"))
            red, green, blue = rgb_hwc[..., 0], rgb_hwc[..., 1], rgb_hwc[..., 2]
            if np.array_equal(red, green) and np.array_equal(red, blue):
                warnings_list.append(f"{mode} image with equal channels used as grayscale")
            else:
                warnings_list.append(f"colour image ({mode}) converted to grayscale")
            if "A" in mode or "transparency" in im.info:
                warnings_list.append("alpha channel ignored")
            display_hw = _luma(rgb_hwc)
            default_window = Window(127.5, 255.0, "8-bit, used as is")

    return _finish(
        path, kind, display_hw, windows=(), default_window=default_window, invert=False,
        padding_mask_hw=None, voi_lut=None, voi_function="LINEAR_EXACT", n_frames=1,
        frame=0, header=header, warnings_list=warnings_list,
    )
