"""The ``labels`` namer: each unit is named after the label it correlates with most.

The score is that Pearson ρ (DESIGN.md §5.4). A unit with no positive correlation to any label
(dead units, units anti-correlated with everything) gets an empty concept rather than a
misleading name. No Qt, no printing, numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medsae_desktop.core.naming.names import FeatureName

NAMER = "labels"


def name_by_labels(corr_kc: np.ndarray, label_names: Sequence[str],
                   units: Sequence[int] | None = None) -> list[FeatureName]:
    """Name units after their highest-ρ label.

    Parameters
    ----------
    corr_kc
        Pearson ρ of every unit with every label, (K, C).
    label_names
        The C label names.
    units
        Units to name (default all K).

    Returns
    -------
    list of FeatureName
        In the order of ``units``; description gives the runner-up label too.
    """
    corr_kc = np.asarray(corr_kc, dtype=np.float64)
    units = range(corr_kc.shape[0]) if units is None else units
    out = []
    for u in units:
        row = np.nan_to_num(corr_kc[int(u)], nan=0.0)
        if row.size == 0 or row.max() <= 0:
            out.append(FeatureName(int(u), "", "no positive correlation with any label", NAMER,
                                   float(row.max()) if row.size else float("nan")))
            continue
        order = np.argsort(-row, kind="stable")
        j = int(order[0])
        desc = f"correlates with {label_names[j]} (rho = {row[j]:.3f})"
        if row.size > 1 and row[order[1]] > 0:
            desc += f"; next {label_names[int(order[1])]} (rho = {row[order[1]]:.3f})"
        out.append(FeatureName(int(u), str(label_names[j]), desc, NAMER, float(row[j])))
    return out
