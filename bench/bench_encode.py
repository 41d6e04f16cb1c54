"""MIDI encoding speed on one core: files/s and notes/s over a folder of MIDI files.

python bench/bench_encode.py [DIR] [--streams]

DIR defaults to the MIDI files that ship inside music21. --streams also times music21's full stream translation
(converter.parse), the path the original implementation took, on the same files.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from batch import find_files  # noqa: E402
from encoding_decoding import Spec, notes_to_tokens  # noqa: E402
from midi_io import midi_to_notes  # noqa: E402


def ours(path, spec):
    notes, header, _ = midi_to_notes(path.read_bytes(), spec)
    notes_to_tokens(notes, spec, header)
    return len(notes)


def streams(path, spec):
    from music21 import converter
    score = converter.parse(path, forceSource=True, storePickle=False)
    return sum(len(el.pitches) for el in score.flatten().notes)


def timed(fn, files, spec):
    notes = failed = 0
    t0 = time.perf_counter()
    for p in files:
        try:
            notes += fn(p, spec)
        except Exception as e:  # counted and shown in the table: a benchmark reads bad files too
            failed += 1
            print(f"  {p.name}: {type(e).__name__}: {e}", file=sys.stderr)
    return time.perf_counter() - t0, notes, failed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", nargs="?", help="folder of .mid/.midi files (searched recursively)")
    parser.add_argument("--streams", action="store_true", help="also time music21's stream translation")
    args = parser.parse_args()
    if args.dir is None:
        import music21
        args.dir = Path(music21.__file__).parent
    files = [p for _, p in find_files([args.dir], {".mid", ".midi"})]
    spec = Spec()
    rows = [("low-level reader (ours)", *timed(ours, files, spec))]
    if args.streams:
        rows.append(("music21 streams (original)", *timed(streams, files, spec)))
    print(f"\n{len(files)} files from {args.dir}, one process")
    print(f"{'path':28} {'seconds':>8} {'files/s':>8} {'notes/s':>9} {'failed':>6}")
    for name, secs, notes, failed in rows:
        print(f"{name:28} {secs:8.2f} {len(files) / secs:8.1f} {notes / secs:9.0f} {failed:6}")


if __name__ == "__main__":
    main()
