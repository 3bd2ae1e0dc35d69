"""Exports of the viewer: the current view as PNG, and a one-page PDF summary of the study.

Both carry a provenance footer (app version, encoder and weights hash, SAE id, window, date)
and the research-use notice. Identifying header fields are never written. The overlay pixels
come from :mod:`medsae_desktop.core.inspection` (the same code as ``medsae inspect``).
"""

import os
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QMarginsF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPageLayout, QPageSize, QPainter, QPdfWriter, QPen

from medsae_desktop.core import inspection as ins
from medsae_desktop.ui.widgets.qt_colour_bar import LegendEntry, paint_legend

NOTICE = "RESEARCH USE ONLY — NOT FOR DIAGNOSIS"


def _qimage_rgb(rgb_hw3: np.ndarray) -> QImage:
    a = np.ascontiguousarray(rgb_hw3, dtype=np.uint8)
    h, w, _ = a.shape
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def provenance_lines(prov: dict[str, str], shown: list[str]) -> list[str]:
    """Footer text lines."""
    lines = [f"{NOTICE} · {prov.get('app', '')} · exported {prov.get('date', '')}"]
    if "encoder" in prov:
        lines.append(f"Encoder: {prov['encoder']} · weights {prov.get('weights', '?')}")
    if "sae" in prov:
        pop = f" · population {prov['population']}" if "population" in prov else ""
        lines.append(f"SAE: {prov['sae']}{pop}")
    lines.append(f"Study: {prov.get('study', '')} · window {prov.get('window', '')}"
                 + (f" · overlays: {', '.join(shown)}" if shown else " · no overlay"))
    if "demo" in prov:
        lines.append(prov["demo"])
    return lines


def render_view(state: dict[str, Any]) -> np.ndarray:
    """The exported image pixels (visible region, current window, overlays), uint8 (h, w, 3)."""
    gray = state["gray"]
    rgb = ins.composite(gray, ins.expand_overlay(state["overlay"], gray.shape))
    r = state.get("rect")
    if r is not None:
        r0, c0, r1, c1 = r
        rgb = rgb[r0:r1, c0:c1]
    return np.ascontiguousarray(rgb)


def export_view_png(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the current view with overlays, legend and provenance footer as PNG."""
    path = Path(path)
    rgb = render_view(state)
    h, w = rgb.shape[:2]
    legend: list[LegendEntry] = state.get("legend") or []
    shown = [e.name for e in legend]
    lines = provenance_lines(state["provenance"], shown)
    scale = max(1.0, w / 1100)
    line_h = int(16 * scale)
    legend_h = int((26 + 34 * len(legend)) * scale) if legend else 0
    footer_h = int(line_h * (len(lines) + 1))
    out_w = max(w, int(700 * scale))
    img = QImage(out_w, h + legend_h + footer_h, QImage.Format.Format_RGB32)
    img.fill(QColor("#101216"))
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
    p.drawImage((out_w - w) // 2, 0, _qimage_rgb(rgb))
    if legend:
        p.save()
        p.scale(scale, scale)
        paint_legend(p, QRectF(10, (h + 4) / scale, out_w / scale - 20, legend_h / scale - 8),
                     legend, state.get("opacity", ins.DEFAULT_OPACITY),
                     "Contribution map (SAE pre-activation per location)")
        p.restore()
    f = QFont()
    f.setPixelSize(max(11, int(12 * scale)))
    p.setFont(f)
    y = h + legend_h + line_h // 2
    for i, line in enumerate(lines):
        p.setPen(QPen(QColor("#f3c450" if i == 0 else "#c4cad4")))
        p.drawText(QRectF(10, y, out_w - 20, line_h), Qt.AlignmentFlag.AlignLeft
                   | Qt.AlignmentFlag.AlignVCenter, line)
        y += line_h
    p.end()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not img.save(str(path), "PNG"):
        from medsae_desktop.core.errors import MedsaeError

        raise MedsaeError("could not write the PNG", path)
    return path


def _thumb(gray: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    from PIL import Image

    h, w = gray.shape
    s = size / max(h, w)
    th, tw = max(1, round(h * s)), max(1, round(w * s))
    return np.asarray(Image.fromarray(gray).resize((tw, th), resample=Image.BILINEAR)), (th, tw)


def export_summary_pdf(viewer: Any, path: str | os.PathLike[str]) -> Path:
    """One A4 page: study with overlays, top-feature table, per-feature maps, provenance."""
    path = Path(path)
    state = viewer.export_state()
    writer = QPdfWriter(str(path))
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setPageMargins(QMarginsF(12, 12, 12, 12), QPageLayout.Unit.Millimeter)
    writer.setResolution(150)
    writer.setTitle("MedSAE Desktop study feature summary")
    writer.setCreator(state["provenance"].get("app", "medsae-desktop"))
    p = QPainter(writer)
    page = writer.pageLayout().paintRectPixels(writer.resolution())
    _paint_summary(p, page.width(), page.height(), viewer, state)
    p.end()
    return path


def summary_preview(viewer: Any, path: str | os.PathLike[str]) -> Path:
    """The PDF page painted into a PNG (A4 at 150 dpi, white), for previews and checks."""
    path = Path(path)
    w, h = 1240, 1754  # A4 at 150 dpi
    img = QImage(w, h, QImage.Format.Format_RGB32)
    img.fill(QColor("white"))
    p = QPainter(img)
    m = 71  # 12 mm
    p.translate(m, m)
    _paint_summary(p, w - 2 * m, h - 2 * m, viewer, viewer.export_state())
    p.end()
    img.save(str(path), "PNG")
    return path


def _paint_summary(p: QPainter, W: int, H: int, viewer: Any, state: dict[str, Any]) -> None:
    insp = viewer.inspection
    image = viewer.image
    hits = state["hits"]
    shown = [e.name for e in state["legend"]]
    dark, mid, accent = QColor("#1a1d22"), QColor("#5a6170"), QColor("#1f6f96")

    def text(x: float, y: float, w: float, h: float, s: str, size: float = 9,
             bold: bool = False, colour: QColor = dark,
             align: Qt.AlignmentFlag = Qt.AlignmentFlag.AlignLeft) -> None:
        f = QFont()
        f.setPointSizeF(size)
        f.setBold(bold)
        p.setFont(f)
        p.setPen(QPen(colour))
        p.drawText(QRectF(x, y, w, h), align | Qt.AlignmentFlag.AlignVCenter
                   | Qt.TextFlag.TextWordWrap, s)

    # header and notice
    text(0, 0, W, 40, "MedSAE Desktop — study feature summary", 15, True)
    p.fillRect(QRectF(0, 44, W, 30), QColor("#fff3cd"))
    p.setPen(QPen(QColor("#c99a1b")))
    p.drawRect(QRectF(0, 44, W, 30))
    text(8, 44, W - 16, 30, NOTICE + " — SAE features describe a model's internals, not "
         "clinical findings.", 9, True, QColor("#7a5a00"))
    y = 86
    # study image with current overlays
    img_w = W * 0.52
    rgb = render_view({**state, "rect": None})
    qimg = _qimage_rgb(rgb)
    ih = img_w * qimg.height() / qimg.width()
    ih = min(ih, H * 0.5)
    iw = ih * qimg.width() / qimg.height()
    p.drawImage(QRectF(0, y, iw, ih), qimg)
    text(0, y + ih + 2, iw, 22, f"{state['provenance'].get('study', '')} · window "
         f"{state['provenance'].get('window', '')} · overlays: {', '.join(shown) or 'none'}",
         7, colour=mid)
    # feature table
    tx = iw + 24
    tw = W - tx
    text(tx, y, tw, 24, "Top features", 11, True)
    cols = (("#", 0.07), ("Feature", 0.47), ("Status", 0.16), ("Act.", 0.13), ("Pctl.", 0.17))
    ry = y + 28
    x = tx
    for name, frac in cols:
        text(x, ry, tw * frac, 20, name, 8, True, mid)
        x += tw * frac
    ry += 22
    p.setPen(QPen(QColor("#c9ced6")))
    p.drawLine(int(tx), int(ry), int(tx + tw), int(ry))
    for rank, h in enumerate(hits[:15], 1):
        x = tx
        label = h.name if h.name == f"unnamed #{h.unit}" else f"{h.name}  (#{h.unit})"
        vals = (str(rank), label, h.status or "unnamed",
                f"{h.activation:.3g}", "—" if h.percentile is None else f"{h.percentile:.1f}%")
        for (name, frac), v in zip(cols, vals, strict=True):
            text(x, ry, tw * frac - 4, 22, v, 8)
            x += tw * frac
        ry += 22
    # per-feature maps of the top features
    y2 = y + ih + 34
    text(0, y2, W, 24, "Where the top features' evidence comes from (contribution maps)", 11,
         True)
    y2 += 28
    n_maps = min(4, len(hits))
    if insp is not None and n_maps:
        gray_small, (th, tw_) = _thumb(state["gray"], 360)
        mask = None
        if image.padding_mask_hw is not None:
            mask = _thumb(image.padding_mask_hw.astype(np.uint8) * 255, 360)[0] > 127
        lut = ins.colormap_lut(viewer.cmap.currentText())
        cell_w = (W - 12 * (n_maps - 1)) / n_maps
        cell_h = cell_w * th / tw_
        for i, h in enumerate(hits[:n_maps]):
            heat = ins.upsample_map(insp.map_77(h.unit), insp.image_hw, mask, out_hw=(th, tw_))
            lay = ins.overlay_layer(heat, lut, opacity=1.0)
            rgb_i = ins.composite(gray_small, ins.scale_alpha(lay.rgba_hw4,
                                                              state["opacity"]))
            cx = i * (cell_w + 12)
            p.drawImage(QRectF(cx, y2, cell_w, cell_h), _qimage_rgb(rgb_i))
            label = h.name if h.name == f"unnamed #{h.unit}" else f"{h.name} (#{h.unit})"
            text(cx, y2 + cell_h + 2, cell_w, 34, f"{label}\nact. {h.activation:.3g}"
                 f"  · map {lay.vmin:.3g}–{lay.vmax:.3g}", 7, colour=mid)
        y2 += cell_h + 42
    # provenance
    lines = provenance_lines(state["provenance"], shown)
    fy = H - 20 * len(lines) - 10
    p.setPen(QPen(QColor("#c9ced6")))
    p.drawLine(0, int(fy - 6), int(W), int(fy - 6))
    for i, line in enumerate(lines):
        text(0, fy + 20 * i, W, 20, line, 7, i == 0, accent if i == 0 else mid)
