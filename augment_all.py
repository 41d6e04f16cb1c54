"""Write pitch-, velocity- and tempo-shifted copies of every encoding: {piece}__p+2_v-10_t+1.txt.

python augment_all.py --input_dirs data/text --output_dir data/aug --num_processes 8

A pitch shift that would move any note out of pitch_range is skipped for that piece (drum parts are never shifted:
their pitches name drums); velocities are clamped; a tempo shift moves the header's tempo token by whole buckets
(clamped to the range). --aug_variants N writes N of the
combinations per piece, a choice fixed by the piece's name (skipped ones are replaced by the next in its order).
Existing outputs are kept, so a killed run resumes where it stopped.
"""
import argparse
import hashlib
import itertools
import random
from collections import Counter
from functools import partial
from pathlib import Path

import batch
import configurator
from batch import atomic_write, die, find_files, parallel_map, read_text, within, writable_dir
from dataset import VARIANT, variant_name
from encoding_decoding import FirstEdition, Spec, check_edition, shifter, text_to_tokens, tokens_to_text, validate


def variants(opts, name):
    """The (pitch, velocity, tempo) shifts to try for the piece `name`: every combination but the identity, or with
    aug_variants set, all of them in an order seeded by the name (the caller stops after aug_variants written)."""
    combos = [c for c in itertools.product(opts.aug_pitch_shifts, opts.aug_velocity_shifts, opts.aug_tempo_shifts)
              if any(c)]
    if opts.aug_variants:
        random.Random(hashlib.sha256(name.encode()).digest()).shuffle(combos)
    return combos


def readable(src, spec):
    """The tokens of an encoding, or ValueError saying why it is not one that the grammar reads (then it fails here,
    not two steps later in prepare.py)."""
    if not (tokens := text_to_tokens(read_text(src))):
        raise ValueError("empty encoding: nothing to augment")
    check_edition(tokens, src)
    if why := validate(tokens, spec.with_styles_of(tokens)):
        raise ValueError(f"not an encoding of this grammar (token {why[0]}: {why[1]}); encode it again")
    return tokens


def augment_one(opts, job):
    """Write the missing variants of one file; return a Counter of what happened."""
    src, out_stem = job
    spec, tokens, counts, kept = Spec.of(opts), None, Counter(), 0
    for p, v, t in variants(opts, Path(out_stem).name):
        if opts.aug_variants and kept == opts.aug_variants:
            break
        dest = Path(f"{out_stem}{variant_name(p, v, t)}.txt")
        if dest.exists():
            counts["already there"], kept = counts["already there"] + 1, kept + 1
            continue
        if tokens is None:
            tokens = shifter(readable(src, spec), spec)
        if (shifted := tokens(p, v, t)) is None:
            counts["pitch out of range"] += 1
            continue
        atomic_write(dest, tokens_to_text(shifted))
        counts["written"], kept = counts["written"] + 1, kept + 1
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_dirs", nargs="+", required=True, help="folders of .txt encodings")
    configurator.option(parser, "output_dir", "the folder of the variants", key="aug_dir")
    opts = configurator.cli(parser, ["sample_freq", "pitch_range", "velocity_range", "max_dur", "tempo_range",
                                     "tempo_buckets", "meters", "max_parts", "max_countdown", "aug_pitch_shifts",
                                     "aug_velocity_shifts", "aug_tempo_shifts",
                                     "aug_variants", "num_processes", "file_timeout"], argv)
    try:
        Spec.of(opts)  # its ranges make a vocabulary, checked before any file is read
    except ValueError as e:
        die(e)
    for d in opts.input_dirs:  # (prepare.py would read each variant there as a piece of its own, in val.bin too)
        if within(opts.output_dir, d):
            where = "is" if within(d, opts.output_dir) else "is inside"
            die(f"--output_dir {opts.output_dir} {where} the input folder {d}: the variants would mix with the "
                f"originals; give a folder beside it, e.g. {Path(d).parent / 'aug'}")
    writable_dir(opts.output_dir, "--output_dir")
    jobs = [(str(p), str(Path(opts.output_dir) / p.relative_to(d).with_suffix("")))
            for d, p in find_files(opts.input_dirs, {".txt"}) if not VARIANT.match(p.stem)]
    for src, _ in jobs:  # a folder of the first edition: one line before any work
        try:
            check_edition(text_to_tokens(read_text(src))[:5], src)
        except FirstEdition as e:
            die(e)
        except ValueError:  # unreadable: reported with the others below
            pass
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
    if not jobs:
        die(f"no encodings (.txt) in {', '.join(opts.input_dirs)}: nothing to augment")
    if len(failed) == len(jobs):
        die(f"every one of the {len(jobs)} pieces failed: see the reasons above")


if __name__ == "__main__":
    batch.main(main)
