"""MIDI reading speed on one core: files/s and notes/s over a folder of MIDI files, read to canonical notes, and
read and tokenized.

python bench/bench_encode.py [DIR] [--before REV] [--streams]
python bench/bench_encode.py DIR --write_set TEXT_DIR [--per_folder 30]

DIR defaults to the MIDI files that ship inside music21. --before REV also times the reader of the git revision
REV (its midi_io.py and encoding_decoding.py, in a process of their own) on the same files, and counts the files
whose encodings differ. --streams also times music21's full stream translation (converter.parse), the path the
original implementation took. --write_set fills DIR with a test set: up to --per_folder encodings of each folder
under TEXT_DIR (seeded), written out as MIDI by our writer (from the encoded corpus: chorales, quartets, piano
pieces, madrigals, folk tunes).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # (the --before process finds the older modules first)
    sys.path.insert(1, str(ROOT))
from batch import find_files  # noqa: E402
from encoding_decoding import Spec, notes_to_tokens, tokens_to_text  # noqa: E402
from midi_io import midi_to_notes, text_to_midi  # noqa: E402


def measure(files, spec):
    """(seconds reading, seconds tokenizing, notes, {file name: encoding or the error}) over the files."""
    read = tokenize = notes = 0
    out = {}
    for p in files:
        data = p.read_bytes()
        try:
            t0 = time.perf_counter()
            got, header, _ = midi_to_notes(data, spec)
            t1 = time.perf_counter()
            tokens = notes_to_tokens(got, spec, header)
            t2 = time.perf_counter()
        except Exception as e:  # counted and shown in the table: a benchmark reads bad files too
            out[str(p)] = f"{type(e).__name__}: {e}"
            continue
        read, tokenize, notes = read + t1 - t0, tokenize + t2 - t1, notes + len(got)
        out[str(p)] = tokens_to_text(tokens)
    return read, tokenize, notes, out


def before(rev, files):
    """measure() with the reader of git revision `rev`, run in a process of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("midi_io.py", "encoding_decoding.py"):
            code = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{name}"], capture_output=True, text=True,
                                  check=True).stdout
            Path(tmp, name).write_text(code)
        Path(tmp, "files.json").write_text(json.dumps([str(p) for p in files]))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, str(ROOT)])}
        subprocess.run([sys.executable, __file__, "--_measure", str(Path(tmp, "files.json"))], env=env, check=True)
        return json.loads(Path(tmp, "files.json").read_text())


def streams(files):
    from music21 import converter
    t0, notes = time.perf_counter(), 0
    for p in files:
        try:
            score = converter.parse(p, forceSource=True, storePickle=False)
            notes += sum(len(el.pitches) for el in score.flatten().notes)
        except Exception as e:
            print(f"  {p.name}: {type(e).__name__}: {e}", file=sys.stderr)
    return time.perf_counter() - t0, notes


def write_set(out, text_dir, per_folder, spec):
    out.mkdir(parents=True, exist_ok=True)
    rng, n = random.Random(0), 0
    for folder in sorted({p.parent for _, p in find_files([text_dir], {".txt"})}):
        texts = sorted(folder.glob("*.txt"))
        for p in texts if len(texts) <= per_folder else rng.sample(texts, per_folder):
            (out / f"{folder.name}_{p.stem}.mid").write_bytes(text_to_midi(p.read_text(), spec)[0])
            n += 1
    print(f"{n} MIDI files written to {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", nargs="?", help="folder of .mid/.midi files (searched recursively)")
    parser.add_argument("--before", metavar="REV", help="also time the reader of this git revision")
    parser.add_argument("--streams", action="store_true", help="also time music21's stream translation")
    parser.add_argument("--write_set", metavar="TEXT_DIR", help="write a set of MIDI files into DIR from encodings")
    parser.add_argument("--per_folder", type=int, default=30)
    parser.add_argument("--_measure", help=argparse.SUPPRESS)  # the --before process: a JSON list of files, rewritten
    args = parser.parse_args()
    spec = Spec()
    if args._measure:
        files = [Path(p) for p in json.loads(Path(args._measure).read_text())]
        Path(args._measure).write_text(json.dumps(measure(files, spec)))
        return
    if args.write_set:
        return write_set(Path(args.dir), args.write_set, args.per_folder, spec)
    if args.dir is None:
        import music21
        args.dir = Path(music21.__file__).parent
    files = [p for _, p in find_files([args.dir], {".mid", ".midi"})]
    rows = [("symusic (now)", *measure(files, spec))]
    if args.before:
        rows.append((f"the reader of {args.before}", *before(args.before, files)))
        differ = [Path(f).name for f, text in rows[0][4].items() if rows[1][4].get(f) != text]
    print(f"\n{len(files)} files from {args.dir}, one process")
    print(f"{'reader':28} {'read s':>7} {'notes/s':>10} {'+ tokens s':>10} {'files/s':>8} {'notes/s':>9} {'failed':>6}")
    for name, read, tokenize, notes, out in rows:
        failed = sum(not text.startswith("START") for text in out.values())
        print(f"{name:28} {read:7.2f} {notes / read:10,.0f} {tokenize:10.2f} {len(files) / (read + tokenize):8.1f} "
              f"{notes / (read + tokenize):9,.0f} {failed:6}")
    if args.before:
        print(f"encodings that differ: {len(differ)}" + (f" ({', '.join(differ[:10])})" if differ else ""))
    if args.streams:
        secs, notes = streams(files)
        print(f"{'music21 streams (original)':28} {secs:7.2f} {notes / secs:10,.0f}")


if __name__ == "__main__":
    main()
