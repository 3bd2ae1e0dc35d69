"""Progress reports yielded by every long job in core.

Long jobs are generators: they ``yield Progress(...)`` and ``return`` a result. The CLI drives
them with :func:`run_job` and a tqdm bar; the UI drives them on a worker thread and cancels by
closing the generator (cleanup lives in the job's ``finally``). No Qt, no printing here.
"""

import dataclasses
from collections.abc import Callable, Generator, Mapping
from typing import Any, TypeVar

R = TypeVar("R")


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """One progress report.

    Attributes
    ----------
    done
        Units of work finished so far (images, steps, units ...).
    total
        Units of work in all, or None when unknown.
    message
        Short human-readable status line.
    metrics
        Named numbers for live display (e.g. ``{"fvu": 0.21, "l0": 31.8, "samples_per_s": 9000}``).
    """

    done: int
    total: int | None
    message: str = ""
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)


Job = Generator[Progress, None, R]


def run_job(job: "Job[R]", on_progress: Callable[[Progress], Any] | None = None) -> R:
    """Drive a job generator to completion and return its result.

    Parameters
    ----------
    job
        The generator (yields :class:`Progress`, returns the result).
    on_progress
        Called with every report, e.g. to update a progress bar.

    Returns
    -------
    The value the generator returned.
    """
    try:
        while True:
            p = next(job)
            if on_progress is not None:
                on_progress(p)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        job.close()
