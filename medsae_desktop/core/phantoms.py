"""Synthetic PA chest-radiograph phantoms with planted, labelled findings (tests and demo).

Each phantom is a uint8 MONOCHROME2 image (bright = dense) of a frontal chest radiograph: soft
tissue of the trunk, neck and shoulders, two dark lung fields with branching vascular markings,
mediastinum, trachea, heart, aortic knob, spine, posterior and anterior ribs, clavicles,
humeral heads, diaphragm domes, liver and gastric bubble; anatomy is jittered per case, then
blurred and given quantum-like noise. Findings are planted independently per image:

=====================  =====================================================================
label                  what is drawn
=====================  =====================================================================
Cardiomegaly           heart 1.32–1.45× wider: cardiothoracic ratio ≈ 0.49–0.63 instead of
                       ≈ 0.37–0.44
Pleural Effusion       basal fluid on one side: opaque, meniscus rising laterally, blunted
                       costophrenic angle, hemidiaphragm silhouette lost
Pneumothorax           one apical/lateral rim of air without vascular markings, darker, with a
                       thin bright visceral pleural line
Lung Lesion            1–3 round nodules (radius 5–16 px at 512 px)
Consolidation          patchy airspace opacity in one zone with air bronchograms; also sets
                       Lung Opacity
Support Devices        1–2 of: endotracheal tube, central venous catheter, nasogastric tube,
                       ECG electrodes with leads
=====================  =====================================================================

Labels use the 14 CheXpert observations (:data:`~medsae_desktop.core.labels.CHEXPERT_LABELS`):
planted columns are 1 or 0, ``No Finding`` is 1 exactly when nothing was planted, and the
columns the generator never draws (Enlarged Cardiomediastinum, Edema, Pneumonia, Atelectasis,
Pleural Other, Fracture) are blank (NaN): the generator makes no statement about them, which
is also what a CheXpert report that does not mention an observation gives. A Lung Lesion alone
does not set Lung Opacity (as the CheXpert labeler treats "nodule"/"mass" mentions).

Where each finding is (bounding box ``[x0, y0, x1, y1]`` in pixels, x to the right, y down,
end-exclusive; centre ``[x, y]``; plus finding-specific fields) is returned in
:attr:`Phantom.findings` and written by :func:`write_phantoms` to ``findings.json``, so heat maps
can be checked against the truth. Image left is the patient's right (PA convention).

Determinism. Phantom ``i`` of seed ``s`` depends only on ``(s, i)``
(``np.random.default_rng([s, i])``; each finding has its own stream ``[s, i, k]``), not on how
many are generated. Pixels are bit-identical
across runs and machines because only IEEE-754 correctly rounded element-wise operations are
used (+ − × ÷ sqrt, comparisons, floor, sequential cumsum) and random numbers come only from
``Generator.random``/``integers``: no exp/sin/log (libm and SIMD builds differ in the last
ulp), no ``Generator.normal`` (its slow path calls libm), no BLAS, no pairwise reductions on
the pixel path. PNG *files* may still differ in bytes between zlib versions; their pixels do
not.

No Qt, no printing.
"""

import contextlib
import dataclasses
import json
import math
import os
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from medsae_desktop.core.labels import CHEXPERT_LABELS
from medsae_desktop.core.progress import Progress

#: Findings the generator can plant, with their default prevalence (independent draws).
DEFAULT_PREVALENCE: tuple[tuple[str, float], ...] = (
    ("Cardiomegaly", 0.25),
    ("Pleural Effusion", 0.25),
    ("Pneumothorax", 0.20),
    ("Lung Lesion", 0.25),
    ("Consolidation", 0.25),
    ("Support Devices", 0.30),
)

#: CheXpert columns a phantom has a definite value for; every other column is blank (NaN).
PLANTED_LABELS: tuple[str, ...] = (
    "No Finding", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Consolidation",
    "Pneumothorax", "Pleural Effusion", "Support Devices",
)

FINDINGS_SCHEMA_VERSION = 1
LABELS_FILE = "labels.csv"
FINDINGS_FILE = "findings.json"


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    """How phantoms are drawn.

    Attributes
    ----------
    size
        Side of the square image in pixels (geometry scales with it).
    prevalence
        ``(finding, probability)`` pairs; each finding is planted independently.
    noise
        Standard deviation of the pixel noise, in 8-bit grey levels.
    """

    size: int = 512
    prevalence: tuple[tuple[str, float], ...] = DEFAULT_PREVALENCE
    noise: float = 3.0

    def __post_init__(self) -> None:
        known = {name for name, _ in DEFAULT_PREVALENCE}
        for name, p in self.prevalence:
            if name not in known:
                raise ValueError(f"cannot plant {name!r}; known findings: {sorted(known)}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"prevalence of {name!r} must be in [0, 1], got {p}")
        if self.size < 64:
            raise ValueError(f"phantom size must be at least 64 px, got {self.size}")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One planted finding.

    Attributes
    ----------
    label
        CheXpert observation name.
    bbox
        ``(x0, y0, x1, y1)`` pixels, end-exclusive.
    center
        ``(x, y)`` pixels.
    details
        Finding-specific facts (side, radius, device kind, cardiothoracic ratio ...).
    """

    label: str
    bbox: tuple[int, int, int, int]
    center: tuple[float, float]
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (used in ``findings.json``)."""
        return {"label": self.label, "bbox": list(self.bbox),
                "center": [round(c, 2) for c in self.center], **self.details}


@dataclasses.dataclass(frozen=True)
class Phantom:
    """One generated image and its truth.

    Attributes
    ----------
    image_hw
        uint8 (size, size), MONOCHROME2.
    labels
        CheXpert observation → 1.0, 0.0 or NaN (blank), for all 14 columns.
    findings
        Planted findings with their geometry.
    anatomy
        Case geometry for reference (heart and lung boxes, cardiothoracic ratio, ...).
    """

    image_hw: np.ndarray
    labels: dict[str, float]
    findings: tuple[Finding, ...]
    anatomy: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class PhantomSetResult:
    """What :func:`write_phantoms` wrote.

    Attributes
    ----------
    out_dir
        Output folder.
    n
        Number of images.
    labels_csv
        The CheXpert-style labels file.
    findings_json
        Per-image finding geometry.
    positives
        Finding label → number of positive images.
    seconds
        Wall time.
    """

    out_dir: Path
    n: int
    labels_csv: Path
    findings_json: Path
    positives: dict[str, int]
    seconds: float


def phantom_name(index: int) -> str:
    """File name of phantom ``index`` (``phantom_00000.png``)."""
    return f"phantom_{index:05d}.png"


# ---------------------------------------------------------------------------------------------
# Element-wise helpers (platform-exact arithmetic only; see module docstring)
# ---------------------------------------------------------------------------------------------

_F = np.float32  # images are float32: half the memory traffic of float64, still exact IEEE ops


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _soft(d: np.ndarray, edge: float) -> np.ndarray:
    """0 → 1 across a signed distance ``d`` (pixels), 0.5 at d = 0, ramp width ``edge``."""
    return _smoothstep(d * (1.0 / edge) + 0.5)


def _bump(q: np.ndarray) -> np.ndarray:
    """Projected thickness of a sphere/cylinder: sqrt(1 − q) for q = r²/R² (0 outside)."""
    return np.sqrt(np.maximum(1.0 - q, 0.0))


def _box_blur(a_hw: np.ndarray, r: int) -> np.ndarray:
    """Separable box blur of radius ``r`` (window 2r + 1) with edge replication.

    A fixed sequence of shifted element-wise additions: the summation order is the same on
    every machine (unlike ``np.sum``'s pairwise/SIMD order), so results are bit-identical.
    """
    if r <= 0:
        return a_hw
    k = 2 * r + 1
    h, w = a_hw.shape
    p = np.pad(a_hw, r, mode="edge")
    rows = p[0:h].copy()
    for i in range(1, k):
        rows += p[i:i + h]
    out = rows[:, 0:w].copy()
    for j in range(1, k):
        out += rows[:, j:j + w]
    out *= 1.0 / (k * k)
    return out


def _unit(dx: float, dy: float) -> tuple[float, float]:
    n = math.sqrt(dx * dx + dy * dy)  # correctly rounded, like + − × ÷
    return dx / n, dy / n


def _rotate(c: float, s: float, t: float) -> tuple[float, float]:
    """Rotate the unit vector (c, s) by the angle whose half-tangent is ``t``.

    The rational parametrisation cos = (1 − t²)/(1 + t²), sin = 2t/(1 + t²) is exact
    arithmetic, unlike libm cos/sin.
    """
    ca, sa = (1.0 - t * t) / (1.0 + t * t), 2.0 * t / (1.0 + t * t)
    return c * ca - s * sa, c * sa + s * ca


def _rotate_n(d_n2: np.ndarray, t_n: np.ndarray) -> np.ndarray:
    """:func:`_rotate` for many unit vectors (n, 2) and half-tangents (n,)."""
    tt = t_n * t_n
    ca, sa = (1.0 - tt) / (1.0 + tt), 2.0 * t_n / (1.0 + tt)
    c, s = d_n2[:, 0], d_n2[:, 1]
    return np.stack([c * ca - s * sa, c * sa + s * ca], axis=1)


class _Grid:
    """Pixel-centre coordinates of a (possibly coarser) sampling of the S × S image.

    Geometry is always expressed in full-resolution pixels; a grid with ``step`` 2 evaluates
    it at the centres of 2 × 2 blocks. Smooth anatomy is drawn on the coarse grid (4× fewer
    pixels) and upsampled; thin structures are drawn on the full grid.
    """

    def __init__(self, size: int, step: int) -> None:
        self.size, self.step = size, step
        self.n = -(-size // step)
        ar = np.arange(self.n, dtype=_F) * step + (step - 1) / 2.0
        self.x = ar[None, :]  # (1, n)
        self.y = ar[:, None]  # (n, 1)

    def zeros(self) -> np.ndarray:
        return np.zeros((self.n, self.n), _F)

    def _span(self, lo: float, hi: float) -> tuple[int, int]:
        off = (self.step - 1) / 2.0
        i0 = max(int(math.floor((lo - off) / self.step)), 0)
        i1 = min(int(math.ceil((hi - off) / self.step)) + 1, self.n)
        return i0, i1

    def at(self, a_hw: np.ndarray, px: float, py: float) -> float:
        """Value of a grid array at a full-resolution point (nearest sample)."""
        i = min(max(int(py) // self.step, 0), self.n - 1)
        j = min(max(int(px) // self.step, 0), self.n - 1)
        return float(a_hw[i, j])

    def segment(self, layer_hw: np.ndarray, p0: tuple[float, float], p1: tuple[float, float],
                radius: float, amp: float) -> None:
        """Max-combine a tube (projected cylinder) from p0 to p1 into ``layer_hw`` in place."""
        x0, x1 = self._span(min(p0[0], p1[0]) - radius, max(p0[0], p1[0]) + radius)
        y0, y1 = self._span(min(p0[1], p1[1]) - radius, max(p0[1], p1[1]) + radius)
        if x0 >= x1 or y0 >= y1:
            return
        px = self.x[:, x0:x1] - p0[0]
        py = self.y[y0:y1, :] - p0[1]
        vx, vy = p1[0] - p0[0], p1[1] - p0[1]
        vv = vx * vx + vy * vy
        t = np.clip((px * vx + py * vy) * (1.0 / vv), 0.0, 1.0) if vv > 0 else 0.0 * (px + py)
        dx, dy = px - t * vx, py - t * vy
        tube = amp * _bump((dx * dx + dy * dy) * (1.0 / (radius * radius)))
        np.maximum(layer_hw[y0:y1, x0:x1], tube, out=layer_hw[y0:y1, x0:x1])

    def polyline(self, layer_hw: np.ndarray, pts: Sequence[tuple[float, float]],
                 radius: float, amp: float) -> None:
        """Max-combine a tube along a polyline."""
        for a, b in zip(pts[:-1], pts[1:]):
            self.segment(layer_hw, a, b, radius, amp)

    def disc(self, cx: float, cy: float, r: float) -> tuple[slice, slice, np.ndarray]:
        """Normalised squared radius r²/R² on the bounding box of a disc (for bumps)."""
        x0, x1 = self._span(cx - r, cx + r)
        y0, y1 = self._span(cy - r, cy + r)
        dx = (self.x[:, x0:x1] - cx) * (1.0 / r)
        dy = (self.y[y0:y1, :] - cy) * (1.0 / r)
        return slice(y0, y1), slice(x0, x1), dx * dx + dy * dy

    def bbox(self, mask_hw: np.ndarray, thresh: float) -> tuple[int, int, int, int]:
        """Full-resolution ``(x0, y0, x1, y1)`` of ``mask_hw > thresh`` (zeros when empty)."""
        m = mask_hw > thresh
        ys = np.flatnonzero(m.any(axis=1))
        xs = np.flatnonzero(m.any(axis=0))
        if ys.size == 0:
            return (0, 0, 0, 0)
        s = self.step
        return (int(xs[0]) * s, int(ys[0]) * s,
                min((int(xs[-1]) + 1) * s, self.size), min((int(ys[-1]) + 1) * s, self.size))


def _upsample2(a_hw: np.ndarray, size: int) -> np.ndarray:
    """Coarse (step 2) grid → full resolution by bilinear interpolation (edge-clamped).

    Coarse sample j sits at full-resolution coordinate 2j + 0.5, so full pixel 2j mixes
    samples j − 1 and j with weights 1/4, 3/4 and pixel 2j + 1 mixes j and j + 1 with 3/4, 1/4.
    """
    p = np.pad(a_hw, 1, mode="edge")
    n, m = a_hw.shape
    rows = np.empty((2 * n, m + 2), _F)
    rows[0::2] = 0.25 * p[0:n] + 0.75 * p[1:n + 1]
    rows[1::2] = 0.75 * p[1:n + 1] + 0.25 * p[2:n + 2]
    out = np.empty((2 * n, 2 * m), _F)
    out[:, 0::2] = 0.25 * rows[:, 0:m] + 0.75 * rows[:, 1:m + 1]
    out[:, 1::2] = 0.75 * rows[:, 1:m + 1] + 0.25 * rows[:, 2:m + 2]
    return out[:size, :size]


def _bezier(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float],
            n: int = 24) -> list[tuple[float, float]]:
    """Points along a quadratic Bézier curve."""
    out = []
    for i in range(n + 1):
        t = i / n
        a, b, c = (1 - t) * (1 - t), 2 * (1 - t) * t, t * t
        out.append((a * p0[0] + b * p1[0] + c * p2[0], a * p0[1] + b * p1[1] + c * p2[1]))
    return out


def _bbox_pts(pts: Sequence[tuple[float, float]], pad: float, size: int
              ) -> tuple[int, int, int, int]:
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    return (max(int(min(xs) - pad), 0), max(int(min(ys) - pad), 0),
            min(int(max(xs) + pad) + 1, size), min(int(max(ys) + pad) + 1, size))


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


# ---------------------------------------------------------------------------------------------
# The phantom
# ---------------------------------------------------------------------------------------------

def sample_findings(index: int, seed: int = 0,
                    config: PhantomConfig = PhantomConfig()) -> frozenset[str]:
    """Which findings phantom ``index`` of the set ``seed`` has (cheap: no drawing).

    Each finding of ``config.prevalence`` is drawn independently with its probability.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    return frozenset(name for name, p in config.prevalence if rng.random() < p)


def make_phantom(index: int, seed: int = 0, config: PhantomConfig = PhantomConfig(), *,
                 findings: Iterable[str] | None = None) -> Phantom:
    """Draw phantom ``index`` of the set with ``seed``.

    Parameters
    ----------
    index
        Position in the set (0-based); each index is an independent case.
    seed
        Set seed.
    config
        Size, prevalences, noise.
    findings
        Plant exactly these findings instead of sampling them (tests, demos). The anatomy,
        the noise and each finding's own look do not change with this choice: every finding
        draws from its own random stream, so toggling one changes only its pixels.

    Returns
    -------
    Phantom
        Image, 14 CheXpert labels, planted findings with geometry, anatomy facts.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    # Findings first, one draw per entry whatever the outcome, so the anatomy stream that
    # follows never depends on them.
    planted = {name for name, p in config.prevalence if rng.random() < p}
    if findings is not None:
        planted = set(findings)
        unknown = planted - set(_FINDING_STREAM)
        if unknown:
            raise ValueError(f"cannot plant {sorted(unknown)}; known: {sorted(_FINDING_STREAM)}")
    return _Drawer(rng, planted, config, seed=int(seed), index=int(index)).draw()


#: Random stream of each finding (see :func:`make_phantom`): default_rng([seed, index, k]).
_FINDING_STREAM = {name: 1 + k for k, (name, _) in enumerate(DEFAULT_PREVALENCE)}


class _Drawer:
    """Draws one phantom. Densities are in final-brightness units (0 black … 1 white)."""

    def __init__(self, rng: np.random.Generator, planted: set[str], config: PhantomConfig, *,
                 seed: int, index: int) -> None:
        self.rng, self.planted, self.config = rng, planted, config
        self.seed, self.index = seed, index
        self.S = config.size
        self.c = _Grid(self.S, 2)   # smooth anatomy
        self.f = _Grid(self.S, 1)   # thin structures
        self.findings: list[Finding] = []

    def u(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(self.rng.random())

    @contextlib.contextmanager
    def stream(self, finding: str) -> Iterator[None]:
        """Draw from ``finding``'s own random stream inside the block."""
        saved = self.rng
        self.rng = np.random.default_rng([self.seed, self.index, _FINDING_STREAM[finding]])
        try:
            yield
        finally:
            self.rng = saved

    # ---- orchestration ---------------------------------------------------------------
    def draw(self) -> Phantom:
        S, u = self.S, self.u
        # Case anatomy, as fractions of S with per-case jitter.
        self.mid = S * u(0.485, 0.515)
        self.apex_y = S * u(0.10, 0.14)
        self.cp_y = S * u(0.76, 0.82)                       # costophrenic angles
        self.dome_r = self.cp_y - S * u(0.11, 0.15)         # patient-right dome (image left)
        self.dome_l = self.dome_r + S * u(0.015, 0.04)      # the liver pushes the right one up
        self.lung_w = S * u(0.33, 0.37)                     # hemithorax width from midline
        self.med_top, self.med_bot = S * u(0.045, 0.055), S * u(0.07, 0.085)
        self.body_hw = self.lung_w * 1.08 + S * u(0.035, 0.06)   # chest wall outside the lungs

        coarse = self._body()
        self._lungs_and_heart()
        coarse -= self.air_c
        coarse += self._mediastinum()
        coarse += self._abdomen()
        coarse += self._bones()
        fine = self.f.zeros()
        with self.stream("Pneumothorax"):
            ptx_zone_c = self._pneumothorax(fine)
        coarse -= 0.10 * ptx_zone_c                        # more air, no lung tissue
        fine += self._vessels(ptx_zone_c)
        if "Cardiomegaly" in self.planted:
            self.findings.append(Finding(
                "Cardiomegaly", self.heart_box, (self.heart_cx, self.heart_cy),
                {"cardiothoracic_ratio": round(self.ctr, 3), "scale": round(self.ctr_scale, 3)}))
        if "Pleural Effusion" in self.planted:
            with self.stream("Pleural Effusion"):
                coarse += self._effusion()
        if "Lung Lesion" in self.planted:
            with self.stream("Lung Lesion"):
                self._nodules(fine, ptx_zone_c)
        if "Consolidation" in self.planted:
            with self.stream("Consolidation"):
                coarse += self._consolidation(ptx_zone_c)
        if "Support Devices" in self.planted:
            with self.stream("Support Devices"):
                self._devices(fine)
        image_hw = self._acquire(_upsample2(coarse, S) + fine)
        return Phantom(image_hw=image_hw, labels=self._labels(), findings=tuple(self.findings),
                       anatomy=self._anatomy())

    # ---- anatomy (coarse grid) --------------------------------------------------------
    def _body(self) -> np.ndarray:
        S, c, u = self.S, self.c, self.u
        x, y = c.x, c.y
        ax = np.abs(x - self.mid)
        # Trunk: sloping shoulders from the neck outwards, a little narrower at the top, and
        # thinner (darker) towards the flanks like a projected cylinder.
        top = S * (0.01 + 0.13 * _smoothstep((ax - S * 0.07) * (1.0 / (S * 0.34))))
        hw = self.body_hw * (0.9 + 0.1 * _smoothstep((y - S * 0.1) * (1.0 / (S * 0.5))))
        rel = ax / hw
        body = _soft(1.0 - rel, 0.05) * _soft(y - top, S * 0.03)
        tissue = body * (0.28 + 0.32 * np.sqrt(_bump(rel * rel)))
        # Arms beside the trunk (partly off the image), separated by a dark gap.
        arm_r = S * u(0.06, 0.08)
        arm_c = self.body_hw + S * u(0.01, 0.03) + arm_r
        az = (ax - arm_c) * (1.0 / arm_r)
        arm = _bump(az * az) * _soft(y - S * 0.12, S * 0.05)
        hz = (ax - arm_c + arm_r * 0.3) * (1.0 / (arm_r * 0.45))
        humerus = _bump(hz * hz) * _soft(y - S * 0.2, S * 0.02)
        ys, xs, q = c.disc(self.mid - arm_c + arm_r * 0.3, S * 0.17, arm_r * 0.8)
        head = c.zeros()
        head[ys, xs] = _bump(q)
        ys, xs, q = c.disc(self.mid + arm_c - arm_r * 0.3, S * 0.17, arm_r * 0.8)
        head[ys, xs] = np.maximum(head[ys, xs], _bump(q))
        self.body_c = np.maximum(body, arm)
        return tissue + 0.30 * arm * (1.0 - body) + 0.12 * np.maximum(humerus, head) * arm

    def _lungs_and_heart(self) -> None:
        S, c, u = self.S, self.c, self.u
        x, y = c.x, c.y
        self.lungs_c: dict[str, np.ndarray] = {}
        self.lung_q: dict[str, np.ndarray] = {}
        for side, sgn, dome in (("right", -1.0, self.dome_r), ("left", 1.0, self.dome_l)):
            cx = self.mid + sgn * self.lung_w * 0.52
            a = self.lung_w * 0.56
            b_up = (self.cp_y - self.apex_y) * 0.62
            cy = self.apex_y + b_up
            lu = (x - cx) * (1.0 / a)
            lv = (y - cy) * (1.0 / b_up)
            lu2, lv2 = lu * lu, lv * lv
            # Rounded apex (ellipse) above cy, squarer base (superellipse) below it.
            q = np.where(lv < 0, lu2 + lv2, lu2 * lu2 + lv2 * lv2)
            shape = _soft((1.0 - np.sqrt(q)) * a, S * 0.016)
            frac = np.clip((y - self.apex_y) * (1.0 / (self.cp_y - self.apex_y)), 0.0, 1.0)
            med = self.med_top + (self.med_bot - self.med_top) * frac
            shape = shape * _soft(sgn * (x - self.mid) - med, S * 0.01)
            # Diaphragm dome: a parabola, lowest at the lateral costophrenic angle.
            t = (x - (self.mid + sgn * self.lung_w * 0.42)) * (1.0 / (self.lung_w * 0.58))
            dome_y = dome + (self.cp_y - dome) * t * t
            self.lungs_c[side] = shape * _soft(dome_y - y, S * 0.01)
            self.lung_q[side] = q

        # Heart: a tilted ellipse on the diaphragm, mostly left of the midline (image right).
        self.ctr_scale = 1.0
        if "Cardiomegaly" in self.planted:
            with self.stream("Cardiomegaly"):
                self.ctr_scale = self.u(1.32, 1.45)
        ha = S * u(0.15, 0.165) * self.ctr_scale
        hb = S * u(0.10, 0.115) * (1.0 + 0.3 * (self.ctr_scale - 1.0))
        self.heart_cx = self.mid + S * u(0.045, 0.06) + 0.25 * (self.ctr_scale - 1.0) * ha
        self.heart_cy = self.dome_l - hb * 0.6
        cs, sn = _rotate(1.0, 0.0, u(0.12, 0.22))           # long axis slopes down to the left
        dx, dy = x - self.heart_cx, y - self.heart_cy
        hx = (dx * cs + dy * sn) * (1.0 / ha)
        hy = (dy * cs - dx * sn) * (1.0 / hb)
        heart = _soft((1.0 - np.sqrt(hx * hx + hy * hy)) * hb, S * 0.025)
        self.heart_c = heart * _soft(self.dome_l + S * 0.015 - y, S * 0.01)
        for side in self.lungs_c:
            self.lungs_c[side] = self.lungs_c[side] * (1.0 - self.heart_c)
        self.lung_all_c = self.lungs_c["right"] + self.lungs_c["left"]
        self.heart_box = c.bbox(self.heart_c, 0.5)
        self.lung_box = {k: c.bbox(v, 0.5) for k, v in self.lungs_c.items()}
        thorax_w = self.lung_box["left"][2] - self.lung_box["right"][0]
        self.ctr = (self.heart_box[2] - self.heart_box[0]) / max(thorax_w, 1)
        # Lung air: darkest in the mid zones; apices and bases have more tissue in the beam.
        zone = np.clip((y - self.apex_y) * (1.0 / (self.cp_y - self.apex_y)), 0.0, 1.0)
        # Mottling: a smooth random field (bilinear from a 1/16-resolution grid).
        k = -(-c.n // 16)
        field = self.rng.random((k, k), dtype=_F)
        for _ in range(4):
            field = _upsample2(field, 2 * field.shape[0])
        field = field[:c.n, :c.n]
        self.air_depth_c = (0.19 + 0.08 * zone * (1.0 - zone) * 4.0) * (0.85 + 0.30 * field)
        self.air_c = self.air_depth_c * self.lung_all_c

    def _mediastinum(self) -> np.ndarray:
        S, c, u = self.S, self.c, self.u
        x, y = c.x, c.y
        ax = np.abs(x - self.mid)
        frac = np.clip((y - self.apex_y) * (1.0 / (self.cp_y - self.apex_y)), 0.0, 1.0)
        med_hw = self.med_top + (self.med_bot - self.med_top) * frac
        med = _soft(med_hw - ax, S * 0.01) * _soft(self.dome_r + S * 0.02 - y, S * 0.02)
        # Mediastinum and heart are one silhouette (max, not sum: no seam, no double density).
        dens = 0.21 * np.maximum(med * self.body_c, self.heart_c)
        ys, xs, q = c.disc(self.mid + S * 0.06, self.apex_y + S * u(0.15, 0.18), S * 0.045)
        dens[ys, xs] += 0.14 * _bump(q) * (1.0 - 0.5 * med[ys, xs])   # aortic knob
        # Spine: vertebral bodies with darker disc spaces (triangle wave), behind everything.
        spine = _soft(S * 0.033 - ax, S * 0.006) * self.body_c
        spine = spine * (1.0 - 0.6 * _soft(y - self.dome_l - S * 0.03, S * 0.05))
        ph = (y - S * u(0.0, 0.02)) * (1.0 / (S * 0.047))
        disc_gap = np.abs(ph - np.floor(ph) - 0.5) * 2.0
        dens += spine * (0.06 - 0.04 * disc_gap * disc_gap * disc_gap)
        # Trachea (air column, slightly deviated) and main bronchi.
        tx = (x - self.mid + (y - S * 0.3) * 0.03) * (1.0 / (S * 0.015))
        trachea = _bump(tx * tx) * _soft(S * 0.30 - y, S * 0.02)
        airway = c.zeros()
        for sgn in (-1.0, 1.0):
            c.segment(airway, (self.mid, S * 0.30), (self.mid + sgn * S * 0.07, S * 0.36),
                      S * 0.011, 1.0)
        return dens - 0.12 * trachea - 0.07 * airway

    def _abdomen(self) -> np.ndarray:
        S, c, u = self.S, self.c, self.u
        x, y = c.x, c.y
        dome = np.where(x < self.mid, self.dome_r, self.dome_l)
        below = _soft(y - dome - S * 0.01, S * 0.03) * self.body_c * (1.0 - self.lung_all_c)
        dens = 0.10 * below
        ys, xs, q = c.disc(self.mid + S * u(0.12, 0.18), self.dome_l + S * u(0.045, 0.06),
                           S * u(0.035, 0.05))
        bubble = _bump(q) * (y[ys] > self.dome_l + S * 0.02)
        dens[ys, xs] -= 0.22 * bubble                       # gastric air bubble
        return dens

    def _bones(self) -> np.ndarray:
        S, c, u = self.S, self.c, self.u
        x, y = c.x, c.y
        ax = np.abs(x - self.mid)
        t = np.minimum(ax * (1.0 / (self.lung_w * 1.05)), 1.3)
        n_ribs = 10
        r0 = self.apex_y - S * u(0.02, 0.04)
        step = S * u(0.064, 0.072)
        grow = 0.035 * step                                 # rib spacing widens downwards
        rib_w = u(0.38, 0.45)                               # rib height / rib spacing

        def rib_index(w: np.ndarray) -> np.ndarray:
            # Invert knot_i = r0 + step·i + grow·i² (exact sqrt, no interpolation tables).
            disc = np.maximum(step * step + 4.0 * grow * (w - r0), 0.0)
            return (np.sqrt(disc) - step) * (1.0 / (2.0 * grow))

        def rib_profile(g: np.ndarray, width: float) -> np.ndarray:
            fr = g - np.floor(g)
            z = (fr - width / 2.0) * (2.0 / width)          # −1 … 1 across the rib
            az = np.abs(z)
            cortex = np.clip(1.0 - (1.0 - az) * 4.0, 0.0, 1.0)  # bright upper/lower margins
            return (0.55 * _bump(z * z) + 0.45 * cortex) * (az < 1.0)

        # Posterior ribs rise a little from the spine, then sweep down laterally.
        g = rib_index(y - S * (-0.05 * t + 0.08 * t * t + 0.13 * t * t * t))
        post = rib_profile(g, rib_w) * ((g >= 0) & (g < n_ribs))
        lateral = _soft(t - 0.07, 0.05) * _soft(1.1 - t, 0.08)
        bones = 0.11 * post * lateral
        # Anterior ribs: fainter, from the lateral wall down towards the sternum.
        ga = rib_index(y - S * (0.20 * (1.0 - t) * (1.0 - t) + 0.04 * (1.0 - t)) - S * 0.03)
        ant = rib_profile(ga, 0.3) * ((ga >= 0.5) & (ga < 7))
        bones += 0.05 * ant * _soft(t - 0.35, 0.1) * _soft(1.05 - t, 0.06)
        bones = bones * _soft(self.cp_y + S * 0.06 - y, S * 0.04) * self.body_c
        # Clavicles: medial end low near the midline, lateral end up at the shoulder.
        cy0, rise = S * u(0.16, 0.19), S * u(0.04, 0.07)
        s = (ax - S * 0.035) * (1.0 / (S * 0.33))
        yc = cy0 - rise * s - S * 0.03 * s * (1.0 - s)
        cz = (y - yc) * (1.0 / (S * 0.016))
        clav = _bump(cz * cz) * _soft(s, 0.04) * _soft(1.0 - s, 0.04)
        bones += 0.16 * clav
        return bones

    # ---- vessels (full grid) ---------------------------------------------------------
    def _vessels(self, ptx_zone_c: np.ndarray) -> np.ndarray:
        """Branching vascular trees from each hilum, splatted at full resolution.

        Each segment is sampled every ~1.5 px; samples are max-splatted and the layer is blurred
        (one vectorised pass instead of hundreds of per-segment distance fields). Samples are
        weighted by the lung mask there, so markings stop at the lung edge and are absent in a
        pneumothorax.
        """
        S, rng = self.S, self.rng
        # Primary branches: a fan per hilum (apical → lateral → basal), then 5 generations of
        # binary splits, vectorised per generation (every random number from rng.random).
        k = np.arange(9, dtype=_F)
        p_l, d_l, amp_l = [], [], []
        for sgn in (-1.0, 1.0):
            r = rng.random((4, 9), dtype=_F)
            v = 2.0 * (k + 0.7 * r[0] - 0.35) / 8.0 - 1.0
            dx, dy = sgn * (0.25 + 0.75 * (1.0 - v * v)), v * 1.1 - 0.1
            n = np.sqrt(dx * dx + dy * dy)
            d_l.append(np.stack([dx / n, dy / n], axis=1))
            p_l.append(np.stack([self.mid + sgn * S * (0.075 + 0.025 * r[1]),
                                 S * (0.43 + 0.06 * v) + S * (0.03 * r[2] - 0.015)], axis=1))
            amp_l.append(S * (0.035 + 0.02 * r[3]))        # branch length
        pos, dirs, length = np.concatenate(p_l), np.concatenate(d_l), np.concatenate(amp_l)
        starts, vecs, amps = [], [], []
        for gen in range(6):
            m = len(length)
            r = rng.random((6, m), dtype=_F)
            # Each branch wiggles: two half-segments with a small bend between them.
            wig = _rotate_n(dirs, 0.24 * r[0] - 0.12)
            half = (0.5 * length)[:, None]
            mid_pt = pos + wig * half
            end = mid_pt + dirs * half
            starts += [pos, mid_pt]
            vecs += [wig * half, dirs * half]
            a_g = np.float32(0.85 ** gen)
            amps += [np.full(m, a_g, _F), np.full(m, a_g * 0.95, _F)]
            if gen == 5:
                break
            keep1 = (r[1] >= 0.3) | (gen < 2)               # prune: not every branch splits
            keep2 = (r[2] >= 0.3) | (gen < 2)
            d1 = _rotate_n(dirs, 0.1 + 0.3 * r[3])
            d2 = _rotate_n(dirs, -0.1 - 0.3 * r[4])
            pos = np.concatenate([end[keep1], end[keep2]])
            dirs = np.concatenate([d1[keep1], d2[keep2]])
            shrink = 0.7 + 0.2 * r[5]
            length = np.concatenate([(length * shrink)[keep1], (length * shrink)[keep2]])
        p0 = np.concatenate(starts)
        ev = np.concatenate(vecs)
        seg_amp = np.concatenate(amps)
        ex, ey = ev[:, 0], ev[:, 1]
        n_s = np.maximum((np.sqrt(ex * ex + ey * ey) * (1.0 / 1.5)).astype(np.int64), 2)
        idx = np.repeat(np.arange(len(seg_amp)), n_s)
        first = np.repeat(np.cumsum(n_s) - n_s, n_s)
        tt = (np.arange(idx.size) - first).astype(_F) / n_s[idx].astype(_F)
        px = p0[idx, 0] + ex[idx] * tt
        py = p0[idx, 1] + ey[idx] * tt
        amp = seg_amp[idx] * (1.0 - 0.15 * tt)              # taper along each branch
        ix = np.clip(np.floor(px + 0.5).astype(np.int64), 0, S - 1)
        iy = np.clip(np.floor(py + 0.5).astype(np.int64), 0, S - 1)
        lung = self.lung_all_c[iy // 2, ix // 2] * (1.0 - ptx_zone_c[iy // 2, ix // 2])
        # Splat by summation (bincount: sequential, deterministic); proximal vessels get a
        # cross of neighbours so they come out wider after the blur.
        w = amp * lung
        thick = amp > 0.8
        flat = [iy * S + ix]
        weights = [w]
        for oy, ox in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            flat.append(np.clip(iy[thick] + oy, 0, S - 1) * S + np.clip(ix[thick] + ox, 0, S - 1))
            weights.append(w[thick])
        layer = np.bincount(np.concatenate(flat), weights=np.concatenate(weights),
                            minlength=S * S).astype(_F).reshape(S, S)
        layer = _box_blur(np.minimum(layer, 1.2), 1) * 1.3
        # Hilar shadows: the big pulmonary arteries.
        for sgn in (-1.0, 1.0):
            ys, xs, q = self.f.disc(self.mid + sgn * S * 0.085, S * 0.43, S * 0.035)
            layer[ys, xs] += 0.35 * _bump(q)
        return 0.13 * layer

    # ---- findings ----------------------------------------------------------------------
    def _pneumothorax(self, fine: np.ndarray) -> np.ndarray:
        """Air rim (coarse, returned) and visceral pleural line (drawn into ``fine``)."""
        if "Pneumothorax" not in self.planted:
            return self.c.zeros()
        S, c, f, u = self.S, self.c, self.f, self.u
        side = "right" if self.rng.random() < 0.5 else "left"
        depth = u(0.12, 0.24)                              # rim thickness in lung-shape units
        q0 = (1.0 - depth) * (1.0 - depth)
        lower = S * u(0.45, 0.62)                          # how far down the rim reaches
        lung = self.lungs_c[side]
        zone = _soft((self.lung_q[side] - q0) * (S * 0.25), S * 0.006)
        zone = zone * _soft(lower - c.y, S * 0.05) * np.minimum(lung * 1.5, 1.0)
        box = c.bbox(zone, 0.5)
        # The pleural line is thin: evaluate the lung shape at full resolution on its box only.
        x0, y0, x1, y1 = max(box[0] - 8, 0), max(box[1] - 8, 0), min(box[2] + 8, S), \
            min(box[3] + 8, S)
        sgn = -1.0 if side == "right" else 1.0
        cx = self.mid + sgn * self.lung_w * 0.52
        a = self.lung_w * 0.56
        b_up = (self.cp_y - self.apex_y) * 0.62
        cy = self.apex_y + b_up
        lu = (f.x[:, x0:x1] - cx) * (1.0 / a)
        lv = (f.y[y0:y1, :] - cy) * (1.0 / b_up)
        lu2, lv2 = lu * lu, lv * lv
        q = np.where(lv < 0, lu2 + lv2, lu2 * lu2 + lv2 * lv2)
        dist = (q - q0) * (S * 0.25 / (S * 0.004))        # ≈ distance in line half-widths
        line = _bump(dist * dist) * _soft(lower - f.y[y0:y1, :], S * 0.05)
        inside = _upsample2(lung, S)[y0:y1, x0:x1] > 0.5
        fine[y0:y1, x0:x1] += 0.09 * line * inside
        self.findings.append(Finding("Pneumothorax", box, _centre(box),
                                     {"side": side, "rim_fraction": round(depth, 3)}))
        return zone

    def _effusion(self) -> np.ndarray:
        S, c, u = self.S, self.c, self.u
        side = "right" if self.rng.random() < 0.5 else "left"
        sgn = -1.0 if side == "right" else 1.0
        dome = self.dome_r if side == "right" else self.dome_l
        level = dome - S * u(0.0, 0.07)                     # fluid top at the medial end
        meniscus = S * u(0.06, 0.14)                        # climbs up the lateral wall
        tl = np.clip(sgn * (c.x - self.mid) * (1.0 / self.lung_w), 0.0, 1.2)
        top = level - meniscus * tl * tl * tl
        depth = _soft(c.y - top, S * 0.05)
        fluid = depth * np.minimum(self.lungs_c[side] * 1.3, 1.0)
        # Fluid fills the hemithorax base up to soft-tissue density; the dome disappears.
        box = c.bbox(fluid, 0.5)
        self.findings.append(Finding("Pleural Effusion", box, _centre(box),
                                     {"side": side, "level_y": round(level, 1),
                                      "meniscus_px": round(meniscus, 1)}))
        return (self.air_depth_c + 0.05) * fluid

    def _point_in_lung(self, avoid_c: np.ndarray) -> tuple[float, float, str]:
        """A random point well inside one lung (rejection sampling, deterministic)."""
        side = "right" if self.rng.random() < 0.5 else "left"
        mask = self.lungs_c[side]
        box = self.lung_box[side]
        for _ in range(200):
            px, py = self.u(box[0], box[2]), self.u(box[1], box[3])
            if self.c.at(mask, px, py) > 0.95 and self.c.at(avoid_c, px, py) < 0.05:
                return px, py, side
        ys, xs = np.nonzero(mask > 0.5)
        k = len(xs) // 2
        return float(xs[k] * 2 + 1), float(ys[k] * 2 + 1), side

    def _nodules(self, fine: np.ndarray, ptx_zone_c: np.ndarray) -> None:
        S, f, u = self.S, self.f, self.u
        nodules = []
        for _ in range(int(self.rng.integers(1, 4))):
            cx, cy, side = self._point_in_lung(ptx_zone_c)
            r = S * u(0.01, 0.032)
            ys, xs, q = f.disc(cx, cy, r)
            fine[ys, xs] += u(0.14, 0.22) * _bump(q)
            nodules.append({"center": [round(cx, 2), round(cy, 2)], "radius": round(r, 2),
                            "side": side})
        box = (int(min(n["center"][0] - n["radius"] for n in nodules)),
               int(min(n["center"][1] - n["radius"] for n in nodules)),
               int(max(n["center"][0] + n["radius"] for n in nodules)) + 1,
               int(max(n["center"][1] + n["radius"] for n in nodules)) + 1)
        c0 = nodules[0]["center"]
        self.findings.append(Finding("Lung Lesion", box, (c0[0], c0[1]), {"nodules": nodules}))

    def _consolidation(self, ptx_zone_c: np.ndarray) -> np.ndarray:
        S, c, u = self.S, self.c, self.u
        cx, cy, side = self._point_in_lung(ptx_zone_c)
        patch = c.zeros()
        for _ in range(int(self.rng.integers(6, 11))):
            ys, xs, q = c.disc(cx + S * u(-0.06, 0.06), cy + S * u(-0.05, 0.05), S * u(0.03, 0.06))
            np.maximum(patch[ys, xs], _bump(q) * u(0.7, 1.0), out=patch[ys, xs])
        k = -(-c.n // 8)
        fluff = _box_blur(self.rng.random((k, k)).astype(_F), 1)
        fluff = np.repeat(np.repeat(fluff, 8, axis=0), 8, axis=1)[:c.n, :c.n]
        lung = np.minimum(self.lungs_c[side] * 1.2, 1.0)
        patch = _box_blur(patch * (0.6 + 0.55 * fluff), 2) * lung
        bronchi = c.zeros()                                 # air bronchograms
        for _ in range(2):
            ddx, ddy = _unit(u(-1, 1), u(-1, 1))
            length = S * u(0.05, 0.08)
            p0 = (cx - ddx * length * 0.5, cy - ddy * length * 0.5)
            c.segment(bronchi, p0, (p0[0] + ddx * length, p0[1] + ddy * length), 2.5, 1.0)
        box = c.bbox(patch, 0.3)
        details = {"side": side}
        self.findings.append(Finding("Consolidation", box, (cx, cy), details))
        self.findings.append(Finding("Lung Opacity", box, (cx, cy), dict(details)))
        return u(0.20, 0.28) * patch - 0.06 * bronchi * (patch > 0.5)

    def _devices(self, fine: np.ndarray) -> None:
        S, f, rng = self.S, self.f, self.rng
        layer = f.zeros()
        kinds = ["ett", "cvc", "ngt", "ecg"]
        chosen = [kinds[int(rng.integers(0, 4))]]
        if rng.random() < 0.4:
            others = [k for k in kinds if k != chosen[0]]
            chosen.append(others[int(rng.integers(0, 3))])
        details = []
        for kind in chosen:
            pts = self._device_path(kind)
            if kind == "ecg":
                for p in pts[::6]:                          # electrodes: bright rings
                    ys, xs, q = f.disc(p[0], p[1], S * 0.013)
                    ring = np.clip(1.0 - np.abs(np.sqrt(q) - 0.8) * 5.0, 0.0, 1.0)
                    np.maximum(layer[ys, xs], ring, out=layer[ys, xs])
                for k in range(0, len(pts), 6):
                    f.polyline(layer, pts[k:k + 6], 1.0, 0.6)   # lead wires
            elif kind == "ett":                             # tube walls + radiopaque stripe
                for off in (-S * 0.009, S * 0.009):
                    f.polyline(layer, [(p[0] + off, p[1]) for p in pts], 1.0, 0.55)
                f.polyline(layer, pts, 1.3, 1.0)
            else:
                f.polyline(layer, pts, 1.4 if kind == "cvc" else 2.0, 1.0)
            details.append({"kind": kind, "bbox": list(_bbox_pts(pts, 3, S)),
                            "tip": [round(pts[-1][0], 1), round(pts[-1][1], 1)]})
        fine += 0.40 * layer
        box = (min(d["bbox"][0] for d in details), min(d["bbox"][1] for d in details),
               max(d["bbox"][2] for d in details), max(d["bbox"][3] for d in details))
        self.findings.append(Finding("Support Devices", box, _centre(box), {"devices": details}))

    def _device_path(self, kind: str) -> list[tuple[float, float]]:
        """Centre line of one support device (image coordinates)."""
        S, u, mid = self.S, self.u, self.mid
        if kind == "ett":                                   # down the trachea, tip above carina
            tip = S * u(0.20, 0.26)
            return _bezier((mid - S * 0.012, -4.0), (mid - S * 0.006, tip * 0.5),
                           (mid - S * 0.002, tip), 8)
        if kind == "cvc":                                   # right IJ/subclavian → SVC
            start = (mid - S * u(0.24, 0.32), S * u(0.10, 0.15))
            bend = (mid - S * u(0.03, 0.05), S * u(0.19, 0.23))
            tip = (mid - S * u(0.025, 0.04), S * u(0.36, 0.44))
            return _bezier(start, (bend[0] - S * 0.05, bend[1] - S * 0.01), bend, 10) + \
                _bezier(bend, (bend[0] + S * 0.004, (bend[1] + tip[1]) / 2), tip, 10)[1:]
        if kind == "ngt":                                   # oesophagus → stomach
            tip = (mid + S * u(0.10, 0.16), self.dome_l + S * u(0.05, 0.09))
            knee = (mid + S * 0.02, self.dome_l)
            return _bezier((mid + S * 0.006, -4.0), (mid + S * 0.012, S * 0.5), knee, 12) + \
                _bezier(knee, (mid + S * 0.05, tip[1] + S * 0.03), tip, 8)[1:]
        pts: list[tuple[float, float]] = []                 # ecg electrodes, each with a lead
        for _ in range(int(self.rng.integers(2, 4))):
            p = (mid + S * u(-0.36, 0.36), S * u(0.22, 0.75))
            end = (p[0] + S * u(-0.25, 0.25), p[1] + S * u(0.1, 0.3))
            pts.extend(_bezier(p, ((p[0] + end[0]) / 2 + S * 0.05, p[1]), end, 5))
        return pts

    # ---- acquisition and truth -------------------------------------------------------
    def _acquire(self, dens: np.ndarray) -> np.ndarray:
        """Detector blur, exposure jitter, mild film-like S-curve, noise, 8-bit."""
        u, S = self.u, self.S
        v = _box_blur(dens, 1) * u(0.94, 1.06) + u(-0.03, 0.03)
        v = 0.7 * v + 0.3 * _smoothstep(v)
        # Uniform noise with the configured standard deviation (sd of U(-½, ½) is 1/√12).
        noise = (self.rng.random((S, S), dtype=_F) - 0.5) * (self.config.noise * 3.4641 / 255.0)
        v = v + noise
        return np.clip(np.floor(v * 255.0 + 0.5), 0, 255).astype(np.uint8)

    def _labels(self) -> dict[str, float]:
        labels = {name: math.nan for name in CHEXPERT_LABELS}
        for name in PLANTED_LABELS:
            labels[name] = 0.0
        for fd in self.findings:
            labels[fd.label] = 1.0
        labels["No Finding"] = 0.0 if self.findings else 1.0
        return labels

    def _anatomy(self) -> dict[str, Any]:
        return {"heart_bbox": list(self.heart_box),
                "cardiothoracic_ratio": round(self.ctr, 3),
                "right_lung_bbox": list(self.lung_box["right"]),
                "left_lung_bbox": list(self.lung_box["left"]),
                "midline_x": round(self.mid, 1)}

# ---------------------------------------------------------------------------------------------
# Writing a set
# ---------------------------------------------------------------------------------------------

def write_phantoms(out_dir: str | os.PathLike[str], n: int, *, seed: int = 0,
                   config: PhantomConfig = PhantomConfig()
                   ) -> Generator[Progress, None, PhantomSetResult]:
    """Write ``n`` phantoms as PNGs with ``labels.csv`` and ``findings.json`` (a job).

    ``labels.csv`` is CheXpert-style: ``Path`` (relative to ``out_dir``) then the 14
    observations, ``1.0``/``0.0`` or blank. ``findings.json`` holds ``schema_version``, the
    seed, size and, per file, its findings (:meth:`Finding.to_json`) and anatomy. Both are
    written at the end, to temporary names then renamed, so an interrupted run never leaves a
    labels file naming images that were not written. Existing files of the same names are
    replaced; other files in ``out_dir`` are left alone.

    Images are drawn and saved on a small thread pool (PNG compression and the large numpy
    operations release the GIL); results are collected in index order, so the output does not
    depend on the number of threads.

    Parameters
    ----------
    out_dir
        Folder (created if missing).
    n
        Number of phantoms (≥ 1).
    seed
        Set seed; image ``i`` depends only on ``(seed, i)``.
    config
        Drawing parameters.

    Yields
    ------
    Progress
        After every image.

    Returns
    -------
    PhantomSetResult
    """
    from medsae_desktop.core.images import save_png  # atomic PNG writer

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows: list[list[str]] = []
    per_file: dict[str, Any] = {}
    positives = {name: 0 for name in PLANTED_LABELS}

    def make_and_save(i: int) -> Phantom:
        ph = make_phantom(i, seed, config)
        save_png(ph.image_hw, out / phantom_name(i))
        return ph

    workers = max(1, min(4, os.cpu_count() or 1))
    window = 2 * workers                                # bounded look-ahead: bounded memory
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="phantoms")
    try:
        pending: deque[Future[Phantom]] = deque()
        nxt = 0
        for i in range(n):
            while nxt < n and len(pending) < window:
                pending.append(pool.submit(make_and_save, nxt))
                nxt += 1
            ph = pending.popleft().result()
            name = phantom_name(i)
            rows.append([name] + [_fmt_label(ph.labels[c]) for c in CHEXPERT_LABELS])
            per_file[name] = {"findings": [f.to_json() for f in ph.findings],
                              "anatomy": ph.anatomy}
            for c in PLANTED_LABELS:
                positives[c] += int(ph.labels[c] == 1.0)
            elapsed = time.perf_counter() - t0
            yield Progress(i + 1, n, f"phantom {i + 1}/{n}",
                           {"images_per_s": (i + 1) / elapsed if elapsed > 0 else 0.0})
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    labels_csv = out / LABELS_FILE
    findings_json = out / FINDINGS_FILE
    _write_text_atomic(labels_csv, _csv_text(["Path", *CHEXPERT_LABELS], rows))
    doc = {"schema_version": FINDINGS_SCHEMA_VERSION, "generator": "medsae_desktop.phantoms",
           "seed": int(seed), "size": config.size, "n": n,
           "coordinates": "pixels; x right, y down; bbox [x0, y0, x1, y1] end-exclusive; "
                          "image left = patient right (PA)",
           "files": per_file}
    _write_text_atomic(findings_json, json.dumps(doc, indent=1))
    return PhantomSetResult(out_dir=out, n=n, labels_csv=labels_csv, findings_json=findings_json,
                            positives=positives, seconds=time.perf_counter() - t0)


def _fmt_label(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.1f}"


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
