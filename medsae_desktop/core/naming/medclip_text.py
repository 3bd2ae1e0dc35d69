"""MedCLIP's text tower, re-implemented offline (``reference/models_and_dicom.md`` §1.2).

MedCLIP's ``MedCLIPTextModel`` is Bio_ClinicalBERT (BERT-base, cased vocabulary of 28,996
word pieces) followed by ``projection_head = Linear(768, 512, bias=False)``. Its pooling rule:
take hidden states 1, 2 and the last, average each over **all** sequence positions (no attention
mask, so padding would count), average the three, project; ``encode_text`` then L2-normalises.
We encode each text on its own, unpadded, so the mean is over real tokens only, as MedCLIP gives
for a single prompt.

Weights come from the same official checkpoint as the image tower (``pytorch_model.bin`` read
with ``torch.load(weights_only=True)``, or a re-saved ``model.safetensors``): the keys
``text_model.model.*`` and ``text_model.projection_head.weight``. The tokenizer is rebuilt from
the user's Bio_ClinicalBERT ``vocab.txt`` with the ``tokenizers`` library (BERT normaliser and
pre-tokenizer, WordPiece, ``[CLS] … [SEP]``, at most 77 tokens as MedCLIP's
``model_max_length``). Lower-casing is on by default: the Bio_ClinicalBERT model folder ships no
tokenizer config, so ``AutoTokenizer`` — what MedCLIP called — falls back to BERT's default
``do_lower_case=True`` (not verified against the hub files here; switch it with ``lowercase``).

Imports torch and transformers lazily (inside functions). No Qt, no printing, no network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsae_desktop.core.errors import MedsaeError

if TYPE_CHECKING:
    import torch

MAX_TOKENS = 77
_DROPPED_SUFFIXES = ("position_ids", "token_type_ids")


def read_bert_vocab(vocab_path: str | os.PathLike[str]) -> dict[str, int]:
    """A BERT ``vocab.txt`` (one word piece per line) as ``{piece: id}``."""
    p = Path(vocab_path)
    if not p.is_file():
        raise MedsaeError("tokenizer vocab.txt not found (the Bio_ClinicalBERT vocabulary is "
                          "needed for MedCLIP text embeddings)", p)
    try:
        lines = p.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise MedsaeError(f"cannot read vocab.txt ({exc})", p) from exc
    if lines and lines[-1] == "":
        lines = lines[:-1]
    vocab: dict[str, int] = {}
    for i, tok in enumerate(lines):
        vocab.setdefault(tok.rstrip("\r"), i)
    for special in ("[UNK]", "[CLS]", "[SEP]"):
        if special not in vocab:
            raise MedsaeError(f"vocab.txt lacks the {special} token (not a BERT vocabulary?)", p)
    return vocab


def make_tokenizer(vocab: Mapping[str, int], *, lowercase: bool = True,
                   max_tokens: int = MAX_TOKENS) -> Any:
    """A fast BERT WordPiece tokenizer (``tokenizers.Tokenizer``) for ``vocab``."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    tok = Tokenizer(WordPiece(dict(vocab), unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.enable_truncation(max_length=max_tokens)
    return tok


def text_state_dict(sd: Mapping[str, Any]) -> dict[str, Any]:
    """The text tower's tensors of a MedCLIP checkpoint, named as :class:`MedClipTextTower`'s."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("text_model.") for k in sd):
        sd = {k.removeprefix("text_model."): v for k, v in sd.items()
              if k.startswith("text_model.")}
    return {k: v for k, v in sd.items() if not k.endswith(_DROPPED_SUFFIXES)}


def bert_config_from_state_dict(sd: Mapping[str, Any], n_heads: int | None = None) -> Any:
    """A ``BertConfig`` whose shapes match the checkpoint (BERT-base for MedCLIP)."""
    from transformers import BertConfig

    try:
        vocab_size, hidden = tuple(sd["model.embeddings.word_embeddings.weight"].shape)
        max_pos = int(sd["model.embeddings.position_embeddings.weight"].shape[0])
        type_vocab = int(sd["model.embeddings.token_type_embeddings.weight"].shape[0])
        inter = int(sd["model.encoder.layer.0.intermediate.dense.weight"].shape[0])
    except KeyError as exc:
        raise MedsaeError(f"checkpoint has no MedCLIP text tower (missing {exc.args[0]})") \
            from None
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"model\.encoder\.layer\.(\d+)\.", k))}
    heads = n_heads if n_heads is not None else max(1, hidden // 64)  # BERT-base: 768/64 = 12
    return BertConfig(vocab_size=int(vocab_size), hidden_size=int(hidden),
                      num_hidden_layers=max(layers) + 1, num_attention_heads=heads,
                      intermediate_size=inter, max_position_embeddings=max_pos,
                      type_vocab_size=type_vocab)


def _make_module(config: Any, proj_dim: int, with_pooler: bool) -> Any:
    import torch
    from transformers import BertModel

    class MedClipTextTower(torch.nn.Module):
        """BERT + bias-free projection with MedCLIP's pooling (see module docstring)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = BertModel(config, add_pooling_layer=with_pooler)
            self.projection_head = torch.nn.Linear(config.hidden_size, proj_dim, bias=False)

        def forward(self, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             output_hidden_states=True)
            hs = out.hidden_states
            # (3, b, seq, h) -> mean over seq (all positions, as MedCLIP) -> mean over layers
            stacked = torch.stack([hs[1], hs[2], hs[-1]])
            embed = stacked.permute(1, 0, 2, 3).mean(2).mean(1)
            return self.projection_head(embed)

    return MedClipTextTower()


class MedClipTextEncoder:
    """Encode texts to MedCLIP's 512-d, L2-normalised text embeddings.

    Build with :func:`load_medclip_text`.
    """

    def __init__(self, module: Any, tokenizer: Any, device: str = "cpu") -> None:
        self.module = module.eval().to(device)
        self.tokenizer = tokenizer
        self.device = device

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, 512) unit-norm embeddings, one text at a time (no padding)."""
        import torch

        out = []
        with torch.inference_mode():
            for t in texts:
                ids = self.tokenizer.encode(str(t)).ids
                x = torch.tensor([ids], dtype=torch.long, device=self.device)
                e = self.module(x, torch.ones_like(x))[0].float()
                out.append((e / e.norm().clamp_min(1e-12)).cpu().numpy())
        dim = int(self.module.projection_head.out_features)
        return np.asarray(out, np.float32).reshape(len(out), dim)


def load_medclip_text(weights: str | os.PathLike[str], vocab_path: str | os.PathLike[str],
                      *, lowercase: bool = True, device: str = "cpu",
                      n_heads: int | None = None) -> MedClipTextEncoder:
    """Load the MedCLIP text tower from a checkpoint plus a Bio_ClinicalBERT ``vocab.txt``.

    Parameters
    ----------
    weights
        The MedCLIP weights folder (``model.safetensors`` or ``pytorch_model.bin``) or file.
    vocab_path
        Bio_ClinicalBERT ``vocab.txt``.
    lowercase
        Lower-case before WordPiece (see module docstring).
    device
        torch device.
    n_heads
        Attention heads (default hidden/64, i.e. 12 for BERT-base).

    Raises
    ------
    MedsaeError
        Missing files, a checkpoint without text tower, shapes that do not fit, a vocabulary
        whose size differs from the embedding table.
    """
    from medsae_desktop.core.encoders.checkpoint import find_weights_file, read_state_dict

    path = find_weights_file(weights)
    sd = text_state_dict(read_state_dict(path))
    if "projection_head.weight" not in sd:
        raise MedsaeError("checkpoint has no text_model.projection_head.weight (not a MedCLIP "
                          "checkpoint with its text tower?)", path)
    try:
        config = bert_config_from_state_dict(sd, n_heads)
    except MedsaeError as exc:
        raise MedsaeError(str(exc), path) from None
    vocab = read_bert_vocab(vocab_path)
    if len(vocab) > config.vocab_size:
        raise MedsaeError(f"vocab.txt has {len(vocab)} pieces but the checkpoint's embedding "
                          f"table has {config.vocab_size} (wrong vocab.txt?)", vocab_path)
    proj_dim = int(sd["projection_head.weight"].shape[0])
    module = _make_module(config, proj_dim, with_pooler="model.pooler.dense.weight" in sd)
    own = module.state_dict()
    own_keys = {k for k in own if not k.endswith(_DROPPED_SUFFIXES)}
    missing = sorted(own_keys - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [k for k in own_keys & set(sd) if tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        what = "; ".join(x for x in (
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            f"shape mismatch {wrong[:3]}" if wrong else "") if x)
        raise MedsaeError(f"checkpoint does not fit the MedCLIP text tower: {what}", path)
    module.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    return MedClipTextEncoder(module, make_tokenizer(vocab, lowercase=lowercase), device)
