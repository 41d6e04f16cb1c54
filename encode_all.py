"""Encode MIDI folders, or the corpus that ships inside music21, to text: one .txt per piece.

python encode_all.py --midi_dirs A B [--style NAME] --text_dir data/text --num_processes 8
python encode_all.py --corpus music21 [--composers bach palestrina] --text_dir data/text [--shard 1/4]

Each encoding starts with its header: the style (a corpus folder's style from config.corpus_styles; for
--midi_dirs the folder's name, or --style), the first tempo and the first time signature.

Resumable (a journal in the text dir records finished files), parallel with a per-file timeout, atomic writes.
Every file ends up in encode_report.json with its status (encoded, skipped, failed, duplicate) and reason.
"""
import argparse
import hashlib
import re
import sys
import warnings
from collections import Counter
from functools import partial
from pathlib import Path

from dataclasses import replace

import batch
import config
import configurator
from batch import Journal, atomic_write, clean_stale, die, find_files, lock, parallel_map, writable_dir, write_json
from encoding_decoding import STYLE_NAME, TOKENIZER_VERSION, Spec, notes_to_tokens, tokens_to_text
from midi_io import MIDI_SUFFIXES, midi_to_notes, parse_score, score_to_notes

SCORE_SUFFIXES = MIDI_SUFFIXES | {".mxl", ".xml", ".musicxml", ".krn", ".abc"}  # the corpus' .rntxt are analyses
CHANCE_FAILURES = ("timed out", "worker crashed")  # batch.parallel_map's reasons that a busy machine can cause


def folder_style(name):
    """A folder name as a style token's name: runs of characters a token cannot hold become '_'."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "other"


def midi_sources(dirs, style=None, problems=None):
    """(source path, output name without suffix, style) for every MIDI file; names keep the folder and relative
    path; the style is `style` or the folder's name."""
    names = [Path(d).resolve().name for d in dirs]
    if len(set(names)) < len(names):
        die(f"two of the --midi_dirs share a folder name ({', '.join(names)}): their outputs would collide")
    return [(str(p), f"{d.resolve().name}/{p.relative_to(d).with_suffix('').as_posix()}",
             style or folder_style(d.resolve().name)) for d, p in find_files(dirs, MIDI_SUFFIXES, problems)]


def distinct(sources):
    """song.mid beside song.MIDI (or bwv277.krn beside bwv277.mxl): keep both, told apart by their suffix."""
    taken = Counter(out for _, out, _ in sources)
    return [(src, out if taken[out] == 1 else f"{out}_{Path(src).suffix[1:]}", style) for src, out, style in sources]


def corpus_style(folder):
    """The style of a music21 corpus folder, through config.corpus_styles."""
    return next((style for style, folders in config.corpus_styles.items() if folder in folders), "other")


def corpus_sources(composers):
    from music21 import corpus
    paths = sorted(corpus.getCorePaths())
    root = next(p for p in paths[0].parents if p.name == "corpus")
    known = sorted({p.relative_to(root).parts[0] for p in paths})
    if unknown := set(composers or ()) - set(known):
        die(f"unknown composer(s) {', '.join(sorted(unknown))}; the music21 corpus has: {', '.join(known)}")
    return [(str(p), "music21/" + p.relative_to(root).with_suffix("").as_posix(), corpus_style(p.relative_to(root).parts[0]))
            for p in paths
            if p.suffix.lower() in SCORE_SUFFIXES and (not composers or p.relative_to(root).parts[0] in composers)]


def encode_one(opts, job):
    """Encode one source file; write each piece that passes; return one report entry per piece."""
    warnings.simplefilter("ignore")  # music21's notes on overfull measures and the like would bury the progress bar
    src, out, style = job
    spec = Spec.of(opts)
    if Path(src).suffix.lower() in MIDI_SUFFIXES:
        pieces = [("", *midi_to_notes(Path(src).read_bytes(), spec, opts.keep_drums, opts.max_piece_steps,
                                      opts.default_bpm))]
    else:
        pieces = [(suffix, *score_to_notes(score, spec, opts.default_velocity, opts.default_bpm))
                  for suffix, score in parse_score(src)]
    entries = []
    for suffix, notes, header, dropped in pieces:
        header = replace(header, style=style)
        warned = {k.removeprefix("warning:"): v for k, v in dropped.items() if k.startswith("warning:")}
        entry = {"source": src, "output": f"{out}{suffix}.txt", "notes": len(notes), "dropped": dict(dropped),
                 "style": style, "bpm": header.bpm, "meter": header.meter, "parts": list(header.parts),
                 "warnings": warned, "edition": TOKENIZER_VERSION}
        if len(notes) < opts.min_notes:
            why = f"too few notes ({len(notes)} < min_notes={opts.min_notes})" if notes else "no notes"
            extra = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
            entries.append({**entry, "status": "skipped", "reason": f"{why}; dropped: {extra}" if extra else why})
            continue
        text = tokens_to_text(notes_to_tokens(notes, spec, header))
        atomic_write(Path(opts.text_dir) / entry["output"], text)
        merged = dropped["parts_merged"]
        rescued = "; ".join((["read with repairs: " + ", ".join(f"{k} {v}" for k, v in sorted(warned.items()))]
                             if warned else [])
                            + ([f"{merged} parts merged by instrument family (max_parts={spec.max_parts})"]
                               if merged else []))
        entries.append({**entry, "status": "encoded", "reason": rescued,
                        "sha256": hashlib.sha256(text.encode()).hexdigest()})
    return entries


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--midi_dirs", nargs="+", default=[], help="folders searched recursively for .mid/.midi")
    parser.add_argument("--corpus", choices=["music21"], help="encode the corpus bundled with music21")
    parser.add_argument("--composers", nargs="+", help="corpus folders to take (default: all)")
    parser.add_argument("--style", help="the style of every --midi_dirs file (default: each folder's name)")
    configurator.option(parser, "text_dir", "the folder of the encodings")
    configurator.option(parser, "shard", "K/N: encode only the K-th (1..N) of N slices of the files")
    opts = configurator.cli(parser, ["sample_freq", "pitch_range", "velocity_range", "max_dur", "default_velocity",
                                     "keep_drums", "min_notes", "max_piece_steps", "default_bpm", "meters",
                                     "max_parts", "max_countdown", "num_processes",
                                     "file_timeout", "timeout_bytes"], argv)
    if opts.style is not None and not STYLE_NAME.fullmatch(opts.style):
        die(f"--style wants a name of letters, digits and _.+- only, got {opts.style!r}")
    if not (m := re.fullmatch(r"(\d+)/(\d+)", opts.shard)) or not 1 <= int(m[1]) <= int(m[2]):
        die(f"--shard wants K/N with 1 <= K <= N, got {opts.shard!r}")
    k, n = int(m[1]), int(m[2])
    if not opts.midi_dirs and not opts.corpus:
        die("nothing to encode: give --midi_dirs and/or --corpus music21")
    problems = []  # (path, reason) of folders that cannot be listed and links that lead nowhere
    sources = midi_sources(opts.midi_dirs, opts.style, problems) + (corpus_sources(opts.composers) if opts.corpus else [])
    if not sources:
        die(f"no input files (.mid/.midi) in {', '.join(opts.midi_dirs)}")
    sources = sorted(distinct(sources), key=lambda s: s[1])[k - 1::n]
    text_dir, tag = writable_dir(opts.text_dir, "--text_dir"), "" if n == 1 else f".shard{k}of{n}"
    if n == 1:  # the shards of one encode share a folder, each with a journal of its own
        lock(text_dir, "encode_all.py")
    clean_stale(text_dir)

    journal = Journal(text_dir / f".encode_journal{tag}.jsonl")
    def finished(out):  # failed files are tried again: a rerun with a longer --file_timeout may get them; an
        # encoding of an earlier edition of the grammar is encoded anew
        entries = journal.done.get(out)
        return entries is not None and all(e["status"] != "failed" and (e["status"] != "encoded" or (
            (text_dir / e["output"]).exists() and e.get("edition") == TOKENIZER_VERSION)) for e in entries)
    todo = [s for s in sources if not finished(s[1])]
    if len(todo) < len(sources):
        print(f"resuming: {len(sources) - len(todo)} of {len(sources)} files already done")
    try:
        timeout = lambda job: opts.file_timeout * max(1.0, Path(job[0]).stat().st_size / opts.timeout_bytes)
        for (src, out, _), ok, result in parallel_map(partial(encode_one, opts), todo, opts.num_processes, timeout,
                                                   desc="encode"):
            journal.add(out, result if ok else [{"source": src, "output": None, "status": "failed", "reason": result}])
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(journal.done)} files are done in {text_dir}; run the same command again to "
              f"resume where this one stopped", file=sys.stderr)
        sys.exit(130)

    # The report covers every file that this folder's encodings came from, in this run or an earlier one (the
    # journal keeps them all). Exact duplicates are kept once: the first in sorted order wins, so the outcome
    # never depends on timing.
    report, first = [{"source": path, "output": None, "status": "failed", "reason": why} for path, why in problems], {}
    for out in sorted(journal.done):
        entries = journal.done[out]
        for e in entries:
            if e["status"] == "encoded" and first.setdefault(e["sha256"], e["output"]) != e["output"]:
                (text_dir / e["output"]).unlink(missing_ok=True)
                e.update(status="duplicate", reason=f"same encoding as {first[e['sha256']]}")
                journal.add(out, entries)  # so a rerun does not encode it again
        report += entries

    summary = Counter(e["status"] for e in report)
    reasons = Counter((e["status"], re.sub(r"\d+", "N", e["reason"])) for e in report
                      if e["reason"] and e["status"] != "duplicate")
    dropped = sum((Counter(e.get("dropped", {})) for e in report if e["status"] == "encoded"), Counter())
    write_json(text_dir / f"encode_report{tag}.json", {"summary": dict(summary), "dropped_notes": dict(dropped),
                                                       "settings": Spec.of(opts).to_dict(), "files": report})
    print(f"{len(sources)} files -> {summary['encoded']} pieces encoded, {summary['skipped']} skipped, "
          f"{summary['failed']} failed, {summary['duplicate']} duplicates   (report: {text_dir}/encode_report{tag}.json)")
    for (status, reason), count in sorted(reasons.items()):
        print(f"  {status:8} {count:5}  {reason}")
    if dropped:
        print("  notes dropped or changed in encoded pieces: " + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())))
    if not summary["encoded"] and not summary["duplicate"]:
        die(f"no file could be encoded ({summary['failed']} failed, {summary['skipped']} skipped): see the reasons above")
    if chance := [e for e in report if e["status"] == "failed" and e["reason"].startswith(CHANCE_FAILURES)]:
        die(f"{len(chance)} files timed out or stopped their worker, which a rerun may not repeat: run the same "
            f"command again to retry only them (add --file_timeout={2 * opts.file_timeout:g} for twice the CPU time "
            f"each)")


if __name__ == "__main__":
    batch.main(main)
