"""Evaluation reports: write, load, compare (DESIGN.md §5.3).

``REPORT_DIR/`` holds

=====================  ======================================================================
file                   content
=====================  ======================================================================
``summary.json``       ``schema_version`` 1; means (``mean_best_corr``, ``mean_best_entropy``,
                       ``mean_ms``, ...), the per-label table, reconstruction metrics (SAE)
``units.csv``          unit, frequency, mean_activation, max_activation, best_label,
                       best_corr, entropy, monosemanticity, alive (the contract's columns)
``correlation.csv``    K×C ρ, header ``unit,<label names>``
``arrays.npz``         the same per-unit numbers plus binarised-unit precision/recall/F1
                       (K×C) and thresholds, for programs (no pickles)
``*.png``              heat map, entropy / frequency / monosemanticity histograms, per-label
``report.html``        self-contained page (figures inlined) with the summary tables
``comparison.json``    with ``--compare``: which report is more monosemantic by each metric
=====================  ======================================================================

:func:`load_report` validates and reads a folder back (the desktop app shows per-unit stats
from it). Matplotlib runs with the Agg backend only. No Qt, no printing.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import math
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.eval.engine import (
    REPORT_SCHEMA_VERSION,
    EvalConfig,
    EvalResult,
    evaluate_job,
)
from medsae_desktop.core.progress import Progress

SUMMARY_NAME = "summary.json"
UNITS_NAME = "units.csv"
CORR_NAME = "correlation.csv"
ARRAYS_NAME = "arrays.npz"
HTML_NAME = "report.html"
COMPARISON_NAME = "comparison.json"
UNITS_COLUMNS = ("unit", "frequency", "mean_activation", "max_activation", "best_label",
                 "best_corr", "entropy", "monosemanticity", "alive")
HEATMAP_UNITS = 50  # as the official plotting script: 50 alive units × labels


@dataclasses.dataclass(frozen=True)
class UnitStats:
    """Everything the report knows about one unit (for the desktop app's feature panel)."""

    unit: int
    frequency: float
    mean_activation: float
    max_activation: float
    best_label: str
    best_corr: float
    entropy: float
    monosemanticity: float
    alive: bool
    corr_by_label: dict[str, float]
    f1_by_label: dict[str, float] | None


@dataclasses.dataclass(frozen=True)
class Report:
    """A loaded evaluation report.

    Attributes
    ----------
    path
        The report folder.
    summary
        ``summary.json``.
    label_names
        C names.
    frequency_k, mean_k, max_k, entropy_k, ms_k
        float64 (K,) (MS NaN for dead units).
    alive_k
        bool (K,).
    best_label_k
        Best label name per unit ("" without labels).
    corr_kc
        Pearson ρ (K, C).
    arrays
        Extra arrays from ``arrays.npz`` (``precision_kc``, ``recall_kc``, ``f1_kc``,
        ``thresholds_k``, ``min_k``, ``rows_n``) when present.
    """

    path: Path
    summary: dict[str, Any]
    label_names: tuple[str, ...]
    frequency_k: np.ndarray
    mean_k: np.ndarray
    max_k: np.ndarray
    entropy_k: np.ndarray
    ms_k: np.ndarray
    alive_k: np.ndarray
    best_label_k: tuple[str, ...]
    corr_kc: np.ndarray
    arrays: dict[str, np.ndarray]

    @property
    def kind(self) -> str:
        """``"sae"`` or ``"raw"``."""
        return str(self.summary.get("kind"))

    @property
    def n_units(self) -> int:
        """K."""
        return int(self.frequency_k.shape[0])

    def unit_stats(self, unit: int) -> UnitStats:
        """Per-unit statistics of ``unit`` (0-based index)."""
        if not 0 <= unit < self.n_units:
            raise IndexError(f"unit {unit} out of range 0..{self.n_units - 1}")
        corr = {name: float(self.corr_kc[unit, j]) for j, name in enumerate(self.label_names)}
        f1 = None
        if "f1_kc" in self.arrays:
            f1 = {name: float(self.arrays["f1_kc"][unit, j])
                  for j, name in enumerate(self.label_names)}
        j_best = int(np.argmax(self.corr_kc[unit])) if self.label_names else -1
        return UnitStats(
            unit=unit, frequency=float(self.frequency_k[unit]), mean_activation=float(
                self.mean_k[unit]), max_activation=float(self.max_k[unit]),
            best_label=self.best_label_k[unit],
            best_corr=float(self.corr_kc[unit, j_best]) if j_best >= 0 else math.nan,
            entropy=float(self.entropy_k[unit]), monosemanticity=float(self.ms_k[unit]),
            alive=bool(self.alive_k[unit]), corr_by_label=corr, f1_by_label=f1)


# ---- writing ----------------------------------------------------------------------------------
def write_report(result: EvalResult, report_dir: str | os.PathLike[str], *,
                 compare_dir: str | os.PathLike[str] | None = None,
                 figures: bool = True) -> Path:
    """Write ``result`` to ``report_dir`` (created if missing); see the module docstring.

    Parameters
    ----------
    result
        From :func:`medsae_desktop.core.eval.evaluate_job`.
    report_dir
        Output folder.
    compare_dir
        Another report folder (e.g. the raw-dimension one) to compare against: adds
        ``comparison.json``, overlays its histograms and a comparison table in the HTML.
    figures
        Write the PNG figures and ``report.html``.

    Returns
    -------
    pathlib.Path
        ``report_dir``.
    """
    out = Path(report_dir)
    if out.exists() and not out.is_dir():
        raise MedsaeError("report output exists and is not a folder", out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(result.label_names)
    m = result.moments
    k = result.n_units
    best_j_k = np.argmax(m.corr_kc, axis=1) if names else np.full(k, -1)
    best_label_k = [names[j] if j >= 0 else "" for j in best_j_k]
    best_corr_k = m.corr_kc[np.arange(k), best_j_k] if names else np.full(k, np.nan)

    _atomic_text(out / SUMMARY_NAME, json.dumps(_json_safe(result.summary), indent=2) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(UNITS_COLUMNS)
    for u in range(k):
        w.writerow([u, _num(m.frequency_k[u]), _num(m.mean_k[u]), _num(m.max_k[u]),
                    best_label_k[u], _num(best_corr_k[u]), _num(result.entropy_k[u]),
                    _num(m.ms_k[u]), int(result.alive_k[u])])
    _atomic_text(out / UNITS_NAME, buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["unit", *names])
    for u in range(k):
        w.writerow([u, *(_num(v) for v in m.corr_kc[u])])
    _atomic_text(out / CORR_NAME, buf.getvalue())

    arrays: dict[str, np.ndarray] = {
        "frequency_k": m.frequency_k, "mean_k": m.mean_k, "min_k": m.min_k, "max_k": m.max_k,
        "entropy_k": result.entropy_k, "ms_k": m.ms_k, "alive_k": result.alive_k,
        "corr_kc": m.corr_kc, "rows_n": result.rows_n,
        "best_unit_c": result.best.unit_c,
    }
    for key, val in (("thresholds_k", result.thresholds_k), ("precision_kc", result.precision_kc),
                     ("recall_kc", result.recall_kc), ("f1_kc", result.f1_kc)):
        if val is not None:
            arrays[key] = val
    tmp = out / (ARRAYS_NAME + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out / ARRAYS_NAME)

    this = load_report(out)
    other = load_report(compare_dir) if compare_dir is not None else None
    comparison = None
    if other is not None:
        comparison = compare_reports(this, other)
        _atomic_text(out / COMPARISON_NAME, json.dumps(_json_safe(comparison), indent=2) + "\n")
    if figures:
        from medsae_desktop.core.eval.figures import write_figures, write_html

        figs = write_figures(this, out, other=other)
        write_html(this, out, figs, comparison=comparison, other=other)
    return out


def evaluate_report_job(
    cache_path: str | os.PathLike[str],
    report_dir: str | os.PathLike[str],
    *,
    sae_dir: str | os.PathLike[str] | None = None,
    config: EvalConfig | None = None,
    compare_dir: str | os.PathLike[str] | None = None,
) -> Generator[Progress, None, Path]:
    """:func:`evaluate_job`, then :func:`write_report`; returns ``report_dir``.

    The report is written only once the evaluation has completed, so a cancelled job (the
    generator closed at a yield) leaves no half-written report folder. A bad ``compare_dir``
    fails before the long evaluation, not after it.
    """
    if compare_dir is not None:
        load_report(compare_dir)
    result = yield from evaluate_job(cache_path, sae_dir=sae_dir, config=config or EvalConfig())
    yield Progress(1, 1, "writing report")
    return write_report(result, report_dir, compare_dir=compare_dir)


def _num(x: float) -> str:
    x = float(x)
    if math.isnan(x):
        return "nan"
    return f"{x:.6g}"


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---- reading ----------------------------------------------------------------------------------
def load_report(report_dir: str | os.PathLike[str]) -> Report:
    """Read and validate a report folder written by :func:`write_report`.

    Raises
    ------
    MedsaeError
        Missing folder or files, unknown schema version, inconsistent tables.
    """
    d = Path(report_dir)
    if not d.is_dir():
        raise MedsaeError("report folder not found", d)
    try:
        summary = json.loads((d / SUMMARY_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MedsaeError(f"not an evaluation report (no {SUMMARY_NAME})", d) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise MedsaeError(f"unreadable {SUMMARY_NAME} ({' '.join(str(exc).split())[:100]})",
                          d) from exc
    version = summary.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise MedsaeError(f"{SUMMARY_NAME} has no valid schema_version", d)
    if version > REPORT_SCHEMA_VERSION:
        raise MedsaeError(f"report schema_version {version} is newer than this program "
                          f"supports ({REPORT_SCHEMA_VERSION})", d)
    label_names = tuple(summary.get("labels") or ())
    rows = _read_csv(d / UNITS_NAME)
    if not rows or tuple(rows[0][:len(UNITS_COLUMNS)]) != UNITS_COLUMNS:
        raise MedsaeError(f"{UNITS_NAME} has an unexpected header", d)
    body = rows[1:]
    col = {name: i for i, name in enumerate(rows[0])}

    def fcol(name: str) -> np.ndarray:
        return np.array([float(r[col[name]]) for r in body], np.float64)

    try:
        freq_k, mean_k, max_k = fcol("frequency"), fcol("mean_activation"), fcol("max_activation")
        entropy_k, ms_k = fcol("entropy"), fcol("monosemanticity")
        alive_k = fcol("alive").astype(bool)
    except (ValueError, IndexError) as exc:
        raise MedsaeError(f"{UNITS_NAME}: malformed number ({exc})", d) from None
    best_label_k = tuple(r[col["best_label"]] for r in body)
    crow = _read_csv(d / CORR_NAME)
    if not crow or tuple(crow[0]) != ("unit", *label_names):
        raise MedsaeError(f"{CORR_NAME} header does not match the labels in {SUMMARY_NAME}", d)
    try:
        corr_kc = np.array([[float(v) for v in r[1:]] for r in crow[1:]],
                           np.float64).reshape(len(crow) - 1, len(label_names))
    except ValueError as exc:
        raise MedsaeError(f"{CORR_NAME}: malformed number ({exc})", d) from None
    if corr_kc.shape[0] != freq_k.shape[0]:
        raise MedsaeError(f"{CORR_NAME} and {UNITS_NAME} disagree on the number of units", d)
    arrays: dict[str, np.ndarray] = {}
    if (d / ARRAYS_NAME).is_file():
        try:
            with np.load(d / ARRAYS_NAME, allow_pickle=False) as z:
                arrays = {key: z[key] for key in z.files}
        except (OSError, ValueError) as exc:
            raise MedsaeError(f"unreadable {ARRAYS_NAME} ({exc})", d) from None
    return Report(path=d, summary=summary, label_names=label_names, frequency_k=freq_k,
                  mean_k=mean_k, max_k=max_k, entropy_k=entropy_k, ms_k=ms_k, alive_k=alive_k,
                  best_label_k=best_label_k, corr_kc=corr_kc, arrays=arrays)


def _read_csv(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.reader(fh))
    except FileNotFoundError:
        raise MedsaeError(f"report file missing: {path.name}", path.parent) from None


# ---- comparison -------------------------------------------------------------------------------
#: (summary key, human name, +1 if higher is more monosemantic / better, −1 if lower is)
COMPARED_METRICS: tuple[tuple[str, str, int], ...] = (
    ("mean_best_corr", "mean best correlation per label", +1),
    ("mean_best_entropy", "mean entropy of the best units", -1),
    ("mean_entropy_alive", "mean entropy of alive units", -1),
    ("mean_ms", "mean monosemanticity score", +1),
    ("mean_best_f1", "mean best F1 of binarised units", +1),
)


def compare_reports(a: Report, b: Report) -> dict[str, Any]:
    """Which of two reports is more monosemantic by each metric.

    Returns
    -------
    dict
        ``{"a": {...}, "b": {...}, "metrics": [{metric, name, a, b, better, winner}],
        "per_label": [{label, a, b, winner}], "labels_won": {a_name: n, b_name: n}}`` with
        report names like ``"sae (rep)"``; ``winner`` is a name, ``"tie"`` or ``None`` when a
        value is missing. Per-label rows only for labels both reports have.
    """
    name_a, name_b = _report_name(a), _report_name(b)
    if name_a == name_b:
        name_a, name_b = f"{name_a} [this]", f"{name_b} [other]"
    rows = []
    for key, human, sign in COMPARED_METRICS:
        va, vb = a.summary.get(key), b.summary.get(key)
        rows.append({"metric": key, "name": human,
                     "better": "higher" if sign > 0 else "lower",
                     "a": va, "b": vb, "winner": _winner(va, vb, sign, name_a, name_b)})
    pa = {r["label"]: r for r in a.summary.get("per_label", [])}
    pb = {r["label"]: r for r in b.summary.get("per_label", [])}
    per_label = []
    won = {name_a: 0, name_b: 0}
    for lab in [x for x in pa if x in pb]:
        va, vb = pa[lab].get("best_corr"), pb[lab].get("best_corr")
        w = _winner(va, vb, +1, name_a, name_b)
        if w in won:
            won[w] += 1
        per_label.append({"label": lab, "a": va, "b": vb, "winner": w})
    notes = []
    if a.summary.get("n_images") != b.summary.get("n_images"):
        notes.append(f"the reports cover different numbers of images "
                     f"({a.summary.get('n_images')} vs {b.summary.get('n_images')})")
    if a.summary.get("labels") != b.summary.get("labels"):
        notes.append("the reports use different label sets")
    if (a.summary.get("config") or {}).get("uncertain") != (b.summary.get("config") or {}).get(
            "uncertain"):
        notes.append("the reports use different uncertainty policies")
    return {"notes": notes, "a": {"name": name_a, "path": str(a.path), "kind": a.kind,
                  "n_units": a.n_units, "n_images": a.summary.get("n_images")},
            "b": {"name": name_b, "path": str(b.path), "kind": b.kind,
                  "n_units": b.n_units, "n_images": b.summary.get("n_images")},
            "metrics": rows, "per_label": per_label, "labels_won": won}


def comparison_lines(comparison: dict[str, Any]) -> list[str]:
    """Plain-text table of a comparison (for the command line)."""
    a, b = comparison["a"]["name"], comparison["b"]["name"]
    out = [f"{'metric':<46} {a[:18]:>18} {b[:18]:>18}  more monosemantic"]
    for r in comparison["metrics"]:
        out.append(f"{r['name'] + ' (' + r['better'] + ')':<46} {_fmt(r['a']):>18} "
                   f"{_fmt(r['b']):>18}  {r['winner'] or 'n/a'}")
    won = comparison["labels_won"]
    if comparison["per_label"]:
        out.append(f"labels whose best unit correlates more: {a}: {won.get(a, 0)}, "
                   f"{b}: {won.get(b, 0)} (of {len(comparison['per_label'])})")
    out += [f"note: {n}" for n in comparison.get("notes", [])]
    return out


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4f}"


def _report_name(r: Report) -> str:
    return f"{r.kind} ({r.path.name})"


def _winner(va: Any, vb: Any, sign: int, name_a: str, name_b: str) -> str | None:
    if va is None or vb is None:
        return None
    va, vb = float(va), float(vb)
    if not (math.isfinite(va) and math.isfinite(vb)):
        return None
    if abs(va - vb) <= 1e-12 * max(1.0, abs(va), abs(vb)):
        return "tie"
    return name_a if (va - vb) * sign > 0 else name_b


# ---- HTML helpers shared with figures.py ------------------------------------------------------
def png_data_uri(path: Path) -> str:
    """``data:image/png;base64,...`` of a PNG file (for a self-contained HTML page)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def esc(x: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(x))
