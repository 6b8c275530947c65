"""Loads an `autodidact export` directory in HuggingFace transformers and compares its outputs
with autodidact's own on the same input.

    autodidact export runs/NAME --out /tmp/NAME-hf --parity-sample /tmp/NAME-sample.safetensors
    python scripts/reference/hf_export_check.py /tmp/NAME-hf /tmp/NAME-sample.safetensors

Needs torch, transformers and safetensors (CPU wheels from PyPI). Prints the largest absolute
difference between transformers' and autodidact's logits (or last hidden states for an
`--encoder-only` export) and whether the exported tokenizer, loaded by `AutoTokenizer`,
encodes the sample texts to the same ids. Exits 1 when the difference exceeds --tolerance
(default 1e-4) or the ids differ.
"""

import argparse
import json
import sys

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer, BertForMaskedLM, BertModel


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("sample")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()

    with safe_open(args.sample, "pt") as f:
        sample = {k: f.get_tensor(k) for k in f.keys()}
        texts = json.loads(f.metadata()["texts"])
    config = AutoConfig.from_pretrained(args.model_dir)
    encoder_only = config.architectures == ["BertModel"]
    cls = BertModel if encoder_only else BertForMaskedLM
    model = cls.from_pretrained(args.model_dir).eval()
    inputs = {k: sample[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    with torch.no_grad():
        out = model(**inputs)
    name = "last_hidden_state" if encoder_only else "logits"
    theirs, ours = getattr(out, name), sample[name]
    real = inputs["attention_mask"].bool()
    diff = (theirs - ours).abs()
    print(f"{cls.__name__} from {args.model_dir}: {name} {tuple(theirs.shape)}")
    print(f"max |transformers - autodidact| = {diff.max().item():.3e} (real tokens: {diff[real].max().item():.3e})")

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    same = True
    for i, (a, b) in enumerate(texts):
        ids = tok(a, b)["input_ids"] if b else tok(a)["input_ids"]
        n = int(inputs["attention_mask"][i].sum())
        if ids[:n] != inputs["input_ids"][i, :n].tolist():
            same = False
            print(f"tokenizer differs on {a!r}: transformers {ids}, autodidact {inputs['input_ids'][i, :n].tolist()}")
    print(f"tokenizer ({type(tok).__name__}) ids identical: {same}")
    sys.exit(0 if diff.max().item() <= args.tolerance and same else 1)


if __name__ == "__main__":
    main()
