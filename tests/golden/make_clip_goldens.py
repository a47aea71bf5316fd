#!/usr/bin/env python3
"""Golden CLIP tokenizer ids and a tiny CLIP text model's output, for tests/generate_golden.rs.

Not run by CI (needs `pip install torch transformers safetensors`). Writes tests/golden/clip_tiny/
(vocab.json, merges.txt: a hand-made tiny byte-level BPE vocabulary), clip_tokens.json (ids from
transformers' CLIPTokenizer loaded from that folder, as diffusers loads tokenizer/) and clip_text.safetensors
(a width-16, 2-layer CLIPTextModel with weights from the reference fill rule of
shared/reference/README.md, run on the first prompt's ids).
"""
import json
import math
import os

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "clip_tiny")

MERGES = [
    "h e", "r e", "l l", "he ll", "hell o</w>", "re d</w>", "a r", "he ar", "hear t</w>",
    "c a", "ca t</w>", "i n", "in g</w>", "p u", "pu l", "pul s", "puls ing</w>", "' s</w>",
    "s t", "st i", "sti c", "stic k", "stick e", "sticke r</w>", "w a", "wa v",
]
PROMPTS = [
    "a red heart pulsing",
    "  A RED   Heart,\tpulsing!!  ",
    "the cat's sticker 2024 waving :)",
    "hello <|endoftext|> red",
    "héllo wörld — ça va?",
    "red " * 80,
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs], bs


def fnv1a32(name):
    h = 0x811C9DC5
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def fill(name, shape):
    numel = math.prod(shape)
    h = fnv1a32(name)
    u = torch.tensor([((j * 2654435761 + h) % 2**32) / 2**32 for j in range(numel)], dtype=torch.float64)
    if len(shape) >= 2:
        v = (u - 0.5) * 2 * math.sqrt(3 / (numel / shape[0]))
    elif "norm" in name and name.endswith(".weight"):
        v = 1 + (u - 0.5) * 0.2
    else:
        v = (u - 0.5) * 0.2
    return v.reshape(shape).to(torch.float32)


def main():
    os.makedirs(OUT, exist_ok=True)
    chars, _ = bytes_to_unicode()
    tokens = list(chars) + [c + "</w>" for c in chars] + ["".join(m.split()) for m in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    with open(os.path.join(OUT, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(OUT, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(MERGES) + "\n")
        # The way diffusers loads an SD folder's tokenizer/ (transformers 5: one tokenizers-backed class).
    tok = CLIPTokenizer.from_pretrained(OUT)
    cases = []
    for p in PROMPTS:
        ids = tok(p, padding="max_length", max_length=77, truncation=True).input_ids
        print(repr(p[:40]), ids[:14])
        cases.append({"prompt": p, "ids": ids})
    with open(os.path.join(HERE, "clip_tokens.json"), "w", encoding="utf-8") as f:
        json.dump({"vocab_size": len(vocab), "cases": cases}, f, ensure_ascii=False, indent=1)

    cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                         projection_dim=16)
    model = CLIPTextModel(cfg).eval()
    # transformers 5 names the tensors without the `text_model.` prefix that SD files (and the
    # Rust side) use; the fill rule hashes the file's names.
    sd = {k: fill(k if k.startswith("text_model.") else "text_model." + k, list(v.shape))
          for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    ids = torch.tensor([cases[0]["ids"]])
    with torch.no_grad():
        out = model(input_ids=ids).last_hidden_state
    save_file({"ids": ids.to(torch.int64), "hidden": out.contiguous()}, os.path.join(HERE, "clip_text.safetensors"))
    print("hidden", out.shape, float(out.abs().mean()), sorted(sd)[:3])


if __name__ == "__main__":
    main()
