"""Application state: the workspace (which models), the loaded models and feature names.

:class:`AppState` holds references to core objects and emits Qt signals when they change
("state flows down as calls and up as signals"). Loading models is a plain generator
(:func:`load_models_job`) that the :class:`~medsae_desktop.ui.tasks.TaskRunner` runs on a
worker thread; this module never does heavy work itself.
"""

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal

from medsae_desktop.core.annotations import AnnotationStore, FeatureName, display_name
from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.progress import Progress

logger = logging.getLogger(__name__)

EncoderFactory = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Workspace:
    """Which models and data the app works with (plain data; JSON-able).

    Attributes
    ----------
    encoder_key, weights_dir, backend, device
        Arguments of :func:`~medsae_desktop.core.encoders.make_encoder`.
    sae_dir
        SAE checkpoint folder.
    cache_path
        Embedding cache the SAE's population statistics and galleries come from.
    report_dir
        Evaluation report of the SAE on that cache (optional).
    images_root
        Folder the cache's relative paths start from (gallery thumbnails).
    names_csv
        A namer's ``NAMES.csv``; its names are proposed into the annotation store on load
        (never overwriting reviewed names).
    study_path
        Study opened when the workspace loads (the demo study).
    is_demo
        The built-in demonstration (untrained encoder weights): labelled as such in the UI.
    label
        One line describing the workspace.
    """

    encoder_key: str = "demo"
    weights_dir: str | None = None
    backend: str = "torch"
    device: str = "cpu"
    sae_dir: str | None = None
    cache_path: str | None = None
    report_dir: str | None = None
    images_root: str | None = None
    names_csv: str | None = None
    study_path: str | None = None
    is_demo: bool = False
    label: str = ""

    def to_json(self) -> str:
        """JSON text (QSettings value)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Workspace":
        """Inverse of :meth:`to_json` (unknown keys dropped)."""
        d = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes: Any) -> "Workspace":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class LoadedModels:
    """The models of a workspace, loaded (returned by :func:`load_models_job`)."""

    workspace: Workspace
    encoder: Any = None
    sae: Any = None
    population: Any = None
    report: Any = None
    notes: tuple[str, ...] = ()

    def close(self) -> None:
        """Release the encoder."""
        if self.encoder is not None:
            try:
                self.encoder.close()
            except Exception:  # releasing a model must never take the app down at exit
                logger.exception("closing the encoder failed")
            self.encoder = None


def load_models_job(
    ws: Workspace,
    store: AnnotationStore | None = None,
    encoder_factory: EncoderFactory | None = None,
) -> Generator[Progress, None, LoadedModels]:
    """Load the SAE, the encoder, population statistics, report and names of ``ws``.

    Runs on a worker thread. Optional parts (cache, report, names) that fail are reported as
    notes, not errors: the viewer still works without percentiles.
    """
    from medsae_desktop.core.sae import load_sae

    out = LoadedModels(workspace=ws)
    notes: list[str] = []
    total = 4
    try:
        if ws.sae_dir:
            yield Progress(0, total, "loading SAE")
            out.sae = load_sae(ws.sae_dir)
        yield Progress(1, total, f"loading encoder {ws.encoder_key} ({ws.backend}, {ws.device})")
        if encoder_factory is None:
            from medsae_desktop.core.encoders import make_encoder

            encoder_factory = make_encoder
        out.encoder = encoder_factory(ws.encoder_key, weights_dir=ws.weights_dir,
                                      backend=ws.backend, device=ws.device)
        if out.sae is not None and out.sae.d_in != out.encoder.info.d_out:
            raise MedsaeError(f"the SAE expects {out.sae.d_in}-d embeddings but encoder "
                              f"{ws.encoder_key} gives {out.encoder.info.d_out}-d", ws.sae_dir)
        if out.sae is not None and ws.cache_path:
            from medsae_desktop.core.inspection import population_job

            yield Progress(2, total, "population statistics")
            try:
                out.population = yield from population_job(ws.cache_path, out.sae)
            except MedsaeError as exc:
                notes.append(f"no population percentiles: {exc}")
        if ws.report_dir and Path(ws.report_dir, "summary.json").is_file():
            from medsae_desktop.core.eval.report import load_report

            try:
                out.report = load_report(ws.report_dir)
            except MedsaeError as exc:
                notes.append(f"evaluation report not loaded: {exc}")
        if store is not None and out.sae is not None and ws.names_csv \
                and Path(ws.names_csv).is_file():
            yield Progress(3, total, "feature names")
            import csv

            with open(ws.names_csv, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if (r.get("concept") or "").strip()]
            store.propose_many(out.sae.sae_id, rows)
        yield Progress(total, total, "models ready")
    except BaseException:
        out.close()
        raise
    out.notes = tuple(notes)
    return out


class AppState(QObject):
    """What the app currently works with, with change signals.

    Signals
    -------
    models_changed()
        New models loaded (or unloaded).
    model_state_changed(str)
        ``"none"``, ``"loading"``, ``"ready"`` or ``"error"``.
    names_changed(object)
        Names changed: a list of units, or None for "all".
    workspace_changed()
        The workspace description changed.
    """

    models_changed = Signal()
    model_state_changed = Signal(str)
    names_changed = Signal(object)
    workspace_changed = Signal()

    def __init__(self, settings: QSettings, store_path: str | os.PathLike[str] | None = None,
                 encoder_factory: EncoderFactory | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.encoder_factory = encoder_factory
        if store_path is None:
            import platformdirs

            store_path = Path(platformdirs.user_data_dir("medsae-desktop")) / "annotations.sqlite"
        author = str(settings.value("author", "") or "") or None
        self.store = AnnotationStore(store_path, author=author)
        self.workspace: Workspace | None = None
        self.models: LoadedModels | None = None
        self.model_state = "none"
        self.model_error = ""
        self._names: dict[int, FeatureName] | None = None

    # ---- models ---------------------------------------------------------------------------
    @property
    def sae(self) -> Any:
        """The loaded SAE, or None."""
        return None if self.models is None else self.models.sae

    @property
    def encoder(self) -> Any:
        """The loaded encoder, or None."""
        return None if self.models is None else self.models.encoder

    @property
    def population(self) -> Any:
        """Population statistics of the SAE over the workspace cache, or None."""
        return None if self.models is None else self.models.population

    @property
    def report(self) -> Any:
        """The evaluation report, or None."""
        return None if self.models is None else self.models.report

    @property
    def is_ready(self) -> bool:
        """Encoder and SAE are loaded."""
        return self.model_state == "ready" and self.sae is not None and self.encoder is not None

    def set_workspace(self, ws: Workspace) -> None:
        """Record a new workspace (models are loaded separately)."""
        self.workspace = ws
        self.workspace_changed.emit()

    def set_model_state(self, state: str, error: str = "") -> None:
        """Change the loading state (emits ``model_state_changed``)."""
        self.model_state = state
        self.model_error = error
        self.model_state_changed.emit(state)

    def set_models(self, models: LoadedModels | None) -> None:
        """Install loaded models (closing the previous encoder)."""
        if self.models is not None and self.models is not models:
            self.models.close()
        self.models = models
        self._names = None
        self.set_model_state("ready" if models is not None else "none")
        self.models_changed.emit()

    def set_population(self, population: Any) -> None:
        """Replace the population statistics (e.g. after choosing another cache)."""
        if self.models is not None:
            self.models.population = population
            self.models_changed.emit()

    # ---- names ----------------------------------------------------------------------------
    def names(self) -> dict[int, FeatureName]:
        """Current names of the loaded SAE (cached; refreshed by :meth:`notify_names`)."""
        if self.sae is None:
            return {}
        if self._names is None:
            self._names = self.store.names(self.sae.sae_id)
        return self._names

    def display_name(self, unit: int) -> str:
        """Annotated name, else proposed name, else ``unnamed #k``."""
        return display_name(self.names().get(int(unit)), int(unit))

    def notify_names(self, units: list[int] | None = None) -> None:
        """Call after writing names to the store: refreshes the cache and tells the views."""
        self._names = None
        self.names_changed.emit(units)

    def close(self) -> None:
        """Release models and the store."""
        if self.models is not None:
            self.models.close()
        self.store.close()
