"""Append-only JSONL progress files that make long model jobs resumable.

``OUTPUT.progress.jsonl`` sits next to the job's output while it runs: a header line describing
the run, then one line per finished work item, each flushed and fsynced, so a kill loses at most
the item in flight (a torn last line is ignored on resume). A resumed run must describe itself
the same way as the header (same SAE, units, prompts), otherwise it refuses, so answers of
different runs are never mixed. When the job completes, the file is renamed to
``OUTPUT.answers.jsonl`` (the raw model answers stay available for inspection).

No Qt, no printing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from medsae_desktop.core.errors import MedsaeError

LOG_VERSION = 1


def progress_path(output: str | os.PathLike[str]) -> Path:
    """The progress file of ``output``."""
    p = Path(output)
    return p.with_name(p.name + ".progress.jsonl")


def answers_path(output: str | os.PathLike[str]) -> Path:
    """Where the progress file goes once the job has finished."""
    p = Path(output)
    return p.with_name(p.name + ".answers.jsonl")


class ProgressLog:
    """An open progress file.

    Parameters
    ----------
    output
        The job's final output file (the log is ``output.progress.jsonl``).
    header
        JSON-able description of the run; a resumed run must match it exactly.
    resume
        Continue an existing log. Without it an existing log is an error (so hours of answers
        are never discarded by accident).
    key
        Maps a record to its work-item key (for :attr:`done`).
    """

    def __init__(self, output: str | os.PathLike[str], header: dict[str, Any], *, resume: bool,
                 key: Callable[[dict[str, Any]], Hashable]) -> None:
        self.path = progress_path(output)
        self.output = Path(output)
        self._key = key
        self.done: dict[Hashable, dict[str, Any]] = {}
        want = {"type": "header", "version": LOG_VERSION, **header}
        if self.path.exists():
            if not resume:
                raise MedsaeError("a progress file of an interrupted run exists: pass --resume "
                                  "to continue it, or delete it to start over", self.path)
            self._load(want)
        elif resume:
            pass  # nothing to resume: start fresh
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_line(want, mode="w")

    def _load(self, want: dict[str, Any]) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill
        if not records or records[0].get("type") != "header":
            raise MedsaeError("progress file has no header; delete it to start over", self.path)
        got = records[0]
        diff = [k for k in set(want) | set(got) if _norm(want.get(k)) != _norm(got.get(k))]
        if diff:
            raise MedsaeError("progress file belongs to a different run (differs in "
                              f"{', '.join(sorted(diff)[:4])}); delete it or drop --resume",
                              self.path)
        for r in records[1:]:
            if r.get("type") == "item":
                self.done[self._key(r)] = r
        # Rewrite without a torn tail so new lines start on a fresh line.
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)

    def _write_line(self, obj: dict[str, Any], mode: str = "a") -> None:
        with open(self.path, mode, encoding="utf-8") as fh:
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, record: dict[str, Any]) -> None:
        """Durably record one finished work item."""
        rec = {"type": "item", **record}
        self._write_line(rec)
        self.done[self._key(rec)] = rec

    def finish(self) -> Path:
        """Rename the log to ``output.answers.jsonl`` (the job completed); returns that path."""
        dest = answers_path(self.output)
        os.replace(self.path, dest)
        return dest


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(v, sort_keys=True, default=str))
