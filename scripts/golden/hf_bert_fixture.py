"""Writes the HuggingFace BERT parity fixture used by the Rust tests.

A tiny random `BertForMaskedLM` saved by transformers' own `save_pretrained`, with a WordPiece
tokenizer, plus inputs (a padded batch of sentence pairs, some tokens masked) and what
transformers computes for them: last hidden states, MLM logits and the MLM loss.

    python -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch transformers safetensors
    /tmp/venv-torch/bin/python scripts/golden/hf_bert_fixture.py

Output (well under 1 MB): crates/autodidact-models/tests/fixtures/hf-bert-tiny/, and beside it
hf-bert-tiny-encoder/: the same encoder saved as a bare `BertModel` (with its pooler).
"""

import json
import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "autodidact-models", "tests", "fixtures", "hf-bert-tiny")

WORDS = (
    "the of and to in is was it he she that for on with as his her at by this be had not but "
    "from they you all were we one there an which said so what up out if when cat sat mat dog ran "
    "door night dark happy day time little into over"
).split()
VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()")
    + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    + ["##ed", "##ing", "##ly"]
    + WORDS
)
PAIRS = [
    ("The cat sat on the mat.", None),
    ("It was a dark night.", "She ran to the door!"),
    ("Hello, little dog", None),
]


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "vocab.txt"), "w") as f:
            f.write("\n".join(VOCAB) + "\n")
        tok = BertTokenizer.from_pretrained(tmp)
    # Non-default sizes and epsilon so that a transposed weight or an ignored config field
    # shows up as a mismatch.
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=40,
        type_vocab_size=2,
        layer_norm_eps=1e-3,
    )
    model = BertForMaskedLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(OUT)
    # The same encoder as a bare BertModel, as checkpoints without an MLM head ship; its
    # pooler is random (and unused by MLM).
    encoder = BertModel(config).eval()
    missing, unexpected = encoder.load_state_dict(model.bert.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("pooler.") for k in missing), (missing, unexpected)
    encoder.save_pretrained(OUT + "-encoder")
    tok.save_pretrained(OUT)
    with open(os.path.join(OUT, "vocab.txt"), "w") as f:
        f.write("\n".join(VOCAB) + "\n")

    # Right-padded batch of single sentences and one pair (token types 0 and 1).
    rows = [tok(a, b) if b else tok(a) for a, b in PAIRS]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        types[i, :n] = torch.tensor(r["token_type_ids"])
        mask[i, :n] = 1

    # MLM targets: every third real, non-special token; two of them become [MASK] in the input.
    labels = torch.full_like(ids, -100)
    special = set(tok.all_special_ids)
    picked = [(i, j) for i in range(ids.shape[0]) for j in range(width) if mask[i, j] and int(ids[i, j]) not in special][::3]
    for k, (i, j) in enumerate(picked):
        labels[i, j] = ids[i, j]
        if k % 2 == 0:
            ids[i, j] = tok.mask_token_id

    with torch.no_grad():
        out = model(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels, output_hidden_states=True)
    save_file(
        {
            "input_ids": ids.contiguous(),
            "token_type_ids": types.contiguous(),
            "attention_mask": mask.contiguous(),
            "labels": labels.contiguous(),
            "last_hidden_state": out.hidden_states[-1].contiguous(),
            "logits": out.logits.contiguous(),
            "loss": out.loss.reshape(1).contiguous(),
        },
        os.path.join(OUT, "expected.safetensors"),
    )
    # What the tokenizer makes of plain text (no special tokens), for the tokenizer import test.
    texts = ["The cat sat on the mat.", "Hello, little dog! 42 days", "Ünïcödé straße"]
    with open(os.path.join(OUT, "expected_tokens.json"), "w") as f:
        json.dump({"texts": texts, "ids": [tok(t, add_special_tokens=False)["input_ids"] for t in texts]}, f, indent=1)
    print("loss", out.loss.item(), "files", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
