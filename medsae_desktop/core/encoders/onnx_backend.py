"""onnxruntime backend of the encoder interface: runs an exported graph, no torch needed.

The graph and its :class:`EncoderInfo` come from :func:`~.export.export_onnx`. Execution
providers are the requested ones that ``onnxruntime.get_available_providers()`` offers (CUDA
first for ``device="cuda"``/``"auto"``), falling back to CPU in list order. Reuse one encoder:
creating a session costs a fraction of a second.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from medsae_desktop.core.encoders.base import EncodeResult, EncoderInfo, ImageEncoder
from medsae_desktop.core.encoders.export import (
    INPUT_NAME,
    META_ENCODER,
    META_SAE,
    OUTPUT_NAMES,
    SAE_OUTPUT_NAMES,
)
from medsae_desktop.core.errors import MedsaeError

logger = logging.getLogger(__name__)


def choose_providers(device: str = "cpu") -> list[Any]:
    """onnxruntime providers for a device string, filtered by what is installed.

    ``"cpu"`` -> CPU only; ``"cuda"``/``"cuda:N"`` -> CUDA (device N) then CPU, and an error
    if the CUDA provider is missing; ``"auto"`` -> CUDA when available, else CPU.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    device = str(device)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise MedsaeError(f"device {device!r} requested but this onnxruntime has no CUDA "
                              f"provider (available: {', '.join(available)})")
        dev_id = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"]
    raise MedsaeError(f"unknown device {device!r} for the onnx backend (cpu, cuda[:N], auto)")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an .onnx file (via onnxruntime; no onnx package needed)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return dict(sess.get_modelmeta().custom_metadata_map)


class OnnxEncoder(ImageEncoder):
    """Encoder running an exported ``.onnx`` graph with onnxruntime.

    Parameters
    ----------
    onnx_path
        File written by :func:`~.export.export_onnx` (``medsae export-onnx``).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (see :func:`choose_providers`).
    intra_op_num_threads
        onnxruntime CPU threads; 0 lets onnxruntime pick (one per physical core).

    Attributes
    ----------
    providers : list of str
        Providers the session actually uses (show them in the UI).
    sae_meta : dict or None
        The exported SAE's id/arch/sizes when the graph has SAE outputs.
    """

    def __init__(self, onnx_path: str | os.PathLike[str], device: str = "cpu",
                 intra_op_num_threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise MedsaeError("ONNX model not found", self.path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # no parallel branches
        opts.intra_op_num_threads = int(intra_op_num_threads)
        # Flush denormals to zero: values below 1.2e-38 cannot move an L2-normalised embedding,
        # but x86 computes with them up to 100x slower. Radiographs rarely produce them (no
        # change measured on renders), noise-like inputs do: batch-1 latency 118 -> 71 ms on
        # random-normal pixels on this AVX2 machine.
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        try:
            self.session: Any = ort.InferenceSession(str(self.path), opts,
                                                     providers=choose_providers(device))
        except MedsaeError:
            raise
        except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own exception types
            raise MedsaeError(f"cannot load ONNX model ({type(e).__name__}: {e})",
                              self.path) from e
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if META_ENCODER not in meta:
            raise MedsaeError("not a medsae export (no encoder metadata); create it with "
                              "`medsae export-onnx`", self.path)
        self.info = EncoderInfo.from_json(json.loads(meta[META_ENCODER])).replace(
            backend="onnx", precision="fp32")
        self.sae_meta: dict[str, Any] | None = (json.loads(meta[META_SAE])
                                                if META_SAE in meta else None)
        outputs = {o.name for o in self.session.get_outputs()}
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != [INPUT_NAME] or not set(OUTPUT_NAMES) <= outputs:
            raise MedsaeError(f"unexpected graph signature: inputs {inputs}, outputs "
                              f"{sorted(outputs)}", self.path)
        self.has_sae = set(SAE_OUTPUT_NAMES) <= outputs
        self.providers: list[str] = list(self.session.get_providers())
        logger.info("onnx encoder %s on %s", self.path.name, ", ".join(self.providers))

    def _encode(self, pixels_bchw: np.ndarray, patches: bool) -> EncodeResult:
        names = list(OUTPUT_NAMES) if patches else [OUTPUT_NAMES[0]]
        out = self._session().run(names, {INPUT_NAME: pixels_bchw})
        return EncodeResult(out[0], out[1] if patches else None)

    def run_all(self, pixels_bchw: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph output by name (``sae_codes``/``sae_patch_preacts`` included)."""
        pixels_bchw = np.ascontiguousarray(pixels_bchw, dtype=np.float32)
        names = [o.name for o in self._session().get_outputs()]
        return dict(zip(names, self._session().run(names, {INPUT_NAME: pixels_bchw})))

    def _session(self) -> Any:
        if self.session is None:
            raise RuntimeError("encoder is closed")
        return self.session

    def close(self) -> None:
        self.session = None
