"""MedGemma from a local folder: loading, the MedSAE prompts, batched generation, answer parsing.

Loading (``reference/models_and_dicom.md`` §2.2): ``AutoProcessor`` and
``AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)`` with
``HF_HUB_OFFLINE=1`` set first, so nothing is ever downloaded. On CUDA the model runs in bfloat16,
4-bit (bitsandbytes NF4, as the MedSAE code) when bitsandbytes is installed and ``quantize`` is
``auto`` or ``4bit``; on CPU in bfloat16 (~10 GB RAM for MedGemma-4B, about 2.5 tokens/s on two
cores: naming thousands of units on CPU takes days; a GPU takes hours).

Prompts. The wording of the official prompts (``assign_names_VLM.py``, ``naming_eval.py``) could
not be read offline; :data:`NAMING_PROMPT` and :data:`SCORING_PROMPT` are reconstructed from the
close paraphrase in ``reference/paper.md`` §7 (same system prompts, same instructions, same JSON
/ list answer formats, same examples). The report-aware prompt of the official code is never
used there (a bug overwrites it), so it is not reproduced.

Parsing survives what a language model does to JSON: code fences, text before and after,
single quotes, trailing commas, a missing key; when nothing parses the concept is
:data:`~medsae_desktop.core.naming.names.UNPARSED` and the raw text is kept.

transformers and torch are imported inside functions. No Qt, no printing.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.core.naming.names import UNPARSED

logger = logging.getLogger(__name__)

NAMING_SYSTEM_PROMPT = "You are an expert radiologist."
NAMING_PROMPT = (
    "You will receive a sequence of chest X-ray images that share a common concept. "
    "The concept can be medical (for example a condition or an abnormality, such as opacities "
    "in a specific region of the lungs, or the positioning of a medical device) or non-medical "
    "(for example artifacts, image quality, patient positioning or exposure). Some of the "
    "images may be unrelated to the concept: ignore them.\n"
    "First, summarise the concept in a short phrase of 5 to 10 words. Be as specific as "
    "possible; the summary does not need to fit every image. Be precise and creative.\n"
    "Then describe the concept in more detail.\n"
    'Answer only with JSON of the form {"concept": "<short summary>", '
    '"description": "<longer description>"}.\n'
    "The images follow."
)
SCORING_SYSTEM_PROMPT = "Act as a precise and analytical radiologist."
SCORING_PROMPT = (
    "You will receive a concept and its description, followed by {n} chest X-ray images. "
    'Examples of concepts: "Pulmonary edema and pleural effusions in a patient with a central '
    'line", "Technical Artifacts and/or Equipment-Related Anomalies".\n'
    "For each image, in order, answer 1 if the image shows the concept and 0 if it does not.\n"
    "Reply only with a Python list of length {n}, for example {example}.\n"
    "Concept: {concept}\n"
    "Description: {description}\n"
    "The images follow."
)
#: Official generation lengths (naming, scoring).
NAMING_MAX_NEW_TOKENS = 300
SCORING_MAX_NEW_TOKENS = 500
#: Image side sent to the model (the official code resizes to 224 × 224 first).
IMAGE_SIDE = 224


@dataclasses.dataclass(frozen=True)
class MedGemmaConfig:
    """How to load and run MedGemma."""

    model_dir: str
    """Local folder with ``config.json``, ``*.safetensors`` and tokenizer files."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: str = "auto"
    """``auto`` (bfloat16), ``bfloat16``, ``float16`` or ``float32``."""
    quantize: str = "auto"
    """``auto`` (4-bit on CUDA when bitsandbytes is installed), ``none`` or ``4bit``."""
    batch_size: int = 0
    """Conversations per ``generate`` call; 0 = 4 on CUDA, 1 on CPU."""


def check_model_dir(model_dir: str | os.PathLike[str]) -> Path:
    """Check a MedGemma folder has a config, weights and a tokenizer; returns it.

    Only file kinds are required (``config.json``, any ``*.safetensors``, ``tokenizer.json`` or
    ``tokenizer.model``): a real download and a re-saved folder differ in the rest.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise MedsaeError("MedGemma folder not found", d)
    missing = []
    if not (d / "config.json").is_file():
        missing.append("config.json")
    if not any(d.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    if not ((d / "tokenizer.json").is_file() or (d / "tokenizer.model").is_file()):
        missing.append("tokenizer.json or tokenizer.model")
    if missing:
        raise MedsaeError("not a MedGemma model folder (missing " + ", ".join(missing) + "); "
                          "download google/medgemma-4b-it after accepting its terms and pass "
                          "that folder", d)
    return d


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; others are checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MedsaeError(f"device {device!r} requested but torch sees no CUDA GPU")
    if device != "cpu" and not device.startswith("cuda"):
        raise MedsaeError(f"unknown device {device!r} (auto, cpu, cuda or cuda:N)")
    return device


class MedGemma:
    """A loaded MedGemma (model + processor) that answers batches of conversations.

    Build it with :func:`load_medgemma`.

    Attributes
    ----------
    device
        The torch device used.
    batch_size
        Conversations per ``generate`` call.
    description
        JSON-able description (folder, device, dtype, quantisation) for progress files.
    """

    def __init__(self, model: Any, processor: Any, device: str, batch_size: int,
                 description: dict[str, Any]) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.batch_size = batch_size
        self.description = description
        tok = getattr(processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # decoder-only batching: pad on the left
        params = inspect.signature(processor.apply_chat_template).parameters
        self._kwargs_style = "processor_kwargs" in params

    def generate(self, conversations: Sequence[list[dict[str, Any]]],
                 max_new_tokens: int) -> list[str]:
        """Greedy answers (text after the prompt) to each conversation, in order."""
        out: list[str] = []
        for i in range(0, len(conversations), max(1, self.batch_size)):
            out += self._generate_batch(list(conversations[i:i + max(1, self.batch_size)]),
                                        max_new_tokens)
        return out

    def _generate_batch(self, convs: list[list[dict[str, Any]]],
                        max_new_tokens: int) -> list[str]:
        import torch

        pad = {"processor_kwargs": {"padding": True}} if self._kwargs_style else {"padding": True}
        inputs = self.processor.apply_chat_template(
            convs, add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt", **pad)
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            gen = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = gen[:, inputs["input_ids"].shape[1]:]
        return [str(t) for t in self.processor.batch_decode(new_tokens,
                                                            skip_special_tokens=True)]


def load_medgemma(config: MedGemmaConfig) -> MedGemma:
    """Load MedGemma from a local folder, never from the network.

    Raises
    ------
    MedsaeError
        Not a model folder, transformers missing, a 4-bit request without CUDA/bitsandbytes,
        or a load failure (one line naming the folder).
    """
    model_dir = check_model_dir(config.model_dir)
    # Set before transformers/huggingface_hub read them; local_files_only covers the case where
    # they were imported earlier.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
    except ImportError as exc:
        raise MedsaeError(f"MedGemma needs torch and transformers>=4.50 ({exc}); install "
                          "medsae-desktop[torch]") from None
    device = resolve_device(config.device)
    dtype_name = "bfloat16" if config.dtype == "auto" else config.dtype
    if dtype_name not in ("bfloat16", "float16", "float32"):
        raise MedsaeError(f"unknown dtype {config.dtype!r}")
    dtype = getattr(torch, dtype_name)
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    cuda = device.startswith("cuda")
    if config.quantize == "4bit" and not (cuda and has_bnb):
        raise MedsaeError("4-bit quantisation needs a CUDA GPU and the bitsandbytes package")
    if config.quantize not in ("auto", "none", "4bit"):
        raise MedsaeError(f"unknown quantize setting {config.quantize!r} (auto, none or 4bit)")
    four_bit = config.quantize in ("auto", "4bit") and cuda and has_bnb
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype}
    if four_bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": device if ":" in device else f"{device}:0"}
    try:
        processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(model_dir, **kwargs)
    except TypeError:
        # transformers < 4.56 spells it torch_dtype
        kwargs["torch_dtype"] = kwargs.pop("dtype")
        processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(model_dir, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise MedsaeError(f"cannot load MedGemma ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:200]})", model_dir) from exc
    if not four_bit:
        model = model.to(device)
    model.eval()
    batch = config.batch_size if config.batch_size > 0 else (4 if cuda else 1)
    desc = {"model_dir": str(model_dir), "device": device, "dtype": dtype_name,
            "quantize": "4bit" if four_bit else "none",
            "model_class": type(model).__name__}
    logger.info("loaded MedGemma %s", desc)
    return MedGemma(model, processor, device, batch, desc)


# ---- conversations ----------------------------------------------------------------------------
def naming_conversation(images: Sequence[Any]) -> list[dict[str, Any]]:
    """The naming prompt followed by ``images`` (PIL images)."""
    return [
        {"role": "system", "content": [{"type": "text", "text": NAMING_SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "text", "text": NAMING_PROMPT}]
         + [{"type": "image", "image": im} for im in images]},
    ]


def scoring_conversation(concept: str, description: str,
                         images: Sequence[Any]) -> list[dict[str, Any]]:
    """The naming-evaluation prompt for one chunk of ``images``."""
    n = len(images)
    example = "[" + ", ".join("1" if i % 3 == 0 else "0" for i in range(n)) + "]"
    text = SCORING_PROMPT.format(n=n, example=example, concept=concept or "(none)",
                                 description=description or "(none)")
    return [
        {"role": "system", "content": [{"type": "text", "text": SCORING_SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "text", "text": text}]
         + [{"type": "image", "image": im} for im in images]},
    ]


def load_pil_images(paths: Sequence[str], images_root: str | os.PathLike[str],
                    side: int = IMAGE_SIDE) -> list[Any]:
    """Read images through the display pipeline (8-bit render) as RGB PIL images, side × side.

    Raises
    ------
    MedsaeError
        A missing or unreadable image (naming the file; pass ``--images-root``).
    """
    from PIL import Image

    from medsae_desktop.core.images import read_image
    from medsae_desktop.core.labels import resolve_csv_path

    root = Path(images_root)
    out = []
    for rel in paths:
        # Cache paths are relative to the embedded folder, or CheXpert-style CSV cells that
        # start with the data-set folder's name: resolve_csv_path accepts both.
        full = resolve_csv_path(root, rel)
        if not full.exists():
            raise MedsaeError(f"image not found (paths are looked up under {root}; pass "
                              "--images-root)", full)
        render_hw = read_image(full).render_hw
        im = Image.fromarray(np.ascontiguousarray(render_hw, np.uint8))  # 2-D uint8 -> "L"
        out.append(im.resize((side, side), Image.Resampling.BILINEAR).convert("RGB"))
    return out


# ---- parsing ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ParsedName:
    """A naming answer after parsing.

    Attributes
    ----------
    concept, description
        The fields (``concept`` = :data:`UNPARSED` when nothing could be read).
    ok
        A concept was found.
    raw
        The model's full answer.
    """

    concept: str
    description: str
    ok: bool
    raw: str


_FENCE = re.compile(r"```(?:json|python|JSON)?\s*(.*?)```", re.S)


def _candidates(text: str) -> list[str]:
    """Substrings that may hold the JSON object: fenced blocks, then balanced {...} spans."""
    out = [m.group(1) for m in _FENCE.finditer(text)]
    # An unclosed fence (generation cut off): take everything after it.
    if text.count("```") % 2 == 1:
        out.append(text.split("```", 1)[1].lstrip("json").lstrip())
    out.append(text)
    spans = []
    for src in out:
        depth, start = 0, -1
        for i, ch in enumerate(src):
            if ch == "{":
                if depth == 0:
                    start = i
                depth += 1
            elif ch == "}" and depth:
                depth -= 1
                if depth == 0:
                    spans.append(src[start:i + 1])
        if depth and start >= 0:
            spans.append(src[start:] + "}" * depth)  # truncated answer: close it
    return spans + out


def _as_mapping(s: str) -> dict[str, Any] | None:
    s = s.strip()
    for attempt in (s, re.sub(r",\s*([}\]])", r"\1", s)):
        try:
            obj = json.loads(attempt)
        except (json.JSONDecodeError, ValueError):
            try:
                obj = ast.literal_eval(attempt)  # single quotes, Python literals; no code runs
            except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                continue
        if isinstance(obj, dict):
            return {str(k).strip().lower(): v for k, v in obj.items()}
        if isinstance(obj, list) and obj and isinstance(obj[0], dict):
            return {str(k).strip().lower(): v for k, v in obj[0].items()}
    return None


def _field_regex(text: str, key: str) -> str | None:
    value = r"""(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^\n,}]+))"""
    m = re.search(rf"""["']?{key}s?["']?\s*[:=]\s*""" + value, text, re.I)
    if not m:
        return None
    val = next(g for g in m.groups() if g is not None)
    return val.strip().strip("\"'").strip() or None


def parse_name_answer(text: str) -> ParsedName:
    """Read ``{"concept": ..., "description": ...}`` from a model answer, tolerantly.

    Tries, in order: JSON / Python-literal objects in code fences or anywhere in the text
    (trailing commas removed, a truncated object closed), then ``concept: ...`` style fields.
    Keys are matched case-insensitively and ``concepts`` (the official CSV's spelling) counts.
    """
    raw = str(text)
    for cand in _candidates(raw):
        obj = _as_mapping(cand)
        if obj is None:
            continue
        concept = obj.get("concept", obj.get("concepts"))
        if isinstance(concept, (list, tuple)):
            concept = ", ".join(str(c) for c in concept)
        desc = obj.get("description", "")
        if isinstance(concept, str) and concept.strip():
            return ParsedName(_clean(concept), _clean(str(desc or "")), True, raw)
    concept = _field_regex(raw, "concept")
    if concept:
        return ParsedName(_clean(concept), _clean(_field_regex(raw, "description") or ""),
                          True, raw)
    return ParsedName(UNPARSED, "", False, raw)


def _clean(s: str) -> str:
    return " ".join(str(s).split()).strip()[:500]


def parse_binary_answer(text: str, n: int) -> tuple[list[int], bool]:
    """Read a list of ``n`` 0/1 answers; a malformed or wrong-length answer gives all zeros.

    Returns
    -------
    values, ok
        ``ok`` False means the all-zeros fallback of the official code was used.
    """
    raw = str(text)
    for m in re.finditer(r"\[([^\[\]]*)\]", raw):
        items = [x.strip().strip("'\"") for x in m.group(1).split(",") if x.strip()]
        vals = []
        for x in items:
            low = x.lower()
            if low in ("1", "1.0", "true", "yes"):
                vals.append(1)
            elif low in ("0", "0.0", "false", "no"):
                vals.append(0)
            else:
                vals = []
                break
        if len(vals) == n:
            return vals, True
    return [0] * n, False
