#!/usr/bin/env bash
# What a GPU call of #39 (bench/gpu_session.sh) carries, made ready on this machine, and put back after:
#   bash bench/gpu_carry.sh DATA_DIR   # before the call: DATA_DIR is a prepare.py output (the corpus's, or
#                                      # make demo's data/demo/bin where it is not built: timings alike, losses not)
#   bash bench/gpu_carry.sh --undo     # after it (the stage weights back in git's index)
# The device gets this checkout's tracked and not-ignored files, 64 MiB at most, and the stage weights under
# models/corpus-stages are over 200 MB. So they leave git's index for the call (git rm --cached: the files stay where
# they are) and a .gitignore of their folder ignores them (the top .gitignore keeps that folder, and .git/info/exclude
# cannot override it). DATA_DIR is copied to .gpu/bin and symusic's wheels, which sample.py writes MIDI with and the
# device cannot fetch, to .whl; both are ignored through .git/info/exclude and named in the call's carry:
#   run(command='ONLY="1 3 7 8b" bash bench/gpu_session.sh .gpu/bin $OUT', carry=[".gpu", ".whl"], timeout_s=600)
# Commit nothing between the two: the index would drop the stage weights from the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
stages=models/corpus-stages
if [ "${1:-}" = --undo ]; then
  rm -f "$stages/.gitignore"
  git reset -q -- "$stages"
  if [ -n "$(git status --porcelain -- "$stages")" ]; then
    echo "$stages still differs from HEAD: see git status" >&2
    exit 1
  fi
  echo "$stages back in the index; .gpu and .whl stay (ignored) for another call"
  exit 0
fi
data=${1:?usage: bash bench/gpu_carry.sh DATA_DIR | --undo}
for f in train.bin val.bin meta.json; do
  [ -f "$data/$f" ] || { echo "$data has no $f: want a prepare.py output (train.bin, val.bin, meta.json)" >&2; exit 1; }
done
for p in /.gpu/ /.whl/; do
  grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude
done
mkdir -p .gpu/bin .whl
cp "$data"/train.bin "$data"/val.bin "$data"/meta.json .gpu/bin/
[ -f "$data/tokenizer.json" ] && cp "$data/tokenizer.json" .gpu/bin/
symusic=$(grep -i '^symusic==' requirements.txt)
if ! ls .whl/symusic-*.whl >/dev/null 2>&1; then
  platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
    -d .whl "$symusic" pySmartDL platformdirs ||
    echo "no wheels downloaded (no network?): the call runs, its sample.py steps fail to write MIDI" >&2
fi
git rm -r -q --cached "$stages"
echo '*' > "$stages/.gitignore"
travels=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -sb .gpu .whl | awk '{s += $1} END {print s}')
echo "travels: $((travels / 1048576)) MiB of the tree + $((carried / 1048576)) MiB carried (.gpu, .whl), 64 MiB at most"
echo "after the call: bash bench/gpu_carry.sh --undo"
