"""Runs core job generators on worker threads: the only module of the UI that owns threads.

A job is a core generator that yields :class:`~medsae_desktop.core.progress.Progress` and
returns a result (DESIGN.md §2 rule 2). :class:`TaskRunner` runs each job on its own
``QThread`` and reports back on the GUI thread through a :class:`TaskHandle`'s signals:

- ``progressed(Progress)``: throttled to about 15 Hz; the last report is always delivered;
- ``finished(result)``: the generator's return value;
- ``failed(str)``: the one-line message (a :class:`MedsaeError`'s text, or ``Type: message``
  for a bug, whose traceback goes to the log);
- ``cancelled()``: after :meth:`TaskHandle.cancel`, once the generator has been closed;
- ``ended()``: always last, whatever happened.

Cancelling sets a flag that the worker checks between two yields; the worker then calls
``generator.close()`` *on its own thread*, so the job's ``finally`` blocks release files and
models where they were opened. Jobs of the same ``lane`` run one after another (FIFO): the
"train" lane never runs two trainings at once, the "model" lane serialises inference, etc.
Workers never touch widgets, and nothing here calls ``processEvents``.
"""

import collections
import logging
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.progress import Progress

logger = logging.getLogger(__name__)

#: minimum seconds between two progress signals of one task (~15 Hz)
PROGRESS_INTERVAL_S = 1 / 15


def error_line(exc: BaseException) -> str:
    """One-line message for an exception: MedsaeError text as is, else ``Type: message``."""
    if isinstance(exc, MedsaeError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class TaskHandle(QObject):
    """The GUI-side view of one job (see module docstring for its signals).

    Attributes
    ----------
    name
        Short description shown in the status bar.
    lane
        Serialisation lane.
    state
        ``"queued"``, ``"running"``, ``"finished"``, ``"failed"`` or ``"cancelled"``.
    """

    progressed = Signal(object)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    ended = Signal()

    def __init__(self, name: str, lane: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.lane = lane
        self.state = "queued"
        self.last_progress: Progress | None = None
        self.error: str | None = None
        self.result: Any = None
        self._cancel = threading.Event()
        self._thread: _JobThread | None = None

    @property
    def is_done(self) -> bool:
        """Whether the job has ended (finished, failed or cancelled)."""
        return self.state in ("finished", "failed", "cancelled")

    def cancel(self) -> None:
        """Ask the job to stop; ``cancelled`` follows once its generator is closed."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancel.is_set()

    def wait(self, msecs: int = 5000) -> bool:
        """Block until the worker thread ends (tests and shutdown only); True if it did."""
        t = self._thread
        return True if t is None else bool(t.wait(msecs))


class _JobThread(QThread):
    """Drives one generator; emits plain data only (lives in the GUI thread as an object)."""

    progressed = Signal(object)
    done = Signal(str, object)  # outcome ("finished"|"failed"|"cancelled"), payload

    def __init__(self, factory: Callable[[], Generator[Progress, None, Any]],
                 cancel: threading.Event, name: str) -> None:
        super().__init__()
        self._factory = factory
        self._cancel = cancel
        self.handle: TaskHandle | None = None
        self.setObjectName(f"job:{name}")

    def run(self) -> None:  # noqa: D102 - QThread API
        gen = None
        last_emit = 0.0
        pending: Progress | None = None
        try:
            if self._cancel.is_set():
                self.done.emit("cancelled", None)
                return
            made = self._factory()
            if not isinstance(made, Generator):
                # a plain function returned a value: nothing to iterate
                self.done.emit("finished", made)
                return
            gen = made
            while True:
                if self._cancel.is_set():
                    gen.close()  # on this thread: the job's finally blocks run here
                    gen = None
                    self.done.emit("cancelled", None)
                    return
                try:
                    p = next(gen)
                except StopIteration as stop:
                    gen = None
                    if pending is not None:
                        self.progressed.emit(pending)
                    self.done.emit("finished", stop.value)
                    return
                now = time.monotonic()
                if now - last_emit >= PROGRESS_INTERVAL_S:
                    self.progressed.emit(p)
                    last_emit = now
                    pending = None
                else:
                    pending = p
        except Exception as exc:  # reported to the GUI as one line; traceback to the log
            if not isinstance(exc, MedsaeError):
                logger.exception("job %s failed", self.objectName())
            self.done.emit("failed", error_line(exc))
        finally:
            if gen is not None:
                try:
                    gen.close()
                except Exception:  # closing a failed generator must not hide the first error
                    logger.exception("closing job %s failed", self.objectName())


class TaskRunner(QObject):
    """Queue of jobs by lane, each lane running one job at a time on a worker thread.

    Signals
    -------
    busy_changed(bool)
        True while any job is queued or running.
    task_started(TaskHandle)
        A job began running.
    """

    busy_changed = Signal(bool)
    task_started = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._queues: dict[str, collections.deque[tuple[TaskHandle, Callable[[], Any]]]] = (
            collections.defaultdict(collections.deque))
        self._running: dict[str, TaskHandle] = {}
        self._threads: set[_JobThread] = set()
        self._busy = False
        self._closing = False

    # ---- public ---------------------------------------------------------------------------
    def submit(
        self,
        job_fn: Callable[..., Any],
        *args: Any,
        name: str = "",
        lane: str = "default",
        on_progress: Callable[[Progress], Any] | None = None,
        on_done: Callable[[Any], Any] | None = None,
        on_error: Callable[[str], Any] | None = None,
        on_cancelled: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> TaskHandle:
        """Queue ``job_fn(*args, **kwargs)`` (a generator function, or a plain function).

        The job function itself is called on the worker thread, so building the generator
        (which may open files or load models) never blocks the GUI.
        """
        handle = TaskHandle(name or getattr(job_fn, "__name__", "job"), lane, self)
        if on_progress is not None:
            handle.progressed.connect(on_progress)
        if on_done is not None:
            handle.finished.connect(on_done)
        if on_error is not None:
            handle.failed.connect(on_error)
        if on_cancelled is not None:
            handle.cancelled.connect(on_cancelled)
        if self._closing:
            handle.state = "cancelled"
            return handle
        self._queues[lane].append((handle, lambda: job_fn(*args, **kwargs)))
        self._set_busy(True)
        self._pump(lane)
        return handle

    def running(self) -> list[TaskHandle]:
        """Jobs running now."""
        return list(self._running.values())

    def pending(self) -> list[TaskHandle]:
        """Jobs queued and running."""
        out = list(self._running.values())
        for q in self._queues.values():
            out.extend(h for h, _ in q)
        return out

    def cancel_lane(self, lane: str) -> None:
        """Cancel the running job of ``lane`` and drop the queued ones."""
        q = self._queues.get(lane)
        while q:
            h, _ = q.popleft()
            h.cancel()
            self._finish(h, "cancelled", None)
        if lane in self._running:
            self._running[lane].cancel()

    def shutdown(self, msecs: int = 5000) -> bool:
        """Cancel everything and wait up to ``msecs`` for the workers; True if all ended."""
        self._closing = True
        for lane in list(self._queues):
            self.cancel_lane(lane)
        for lane in list(self._running):
            self.cancel_lane(lane)
        deadline = time.monotonic() + msecs / 1000
        ok = True
        for t in list(self._threads):
            left = max(0, int((deadline - time.monotonic()) * 1000))
            ok = bool(t.wait(left)) and ok
        return ok

    # ---- internals ------------------------------------------------------------------------
    def _pump(self, lane: str) -> None:
        if lane in self._running or not self._queues[lane]:
            return
        handle, factory = self._queues[lane].popleft()
        thread = _JobThread(factory, handle._cancel, handle.name)
        handle._thread = thread
        thread.handle = handle
        handle.state = "running"
        self._running[lane] = handle
        self._threads.add(thread)

        def on_progress(p: Progress, h: TaskHandle = handle) -> None:
            h.last_progress = p
            if not h.is_done:
                h.progressed.emit(p)

        thread.progressed.connect(on_progress)
        thread.done.connect(lambda outcome, payload, h=handle: self._finish(h, outcome, payload))
        thread.finished.connect(lambda t=thread: self._reap(t))
        thread.start()
        self.task_started.emit(handle)

    def _finish(self, handle: TaskHandle, outcome: str, payload: Any) -> None:
        if handle.is_done:
            return
        # a job that completed before it saw a cancel request keeps its (valid) result
        handle.state = outcome
        if outcome == "finished":
            handle.result = payload
            handle.finished.emit(payload)
        elif outcome == "failed":
            handle.error = str(payload)
            handle.failed.emit(str(payload))
        else:
            handle.cancelled.emit()
        handle.ended.emit()
        if self._running.get(handle.lane) is handle:
            del self._running[handle.lane]
            self._pump(handle.lane)
        self._update_busy()

    def _reap(self, thread: _JobThread) -> None:
        self._threads.discard(thread)
        if thread.handle is not None:
            thread.handle._thread = None
            thread.handle = None
        thread.deleteLater()
        self._update_busy()

    def _update_busy(self) -> None:
        busy = bool(self._running) or any(self._queues.values())
        self._set_busy(busy)

    def _set_busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._busy = busy
            self.busy_changed.emit(busy)
