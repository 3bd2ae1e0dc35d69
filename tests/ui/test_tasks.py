"""TaskRunner: results, throttled progress, one-line errors, cancel on the worker thread."""

import threading
import time

import pytest

from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.progress import Progress
from medsae_desktop.ui.tasks import TaskRunner, error_line


@pytest.fixture
def runner(qtbot):
    r = TaskRunner()
    yield r
    assert r.shutdown(5000)


def counting_job(n, record=None):
    for i in range(n):
        yield Progress(i + 1, n, f"step {i + 1}")
    if record is not None:
        record["thread"] = threading.get_ident()
    return n * 10


def test_result_and_last_progress_delivered(qtbot, runner):
    seen = []
    h = runner.submit(counting_job, 2000, on_progress=seen.append, name="count")
    with qtbot.waitSignal(h.finished, timeout=10000) as blocker:
        pass
    assert blocker.args == [20000]
    assert h.state == "finished" and h.result == 20000
    qtbot.waitUntil(lambda: seen and seen[-1].done == 2000, timeout=2000)
    # throttled: far fewer signals than yields, and never out of order
    assert 1 <= len(seen) < 200
    assert [p.done for p in seen] == sorted(p.done for p in seen)


def test_medsae_error_is_one_line(qtbot, runner):
    def bad():
        yield Progress(0, 1)
        raise MedsaeError("cannot decode pixel data\nsecond line", "/data/x.dcm")

    h = runner.submit(bad)
    with qtbot.waitSignal(h.failed, timeout=5000) as blocker:
        pass
    assert blocker.args == ["/data/x.dcm: cannot decode pixel data second line"]
    assert h.state == "failed"


def test_bug_is_reported_with_type(qtbot, runner):
    def buggy():
        raise ZeroDivisionError("division by zero")
        yield  # pragma: no cover - makes this a generator

    h = runner.submit(buggy)
    with qtbot.waitSignal(h.failed, timeout=5000) as blocker:
        pass
    assert blocker.args == ["ZeroDivisionError: division by zero"]
    assert error_line(ValueError()) == "ValueError"


def test_cancel_closes_generator_on_worker_thread(qtbot, runner):
    info = {}
    started = threading.Event()

    def endless():
        try:
            while True:
                started.set()
                time.sleep(0.005)
                yield Progress(0, None, "spinning")
        finally:
            info["closed_on"] = threading.get_ident()

    h = runner.submit(endless)
    assert started.wait(5)
    with qtbot.waitSignal(h.cancelled, timeout=5000):
        h.cancel()
    assert h.state == "cancelled"
    assert info["closed_on"] != threading.get_ident()  # cleanup ran on the worker thread


def test_lane_runs_jobs_one_at_a_time(qtbot, runner):
    active = []
    overlap = []

    def job(tag):
        active.append(tag)
        if len(active) > 1:
            overlap.append(tuple(active))
        time.sleep(0.05)
        yield Progress(1, 1)
        active.remove(tag)
        return tag

    handles = [runner.submit(job, i, lane="model") for i in range(3)]
    with qtbot.waitSignal(handles[-1].finished, timeout=10000):
        pass
    assert [h.result for h in handles] == [0, 1, 2]
    assert overlap == []


def test_cancel_lane_drops_queued_jobs(qtbot, runner):
    gate = threading.Event()

    def blocker_job():
        while not gate.is_set():
            time.sleep(0.005)
            yield Progress(0, None)

    first = runner.submit(blocker_job, lane="train")
    second = runner.submit(counting_job, 3, lane="train")
    assert second.state == "queued"
    with qtbot.waitSignals([first.cancelled, second.cancelled], timeout=5000):
        runner.cancel_lane("train")
    gate.set()


def test_plain_function_and_busy_signal(qtbot, runner):
    busy = []
    runner.busy_changed.connect(busy.append)
    h = runner.submit(lambda a, b: a + b, 2, 3)
    with qtbot.waitSignal(h.ended, timeout=5000):
        pass
    assert h.result == 5
    qtbot.waitUntil(lambda: busy == [True, False], timeout=2000)


def test_plain_function_result_is_not_closed(qtbot, runner, caplog):
    class Result:  # no close(): closing it would raise AttributeError in the worker
        pass

    r = Result()
    h = runner.submit(lambda: r)
    with qtbot.waitSignal(h.finished, timeout=5000) as blocker:
        pass
    assert blocker.args == [r]
    h.wait(2000)
    assert "failed" not in caplog.text
