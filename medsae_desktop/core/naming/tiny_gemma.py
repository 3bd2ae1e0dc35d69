"""A tiny, randomly initialised Gemma 3 (MedGemma architecture) folder, built offline.

For tests and self-checks of the MedGemma code path: the folder loads with the unmodified
``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)``,
renders a Gemma-3-style chat template with images and runs ``generate`` in well under a second
(about 124k parameters, ~0.5 MB). Its answers are random garbage by design, which is exactly what
the answer parsers must survive. Recipe: ``reference/tiny_gemma3_offline.md`` (verified there on
transformers 4.57 and 5.24).

Imports torch/transformers/tokenizers inside the function. No Qt, no printing.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

IMAGE_SIZE, PATCH, MM_TOKENS = 32, 8, 4  # 4x4 patches avg-pooled to 2x2 = 4 soft tokens/image

# Gemma-3-style chat template (system text folded into the first user turn, images ->
# <start_of_image>), as the real MedGemma template does.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set c = messages[0]['content'] -%}"
    "{%- set prefix = (c if c is string else c[0]['text']) + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for m in loop_messages -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') }}"
    "{%- if m['content'] is string -%}{{ m['content'] | trim }}"
    "{%- else -%}{%- for item in m['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
            "<start_of_image>", "<end_of_image>", "<image_soft_token>"]


def _build_tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    # Gemma-like: BPE with byte fallback, spaces as U+2581, a character vocabulary (no merges).
    pieces = SPECIALS + [f"<0x{i:02X}>" for i in range(256)] + ["\u2581", "\n"]
    pieces += [c for c in string.printable if c not in " \t\n\r\x0b\x0c"]
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", mask_token="<mask>", add_bos_token=True, padding_side="left",
        # Gemma3Processor reads tokenizer.boi_token / eoi_token / image_token (+ their *_id).
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
    )


def build_tiny_gemma3(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Save a tiny random Gemma 3 model + processor to ``out_dir``; returns the folder.

    Parameters
    ----------
    out_dir
        Destination folder (created).
    seed
        torch seed for the random weights.
    """
    import torch
    from transformers import (Gemma3Config, Gemma3ForConditionalGeneration,
                              Gemma3ImageProcessor, Gemma3Processor)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIALS}
    config = Gemma3Config(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
            query_pre_attn_scalar=32, max_position_embeddings=4096, sliding_window=64,
            layer_types=["sliding_attention", "full_attention"],
            pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"]),
        vision_config=dict(
            model_type="siglip_vision_model", image_size=IMAGE_SIZE, patch_size=PATCH,
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            vision_use_head=False),
        mm_tokens_per_image=MM_TOKENS, boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    # transformers zero-initialises the vision->text projection, which would make every image
    # embed to 0; randomise it so the pixels really reach the language model.
    torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.5)
    model.generation_config.eos_token_id = [ids["<eos>"], ids["<end_of_turn>"]]
    model.generation_config.pad_token_id = ids["<pad>"]
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, image_seq_length=MM_TOKENS)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
