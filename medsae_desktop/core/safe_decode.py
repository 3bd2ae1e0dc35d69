"""Crash-safe decoding of the pixel data only gdcm can decode, in a worker process.

Why a worker process
--------------------
python-gdcm is the only installed decoder for JPEG Lossless (1.2.840.10008.1.2.4.57 and .70)
and JPEG-LS (.80 and .81): the other decoder pydicom knows for them, pylibjpeg-libjpeg, is GPL
and deliberately not shipped. On corrupt data gdcm takes the whole process down. Fuzzing the
pydicom test files (python-gdcm 3.2.6; random bytes, bit flips, header bytes or truncation of
the compressed frame) gave, per file: SC_rgb_jpeg_gdcm (JPEG Lossless, RGB) 2 of 200 variants
killed the process (SIGABRT: an uncaught ``gdcm::Exception``; SIGSEGV), JPEG-LL (16-bit) 1 of
100 (SIGABRT), MR_small_jpeg_ls_lossless 1 of 200 and SC_rgb_jls_lossy_line (near-lossless)
1 of 200 (SIGABRT). A desktop app or a batch ``medsae embed`` must not die because one file
is corrupt, so gdcm never runs in the reading process: each frame is decoded by a long-lived
worker process, and a native crash there becomes an ordinary exception here. A hang is
bounded by a timeout, after which the worker is killed.

Alternatives measured on the same variants, and rejected:

- ``pyjpegls`` 1.5.1 (MIT, CharLS; pydicom 3 has a plugin) for JPEG-LS: bit-exact on the
  valid test files and no crash, but it HUNG (100 % CPU, no return after minutes) on a
  corrupt near-lossless RGB frame (SC_rgb_jls_lossy_line, variant 15). In-process, a hang
  cannot be interrupted: it would freeze the viewer or the embed run as surely as an abort
  kills it.
- ``imagecodecs`` 2026.3.6 (BSD) for JPEG Lossless: its ``ljpeg`` codec SEGFAULTS on the
  very frame that makes gdcm abort (and on 3 of 100 JPEG-LL variants). Its ``jpeg8`` codec
  (libjpeg-turbo 3) did not crash on those 300 variants but returned an image for most of
  them without complaint. pydicom has no imagecodecs plugin, so its post-processing
  (signedness, colour space, planar configuration, JPEG-LS precision) would have to be
  re-done by hand, and the 26 MB wheel bundles dozens of native libraries for one codec.
  Its ``jpegls`` codec (CharLS) survived the 200 near-lossless variants, the hanging one
  included, but has the same drawbacks and was fuzzed no further.

No permissive in-process decoder was both crash- and hang-free and a drop-in for pydicom,
while the worker adds little (see :func:`decode_frame`) and needs no new dependency. It still
uses pydicom's own gdcm plugin, so valid files decode to exactly the pixels they gave
in-process (checked on every JPEG Lossless and JPEG-LS file of pydicom's test data).

Design
------
- A worker is a fresh interpreter, ``sys.executable -P -c "...safe_decode._worker_main()"``,
  started lazily and kept for the next frame. Not ``multiprocessing``: its "spawn" method
  re-imports the parent's ``__main__`` in the child (the GUI's main module would pull Qt into
  a decoder process; ``python - < script`` cannot start one at all), and "fork" copies a
  threaded parent. At most :data:`MAX_WORKERS` exist; a thread that finds none free waits.
- A worker serves one request at a time, so a crash is attributed to exactly the frame that
  caused it, never to another thread's file. A crashed, hung or interrupted worker is killed
  and replaced on the next request.
- Requests and replies are length-prefixed messages on the worker's stdin and stdout: a JSON
  header, then raw bytes. Nothing is unpickled. A reader thread per worker receives the
  replies, so waiting for one has a timeout on every platform; the reply is checked (dtype
  whitelist, shape, size against the caller's limit) and becomes a writeable array without
  a copy.
- The worker runs in its own session (terminal Ctrl-C goes to the parent, which decides),
  moves the protocol to private descriptors and points its stdout and stderr at the null
  device (gdcm and libjpeg print diagnostics; the command line's stderr contract is one
  line), exits when its stdin closes (the parent is gone), and on POSIX arms ``alarm()``
  during each decode so that a worker orphaned in a hang dies too.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "DECODE_TIMEOUT_S",
    "MAX_WORKERS",
    "DecodeFailedError",
    "DecoderCrashedError",
    "DecoderStartError",
    "DecoderTimeoutError",
    "IsolatedDecodeError",
    "decode_frame",
    "shutdown",
]

#: Seconds one frame may take in the worker before it is considered hung and killed. The
#: largest accepted frame (100 MP, see ``images.MAX_FRAME_PIXELS``) decodes in a few seconds.
DECODE_TIMEOUT_S: float = 60.0

#: Seconds a new worker may take to start (interpreter + numpy + pydicom + gdcm imports).
START_TIMEOUT_S: float = 60.0

#: Most worker processes alive at once (each holds about 100 MB after decoding a radiograph).
MAX_WORKERS: int = max(1, min(2, os.cpu_count() or 1))

# What a worker may send back: plain numeric pixel types only.
_ALLOWED_DTYPES = frozenset(
    np.dtype(t).str for t in ("u1", "i1", "<u2", "<i2", "<u4", "<i4", "<f4", "<f8")
)
_HEADER_LIMIT = 1 << 16
_LENGTH = struct.Struct("<Q")
# The package root, so the worker imports this very copy of medsae_desktop.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class IsolatedDecodeError(RuntimeError):
    """Base class of the failures of an isolated decode."""


class DecodeFailedError(IsolatedDecodeError):
    """The decoder rejected the data with an ordinary error (the message says why)."""


class DecoderCrashedError(IsolatedDecodeError):
    """The worker process died while decoding (native abort or segfault).

    The message is how it ended, for example "killed by signal SIGABRT".
    """


class DecoderTimeoutError(IsolatedDecodeError):
    """The decode did not finish within the timeout; the worker was killed."""


class DecoderStartError(IsolatedDecodeError):
    """No worker process could be started, so nothing was decoded."""


# ----------------------------------------------------------------------------------------------
# Framing (both sides): an 8-byte little-endian length, then that many bytes
# ----------------------------------------------------------------------------------------------


def _write_message(stream: IO[bytes], data: bytes | memoryview) -> None:
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)


def _read_exactly(stream: IO[bytes], n_bytes: int) -> bytearray:
    """Read ``n_bytes`` bytes; EOFError if the stream ends first."""
    buffer = bytearray(n_bytes)
    view = memoryview(buffer)
    filled = 0
    while filled < n_bytes:
        n = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not n:
            raise EOFError("stream ended")
        filled += n
    return buffer


def _read_message(stream: IO[bytes], limit: int) -> bytearray:
    (n_bytes,) = _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))
    if n_bytes > limit:
        raise ValueError(f"message of {n_bytes} bytes, more than the {limit} allowed")
    return _read_exactly(stream, n_bytes)


# ----------------------------------------------------------------------------------------------
# Parent side
# ----------------------------------------------------------------------------------------------


class _Worker:
    """One worker process, the parent's ends of its pipes and the thread reading its replies."""

    def __init__(self) -> None:
        if getattr(sys, "frozen", False) or not sys.executable:
            raise DecoderStartError(
                "no Python interpreter to run the decoder process in (frozen build)"
            )
        # -P: the current folder (a user's image folder, which could hold a "numpy.py" or a
        # "dl" folder that python-gdcm would import) is not put on the worker's sys.path. The
        # package root is added unless it is there already (a source checkout).
        code = (
            f"import sys; root = {_PACKAGE_ROOT!r}; "
            "root in sys.path or sys.path.insert(0, root); "
            "from medsae_desktop.core.safe_decode import _worker_main; _worker_main()"
        )
        extra: dict[str, Any] = {}
        if os.name == "posix":
            extra["start_new_session"] = True  # terminal Ctrl-C reaches the parent only
        elif os.name == "nt":
            extra["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, close_fds=True, **extra,
            )
        except (OSError, ValueError) as exc:
            raise DecoderStartError(f"cannot start the decoder process ({exc})") from exc
        self._max_reply = _HEADER_LIMIT
        self._replies: queue.Queue[tuple[Any, bytearray | None] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_loop, name="medsae-gdcm-reader",
                                        daemon=True)
        self._reader.start()
        try:
            ready = self._next_reply(START_TIMEOUT_S)
        except DecoderTimeoutError:
            self.kill()
            raise DecoderStartError(
                f"the decoder process did not start within {START_TIMEOUT_S:g} s"
            ) from None
        except DecoderCrashedError as exc:
            self.kill()
            raise DecoderStartError(f"the decoder process failed to start ({exc})") from None
        except BaseException:
            self.kill()
            raise
        if not ready[0].get("ready"):
            self.kill()
            raise DecoderStartError(
                f"the decoder process cannot decode: {ready[0].get('error', 'unknown error')}"
            )

    def _read_loop(self) -> None:
        """Reader thread: each reply (header, payload or None) onto the queue; None at the end."""
        stream = self.proc.stdout
        assert stream is not None
        try:
            while True:
                header = json.loads(_read_message(stream, _HEADER_LIMIT))
                payload = None
                if header.get("ok") and "dtype" in header:
                    payload = _read_message(stream, self._max_reply)
                self._replies.put((header, payload))
        except ValueError as exc:  # an oversized message or bad JSON: the worker is unusable
            self._replies.put(({"protocol_error": str(exc)}, None))
        except Exception:  # noqa: BLE001 - EOF or a closed pipe: the worker is gone
            self._replies.put(None)

    def _next_reply(self, timeout: float) -> tuple[dict[str, Any], bytearray | None]:
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise DecoderTimeoutError(f"no result within {timeout:g} s") from None
        if reply is None or not isinstance(reply[0], dict):
            raise DecoderCrashedError(self._exit_text())
        if "protocol_error" in reply[0]:
            problem = reply[0]["protocol_error"]
            raise IsolatedDecodeError(f"invalid reply from the decoder: {problem}")
        return reply

    def decode(self, transfer_syntax: str, options: dict[str, Any], frame: bytes,
               max_bytes: int, timeout: float) -> np.ndarray:
        self._max_reply = max_bytes
        header = json.dumps({"ts": transfer_syntax, "options": options}).encode()
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            _write_message(stdin, header)
            _write_message(stdin, frame)
            stdin.flush()
        except (OSError, ValueError):  # the worker is gone (BrokenPipeError ...)
            raise DecoderCrashedError(self._exit_text()) from None
        reply, payload = self._next_reply(timeout)
        if not reply.get("ok"):
            raise DecodeFailedError(str(reply.get("error") or "unknown decoding error"))
        dtype_str, shape = reply.get("dtype"), reply.get("shape")
        if (
            dtype_str not in _ALLOWED_DTYPES
            or not isinstance(shape, list)
            or not 1 <= len(shape) <= 3
            or not all(isinstance(n, int) and n > 0 for n in shape)
            or payload is None
            or len(payload) != int(np.prod(shape)) * np.dtype(dtype_str).itemsize
        ):
            raise IsolatedDecodeError(f"invalid reply from the decoder ({dtype_str} {shape})")
        # A bytearray-backed array is writeable, like pydicom's own result: no copy needed.
        return np.frombuffer(payload, dtype=np.dtype(dtype_str)).reshape(shape)

    def _exit_text(self) -> str:
        with contextlib.suppress(Exception):
            self.proc.wait(2.0)
        code = self.proc.returncode
        if code is None:
            return "closed its output but is still running"
        if code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with status {code}"

    def is_usable(self) -> bool:
        """An idle worker that is still running and has not closed its output."""
        return self.proc.poll() is None and self._replies.empty()

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.poll() is None:
                self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(5.0)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()

    def close(self) -> None:
        """Let an idle worker exit on its own (its stdin ends), then make sure it did."""
        with contextlib.suppress(Exception):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(Exception):
            self.proc.wait(1.0)
        self.kill()


class _Pool:
    """At most :data:`MAX_WORKERS` workers, each serving one request at a time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._n_alive = 0  # idle + busy + starting
        self._pid = os.getpid()

    def _reset_after_fork(self) -> None:
        # A forked child inherits this object but cannot use its parent's workers: start afresh.
        if self._pid != os.getpid():
            self._cond = threading.Condition()
            self._idle = []
            self._n_alive = 0
            self._pid = os.getpid()

    def acquire(self) -> _Worker:
        self._reset_after_fork()
        with self._cond:
            while True:
                while not self._idle and self._n_alive >= MAX_WORKERS:
                    self._cond.wait()
                if not self._idle:
                    break
                worker = self._idle.pop()
                if worker.is_usable():
                    return worker
                # It died while idle (killed from outside): not this request's file's fault.
                self._n_alive -= 1
                worker.kill()
            self._n_alive += 1  # reserve the slot; start the worker outside the lock
        try:
            return _Worker()
        except BaseException:
            with self._cond:
                self._n_alive -= 1
                self._cond.notify()
            raise

    def release(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self._cond:
            if healthy and self._pid == os.getpid():
                self._idle.append(worker)
            else:
                self._n_alive -= 1
            self._cond.notify()

    def shutdown(self) -> None:
        if self._pid != os.getpid():
            return
        with self._cond:
            idle, self._idle = self._idle, []
            self._n_alive -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            worker.close()


_POOL = _Pool()


def decode_frame(
    frame: bytes,
    transfer_syntax: str,
    options: dict[str, Any],
    *,
    max_bytes: int,
    timeout: float | None = None,
) -> np.ndarray:
    """Decode one encapsulated frame with pydicom's gdcm plugin in a worker process.

    Cost against an in-process gdcm decode, on this project's 2-core machine shared with other
    jobs (load average 5-6, so +-30 % noise; three runs): about +0.5-1.5 ms for a 100 x 100
    RGB frame (1 ms in-process), +3-6 ms for 1024 x 256 16-bit (13 ms), nothing measurable for
    768 x 1024 8-bit (16-27 ms), and +15-50 ms for a 1955 x 1841 15-bit radiograph (JPEG
    Lossless 270-360 ms, JPEG-LS 300-390 ms in-process): the frame and the pixels cross two
    pipes. Starting a worker (a new interpreter importing numpy, pydicom and gdcm) takes
    0.7-0.9 s, once per process and again after each crash. An idle worker holds about 100 MB
    after a radiograph.

    Parameters
    ----------
    frame
        The encoded frame (its fragments joined, as ``pydicom.encaps.get_frame`` returns it).
    transfer_syntax
        Transfer syntax UID of the data.
    options
        pydicom decoding options for the frame (``pydicom.pixels.as_pixel_options`` with
        ``number_of_frames`` 1): JSON-serialisable ints, strings and None only.
    max_bytes
        Largest decoded frame accepted, in bytes.
    timeout
        Seconds the decode may take (default :data:`DECODE_TIMEOUT_S`).

    Returns
    -------
    numpy.ndarray
        The decoded frame, writeable, as ``pydicom.pixels.pixel_array(ds, index=i,
        decoding_plugin="gdcm")`` returns it in-process.

    Raises
    ------
    DecodeFailedError
        The decoder reported an error (corrupt or unsupported data).
    DecoderCrashedError
        The worker died while decoding (a native abort or segfault in gdcm).
    DecoderTimeoutError
        The decode took longer than ``timeout``; the worker was killed.
    DecoderStartError
        No worker could be started; nothing was decoded.
    """
    timeout = DECODE_TIMEOUT_S if timeout is None else float(timeout)
    worker = _POOL.acquire()
    healthy = False
    try:
        array = worker.decode(str(transfer_syntax), options, bytes(frame), max_bytes, timeout)
        healthy = True
        return array
    except DecodeFailedError:
        healthy = True  # an ordinary error: the worker is fine and keeps serving
        raise
    finally:
        # Anything else (crash, timeout, Ctrl-C in the middle, bad reply) leaves the worker in
        # an unknown state: kill it; the next request starts a new one.
        _POOL.release(worker, healthy)


def shutdown() -> None:
    """Stop the idle workers (also done at interpreter exit)."""
    _POOL.shutdown()


atexit.register(shutdown)


# ----------------------------------------------------------------------------------------------
# Worker side (runs in the child interpreter)
# ----------------------------------------------------------------------------------------------


def _worker_main() -> None:
    """Serve decode requests on stdin/stdout until stdin ends (the parent closed or died)."""
    with contextlib.suppress(Exception):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol moves to private descriptors; 0, 1 and 2 go to the null device, so that
    # whatever gdcm or libjpeg print can neither corrupt the replies nor reach a terminal.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    os.close(devnull)

    def send(header: dict[str, Any], payload: memoryview | None = None) -> None:
        _write_message(replies, json.dumps(header).encode())
        if payload is not None:
            _write_message(replies, payload)
        replies.flush()

    try:
        import logging
        import warnings

        warnings.simplefilter("ignore")
        logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
        import gdcm  # noqa: F401 - fail now, not on the first frame
        from pydicom.encaps import encapsulate
        from pydicom.pixels import get_decoder
        from pydicom.uid import UID
    except Exception as exc:  # noqa: BLE001
        send({"ready": False, "error": _short(exc)})
        return
    send({"ready": True})
    has_alarm = hasattr(signal, "alarm")
    if has_alarm:
        # SIGALRM's default action terminates the process without needing the GIL, so it works
        # even while gdcm spins; the parent kills a hung worker long before, unless it is gone.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    while True:
        try:
            request = json.loads(_read_message(requests, _HEADER_LIMIT))
            frame = bytes(_read_message(requests, 1 << 40))
        except (EOFError, OSError, ValueError):
            return
        if has_alarm:
            signal.alarm(int(DECODE_TIMEOUT_S * 2) + 5)
        try:
            decoder = get_decoder(UID(request["ts"]))
            array, _ = decoder.as_array(
                encapsulate([frame]), index=0, decoding_plugin="gdcm", **request["options"]
            )
            array = np.ascontiguousarray(array)
            if array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("<"))
            header: dict[str, Any] = {"ok": True, "dtype": array.dtype.str,
                                      "shape": list(array.shape)}
        except Exception as exc:  # noqa: BLE001 - every decoding error goes back as text
            array, header = None, {"ok": False, "error": _short(exc)}
        finally:
            if has_alarm:
                signal.alarm(0)
        try:
            send(header, None if array is None else memoryview(array).cast("B"))
        except (OSError, ValueError):
            return


def _short(exc: BaseException) -> str:
    """A decoder exception as one line, with gdcm's least helpful message made readable."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    # pydicom's gdcm plugin turns gdcm's "cannot decode" (a None buffer) into this.
    text = text.replace(
        "gdcm: 'NoneType' object has no attribute 'encode'",
        "gdcm: the data could not be decoded (corrupt or not valid for this transfer syntax)",
    )
    prefix = "Unable to decode as exceptions were raised by all available plugins: "
    if text.startswith(prefix):
        text = text[len(prefix):]
    return text[:500]
