"""Write pitch- and velocity-shifted copies of every encoding: {piece}__p+2_v-10.txt.

python augment_all.py --input_dirs data/text --output_dir data/aug --num_processes 8

A pitch shift that would move any note out of pitch_range is skipped for that piece; velocities are clamped.
Existing outputs are kept, so a killed run resumes where it stopped.
"""
import argparse
import re
from collections import Counter
from functools import partial
from pathlib import Path

import config
from batch import atomic_write, find_files, parallel_map
from encoding_decoding import Spec, text_to_tokens, tokens_to_text

VARIANT = re.compile(r"^(?P<piece>.*)__p[+-]\d+_v[+-]\d+$")  # prepare.py reads the piece id back with this


def variant_name(pitch, velocity):
    return f"__p{pitch:+d}_v{velocity:+d}"


def shift(tokens, spec, pitch=0, velocity=0):
    """Tokens with every note moved `pitch` semitones and `velocity` louder (clamped); None if a note would leave
    the pitch range."""
    (p0, p1), (v0, v1) = spec.pitch_range, spec.velocity_range
    out = []
    for t in tokens:
        if t[0] == "n" and t[1:].isdigit():
            if not p0 <= (p := int(t[1:]) + pitch) <= p1:
                return None
            t = f"n{p}"
        elif t[0] == "v" and t[1:].isdigit():
            t = f"v{min(max(int(t[1:]) + velocity, v0), v1)}"
        out.append(t)
    return out


def augment_one(opts, job):
    """Write the missing variants of one file; return a Counter of what happened."""
    src, out_stem = job
    spec, tokens, counts = Spec.of(opts), None, Counter()
    for p in opts.aug_pitch_shifts:
        for v in opts.aug_velocity_shifts:
            if p == v == 0:
                continue
            dest = Path(f"{out_stem}{variant_name(p, v)}.txt")
            if dest.exists():
                counts["already there"] += 1
                continue
            tokens = tokens or text_to_tokens(Path(src).read_text())
            if (shifted := shift(tokens, spec, p, v)) is None:
                counts["pitch out of range"] += 1
                continue
            atomic_write(dest, tokens_to_text(shifted))
            counts["written"] += 1
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_dirs", nargs="+", required=True, help="folders of .txt encodings")
    parser.add_argument("--output_dir", default="data/aug")
    opts = config.cli(parser, ["sample_freq", "pitch_range", "velocity_range", "max_dur", "aug_pitch_shifts",
                               "aug_velocity_shifts", "num_processes", "file_timeout"], argv)
    jobs = [(str(p), str(Path(opts.output_dir) / p.relative_to(d).with_suffix("")))
            for d, p in find_files(opts.input_dirs, {".txt"}) if not VARIANT.match(p.stem)]
    total, failed = Counter(), []
    for (src, _), ok, result in parallel_map(partial(augment_one, opts), jobs, opts.num_processes,
                                             opts.file_timeout, desc="augment"):
        if ok:
            total += result
        else:
            failed.append((src, result))
    print(f"{len(jobs)} pieces -> {total['written']} variants written, {total['already there']} already there, "
          f"{total['pitch out of range']} skipped (pitch out of range), {len(failed)} pieces failed")
    for src, reason in failed:
        print(f"  failed {src}: {reason}")


if __name__ == "__main__":
    main()
