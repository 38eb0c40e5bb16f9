#!/usr/bin/env bash
# Copy the current src/ to DEST and apply the given patches (default: all of bench/patches/*.diff),
# so that a patch can be measured without touching src/:
#   bench/patches/patched_tree.sh /tmp/star-patched
#   PYTHONPATH=/tmp/star-patched/src python bench/round_speed.py ...
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="${1:?usage: patched_tree.sh DEST [PATCH.diff ...]}"
shift
patches=("$@")
[ ${#patches[@]} -eq 0 ] && patches=("$root"/bench/patches/*.diff)
rm -rf "$dest" && mkdir -p "$dest"
cp -r "$root/src" "$dest/"
find "$dest" -name __pycache__ -prune -exec rm -rf {} +
for p in "${patches[@]}"; do
  patch -d "$dest" -p1 --forward --quiet < "$p" && echo "applied $(basename "$p")"
done
