"""How good is the music? Likelihood against an n-gram baseline, grammar, statistics against real music, memorization.

python evaluate.py --out_dir models/<name> [--data_dir data/bin] [--num_samples 64]
python evaluate.py --listen midi-samples/*.mid [--voices 4]   (what a music teacher counts in MIDI or .txt files)
    [--against real/]                                           (... beside real pieces, and a classifier on both)
    [--keep DEST]                                               (... and copy those a teacher keeps into DEST)
python evaluate.py --forms data/text/music21/bach/*.txt          (the forms of real pieces, as --form auto draws them)
python evaluate.py --out_dir models/corpus --cadence val/*.txt   (how well a run knows the last bars, by its view)
python evaluate.py --out_dir models/corpus --styles val/*.txt    (the style a run hears in each piece)
python evaluate.py --out_dir models/corpus --rules val/*.txt     (does a run know the rules of part writing?)
python evaluate.py --out_dir models/corpus --repeats val/*.txt   (can a run copy a bar it has heard?)

Writes eval.json, eval.md and eval_histograms.png into the run folder (with --overwrite where an earlier evaluation
is there).
- Likelihood: cross-entropy of the validation pieces (originals only) in bits per token and bits per note, for the
  model and for an interpolated Kneser-Ney n-gram model fitted on train.bin.
- Grammar: the share of samples that decode cleanly, drawn with and without the sampler's grammar constraint.
- Statistics: histograms of pitch class, pitch, duration, inter-onset interval, notes per bar and polyphony for the
  samples and for the validation pieces, and the overlapping area of each pair (Yang & Lerch, 2018). Samples are
  drawn as sample.py draws them (--temperature, --top_k, --top_p) and hold at most --max_new_tokens tokens, so each
  validation piece is cut to its first --max_new_tokens tokens too (a few long pieces would otherwise outweigh the
  rest). The reference: the same measures for as many real pieces from train.bin, cut the same way, in place of the
  samples: what a model that plays its training data perfectly would score, sampling noise included. The per-piece
  statistics (a piece's mean notes per bar, polyphony, pitch range and mean pitch: one value per piece) are
  compared as kernel density estimates (Silverman's width, for the smaller side's number of pieces), as a few
  dozen single values per side leave a histogram of 1-semitone bins mostly empty.
- Memorization: the longest run of tokens (and of note events) each sample shares with train.bin; the reference:
  the same for as many validation pieces, cut the same way, which the model never saw (what music shares with
  the training data by itself: scales, cadences, tunes found in two collections).
- Per style: likelihood and statistics again for each style's validation pieces, against samples asked for it.
  The main styles are those with at least --main_style_pieces validation pieces (a profile of one or two pieces
  says little).
- Control adherence, on the samples' MIDI files read back: the share of samples asked for a main style whose
  statistics are closest to that style's (among the main styles; the reference: the share of real training pieces
  of the style that this test puts in their own style), that end in the last bar of a --bars target or within a bar
  of a --seconds one, and that keep every note inside a --key and --pitch_range.
- What a listener hears, per main style, for samples asked for the style and as many bars as the style's validation
  pieces have (their median, at most LISTEN_BARS), by the model alone and with the style's defaults
  (config.STYLE_DEFAULTS: its rules, forms, temperature and top-p, as sample.py --style takes them), and for those
  whole validation pieces, by the same code: the share of beats with as many notes sounding as the style's pieces
  have parts, parallel perfect fifths and octaves per 100 beat-to-beat moves, the share that end on the tonic triad
  of their key, the share of bars that repeat an earlier bar, of notes outside the key and of pieces in minor, and
  for four voices the voices out of range and the upper voices spaced wider than an octave.
- Given material: --given_pieces validation chorales' sopranos harmonized (--given_samples each), the soprano
  forced at its onsets, by the model alone and with the style's defaults (and, for a run trained with
  --given_share, also shown ahead): the melody kept, the measures
  above and each voice's range, beside the real chorales; their middle bars filled in (every other note kept, no
  new note ringing past the gap); and the bits per note the sampler pays for the real lower voices alone, under the
  soprano (and under it shown ahead), and for the real middle bars from the left only and between both sides.
"""
import argparse
import json
import math
import shutil
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import batch
import config
import configurator
from batch import (atomic_write, die, figure_png, find_files, read_text, reason, swap_in, temp_name, why_not_written,
                   writable_dir, write_json)
from controls import (Controls, Request, form_repeats, form_setting, harmonize, infill, key_pitch_classes, key_setting,
                      style_defaults_problem, style_rules, style_settings)
from dataset import read_data
from encoding_decoding import (DRUMS, END, HEADER, START, Header, Spec, decodes_cleanly, finish, first_tokens,
                               header_end, kind, notes_to_tokens, text_to_tokens, tokens_to_notes, validate)
from mask import GrammarMask, draw, mask_rows, rule_breaks, style_logits
from measures import (MEASURES, PIECE_STATS, STATS, closest_style, histogram, form_shares, kept_pieces, kernel_width,
                      listen, logistic_accuracy, overlapping_area, piece_form, piece_key, piece_measures, polyphony,
                      profile, voice_ranges)
from midi_io import MIDI_SUFFIXES, described_changes, midi_to_notes, notes_to_midi, read_music
from ngram import KneserNey, longest_runs, split_pieces
from runs import learnt_given, load_run, pick_device, share_cores
from scoring import CADENCE_VIEWS, COPIED_BARS, cadence_bits, model_nats, next_token_probs, repeat_bits


def note_events(ids, itos):
    """Token ids -> one id per note, onset or bar line, so runs can be counted in notes rather than tokens."""
    tokens = [itos[i] for i in ids]
    groups, cur = [], []
    for t in tokens:
        if t in (START, END):
            continue
        if kind(t) in ("p", "pos", "bar") or (kind(t) == "n" and not (cur and kind(cur[-1]) == "p")):
            if cur:
                groups.append(" ".join(cur))
            cur = []
        cur.append(t)
    return groups + ([" ".join(cur)] if cur else [])


def through_midi(tokens, spec):
    """(notes, header) of a sample as a MIDI file reads back: what a listener gets."""
    notes, header, _ = tokens_to_notes(finish(tokens), spec)
    notes, back, _ = midi_to_notes(notes_to_midi(notes, spec, header), spec)
    return notes, back


def style_of(tokens):
    return Header.of_tokens(tokens[:2]).style


def eval_key_controls(args, spec):
    """The --eval_key and --eval_pitch_range measured, as Controls; one clear line if they cannot be."""
    try:
        key = Controls(scale=key_pitch_classes(args.eval_key), pitch_range=tuple(args.eval_pitch_range))
    except ValueError as e:
        die(f"--eval_key: {e}")
    if errors := key.errors(spec):
        die("--eval_key/--eval_pitch_range: " + "; ".join(errors))
    return key


def adherence(sample, spec, args, styles, style_profiles, real):
    """Control adherence on sampled MIDI read back: style (closest style profile; for reference, the same test on
    `real` pieces of each style), length (ends in the last of --bars, within a bar of --seconds) and pitch (no note
    outside --key and --pitch_range). sample(n, max_new, seed, controls) -> token lists."""
    n, out = args.control_samples, {}
    if len(styles) > 1:
        hits, ref = {}, {}
        closest = lambda x: closest_style(through_midi(x, spec), styles, style_profiles, spec.sample_freq)
        share = lambda pieces, s: float(np.mean([closest(x) == s for x in pieces]))
        for k, s in enumerate(styles):
            hits[s] = share(sample(n, args.max_new_tokens, args.seed + 10 + k, Controls(style=s)), s)
            ref[s] = share(real[s], s)
        out["style"] = {"share_closest_to_asked_style": float(np.mean(list(hits.values()))), "per_style": hits,
                        "reference": float(np.mean(list(ref.values()))), "reference_per_style": ref}
    ends = []
    for x in sample(n, 0, args.seed + 1, Controls(bars=args.eval_bars)):
        notes, header = through_midi(x, spec)
        lines = header.bar_lines(spec.sample_freq, args.eval_bars)
        ends.append(lines[-2] < max((n.end for n in notes), default=0) <= lines[-1])
    out["bars"] = {"target": args.eval_bars, "share_ending_in_the_last_bar": float(np.mean(ends))}
    ends = []
    for x in sample(n, 0, args.seed + 2, Controls(seconds=args.eval_seconds)):
        notes, header = through_midi(x, spec)
        bar = header.bar_lines(spec.sample_freq, 1)[1] * 60 / header.bpm / spec.sample_freq  # seconds
        ends.append(abs(max((n.end for n in notes), default=0) * 60 / header.bpm / spec.sample_freq
                        - args.eval_seconds) <= bar)
    out["seconds"] = {"target": args.eval_seconds, "share_within_one_bar": float(np.mean(ends))}
    key = eval_key_controls(args, spec)
    inside = [all(key.allows_pitch(n.pitch) for n in through_midi(x, spec)[0])
              for x in sample(n, args.max_new_tokens, args.seed + 3, key)]
    out["key_and_range"] = {"key": args.eval_key, "pitch_range": list(args.eval_pitch_range),
                            "share_with_no_note_outside": float(np.mean(inside))}
    return out


class Pieces:
    """The validation and training pieces, decoded, cut like samples (to their first --max_new_tokens tokens), and by
    style; real(n, style) draws n training pieces (of a style) as the reference, from one seeded generator;
    originals(style): every training piece of the style that is not an augmented copy (meta.json says which are)."""

    def __init__(self, args, tok, splits, meta):
        start, self.tok, self.max_new = tok.stoi[START], tok, args.max_new_tokens
        self.val = split_pieces(np.asarray(splits["val"], dtype=np.int64), start)
        self.train = np.asarray(splits["train"], dtype=np.int64)
        self.train_pieces = split_pieces(self.train, start)
        val_tokens = [tok.decode([int(i) for i in p]) for p in self.val]
        self.val_styles = np.array([style_of(t) for t in val_tokens])
        self.styles = sorted(set(self.val_styles))
        self.val_keeps = [header_end(t) or 1 for t in val_tokens]
        self.val_decoded = [tokens_to_notes(t, tok.spec)[:2] for t in val_tokens]
        self.val_notes = [notes for notes, _ in self.val_decoded]
        self.val_cut_decoded = [tokens_to_notes(self.cut(p), tok.spec)[:2] for p in self.val]
        self.rng = np.random.default_rng(args.seed)
        self.train_styles = np.array([style_of(tok.decode([int(i) for i in p[:4]])) for p in self.train_pieces])
        copies = meta["train"].get("augmented_at")  # None: prepared before prepare.py said where the copies are
        self.originals_known = copies is not None
        self.original = np.ones(len(self.train_pieces), dtype=bool)
        self.original[np.asarray(copies or [], dtype=np.int64)] = False

    def cut(self, ids):
        return first_tokens(ids, self.max_new, self.tok)

    def decoded_of(self, pieces):
        """(notes, header) of each piece that has notes."""
        return [d for d in (tokens_to_notes(t, self.tok.spec)[:2] for t in pieces) if d[0]]

    def real(self, n, style=None):
        which = np.flatnonzero(self.train_styles == style) if style else len(self.train_pieces)
        return [self.cut(self.train_pieces[i]) for i in self.rng.permutation(which)[:n]]

    def originals(self, style):
        return [self.cut(self.train_pieces[i]) for i in np.flatnonzero(self.original & (self.train_styles == style))]


def likelihoods(args, model, tok, pieces, device):
    """(likelihood(which) -> (bits per token and note of the model and the n-gram, the model's bits/note over the
    n-gram's) for the validation pieces picked by a boolean array, the n-gram's fit tokens)."""
    start = tok.stoi[START]
    fit_on = split_pieces(pieces.train[:args.ngram_max_tokens], start)
    if args.ngram_max_tokens < len(pieces.train) and len(fit_on) > 1:
        fit_on = fit_on[:-1]  # the piece the cap cut through
    ngram = KneserNey(args.ngram, tok.vocab_size).fit(fit_on)
    ngram_name = f"{args.ngram}-gram"
    nats = {"model": model_nats(model, pieces.val, pieces.val_keeps, device),
            ngram_name: np.array([ngram.nats(p) for p in pieces.val])}

    def likelihood(which):
        n_tokens = sum(len(p) - 1 for p, w in zip(pieces.val, which) if w)
        n_notes = sum(len(n) for n, w in zip(pieces.val_notes, which) if w)
        out = {k: {"bits_per_token": v[which].sum() / math.log(2) / n_tokens,
                   "bits_per_note": v[which].sum() / math.log(2) / n_notes} for k, v in nats.items()}
        return out, out["model"]["bits_per_note"] / out[ngram_name]["bits_per_note"]
    return likelihood, int(sum(map(len, fit_on)))


def sample_statistics(args, spec, pieces, sample):
    """Grammar validity with and without the mask, and the statistics of samples against the validation pieces, with
    real training pieces in their place as the reference; also the samples and the histograms."""
    samples = {c: sample(args.num_samples, args.max_new_tokens, args.seed, constrained=c) for c in (True, False)}
    grammar = {("constrained" if c else "unconstrained"): float(np.mean([decodes_cleanly(t, spec) for t in s]))
               for c, s in samples.items()}
    sampled = [finish(t) for t in samples[True]]
    drawn, real, val, sf = (pieces.decoded_of(sampled), pieces.decoded_of(pieces.real(args.num_samples)),
                            pieces.val_cut_decoded, spec.sample_freq)
    widths = {name: kernel_width(val, name, args.num_samples, sf) for name in {**STATS, **PIECE_STATS}}
    hists = {name: (histogram(drawn, name, sf, w), histogram(val, name, sf, w)) for name, w in widths.items()}
    return sampled, hists, {
        "grammar_valid_share": grammar, "overlapping_area": {name: overlapping_area(a, b) for name, (a, b) in hists.items()},
        "reference_overlapping_area": {name: overlapping_area(histogram(real, name, sf, widths[name]), b)
                                       for name, (_, b) in hists.items()},
        "kernel_widths": {name: v for name, v in widths.items() if v}}


def style_statistics(args, pieces, sample, likelihood):
    """Per style: the likelihood of its validation pieces and the statistics of samples asked for it (and of real
    pieces of it) against them; also each style's profile and its real pieces, for the adherence test."""
    profiles, per_style, real, sf = {}, {}, {}, pieces.tok.spec.sample_freq
    for k, style in enumerate(pieces.styles):
        which = pieces.val_styles == style
        mine = [d for d, w in zip(pieces.val_cut_decoded, which) if w]
        profiles[style] = profile(mine, sf)
        asked = pieces.decoded_of(finish(t) for t in sample(args.control_samples, args.max_new_tokens,
                                                            args.seed + 100 + k, Controls(style=style)))
        real[style] = pieces.real(args.control_samples, style)
        lik, r = likelihood(which)
        w = {name: kernel_width(mine, name, args.control_samples, sf) for name in {**STATS, **PIECE_STATS}}
        area = lambda ps: {name: overlapping_area(histogram(ps, name, sf, w[name]), histogram(mine, name, sf, w[name]))
                           for name in w}
        per_style[style] = {"val_pieces": int(which.sum()), "likelihood": lik, "bits_per_note_vs_ngram": r,
                            "overlapping_area": area(asked),
                            "reference_overlapping_area": area(pieces.decoded_of(real[style])),
                            "kernel_widths": {name: v for name, v in w.items() if v},
                            "main": bool(which.sum() >= args.main_style_pieces)}
    return per_style, profiles, real


LISTEN_BARS = 64  # the longest samples listening() asks for (a Palestrina mass movement has hundreds of bars)


def listening(args, spec, pieces, sample, styles):
    """Per style, listen() to samples asked for it and as many bars as its validation pieces have (the median, at
    most LISTEN_BARS: repeats and endings are measured on pieces of a like length) and to those whole validation
    pieces, with as many voices as most of those pieces have parts."""
    out = {}
    for k, style in enumerate(styles):
        real = [d for d, s in zip(pieces.val_decoded, pieces.val_styles) if s == style]
        voices = Counter(len(h.parts) for _, h in real).most_common(1)[0][0]
        bars = min(int(np.median([h.bars_needed(n, spec.sample_freq) for n, h in real])), LISTEN_BARS)
        seed = args.seed + 200 + k
        drawn = lambda controls, own=None: [tokens_to_notes(finish(t), spec)[:2] for t in sample(
            args.control_samples, 0, seed, controls, own=own)]
        out[style] = {"bars": bars, "samples": listen(drawn(Controls(style=style, bars=max(bars, 1))), voices,
                                                      spec.sample_freq),
                      "samples_defaults": listen(drawn(*style_defaults(style, args.control_samples, seed,
                                                                        max(bars, 1))), voices, spec.sample_freq),
                      "real": listen(real, voices, spec.sample_freq)}
    return out


def sampling_knobs(args):
    """The draw's settings from the command line (mask.draw's keywords), as eval.json records them."""
    return dict(temperature=args.temperature, rhythm_temperature=args.rhythm_temperature, top_k=args.top_k or None,
                top_p=args.top_p)


def style_defaults(style, n, seed, bars=None, controls=Controls(), with_given=False):
    """(controls, sampling knobs) of n samples of `style` with its defaults (config.STYLE_DEFAULTS, as sample.py
    --style takes them, `with_given` as under given material): its rules on `controls`, with `bars` its forms drawn,
    without given material or a scale its keys (config.key), and its temperature and top-p."""
    s = style_settings(style, {}, with_given)
    form = form_setting(s["form"], style, n, seed, bars, free=bars is not None)
    key, drawn = key_setting(config.key, style, n, seed, free=not with_given and controls.scale is None)
    return replace(controls, style=style, bars=bars or controls.bars, voice_leading=s["voice_leading"],
                   voice_leading_rules=s["voice_leading_rules"], choir=s["choir"], form=form,
                   **(key if drawn else {})), dict(
        temperature=s["temperature"], rhythm_temperature=s["rhythm_temperature"], top_p=s["top_p"])


# --- each main style against every training original of it: per-piece statistics and a classifier

def against_originals(args, spec, pieces, sample, styles):
    """Per main style: --style_samples samples asked for it and, as the reference, the style's validation pieces,
    each against every training original of the style, all cut alike: the per-piece statistics' overlapping areas
    (Silverman's width for --style_samples values) and the share of onsets with as many notes sounding as most of
    the originals have parts; and how often a classifier on the pieces' musical measures (MEASURES) tells the
    samples from as many originals, beside two halves of the originals (about 0.5: what it cannot tell apart); the
    classifier also on as many samples with the style's defaults (config.STYLE_DEFAULTS, as long as the style's
    validation pieces, their median)."""
    out = {}
    for k, style in enumerate(styles):
        originals = pieces.decoded_of(pieces.originals(style))
        if len(originals) < 2:
            continue
        val = [d for d, s in zip(pieces.val_cut_decoded, pieces.val_styles) if s == style and d[0]]
        drawn = pieces.decoded_of(finish(t) for t in sample(args.style_samples, args.max_new_tokens,
                                                            args.seed + 500 + k, Controls(style=style)))
        bars = max(int(np.median([h.bars_needed(n, spec.sample_freq) for n, h in val or originals])), 1)
        by_default = pieces.decoded_of(finish(t) for t in sample(
            args.style_samples, 0, args.seed + 600 + k, *style_defaults(style, args.style_samples,
                                                                        args.seed + 600 + k, bars)))
        voices = Counter(len(h.parts) for _, h in originals).most_common(1)[0][0]
        w = {name: kernel_width(originals, name, args.style_samples, spec.sample_freq) for name in PIECE_STATS}
        area = lambda ps: {name: overlapping_area(histogram(ps, name, spec.sample_freq, w[name]),
                                                  histogram(originals, name, spec.sample_freq, w[name])) for name in w}
        on = lambda ps: float(np.mean([c == voices for n, _ in ps for c in polyphony(n)])) if ps else None
        features = lambda ps: [piece_measures(n, h, voices, spec.sample_freq) for n, h in ps]
        order = np.random.default_rng(args.seed + k).permutation(len(originals))
        half = min(len(drawn), len(originals) // 2)
        real = features([originals[i] for i in order[:max(len(drawn), 2 * half)]])
        out[style] = {"originals": len(originals), "samples": len(drawn), "val_pieces": len(val), "voices": voices,
                      "overlapping_area": area(drawn), "reference_overlapping_area": area(val),
                      "onsets_with_all_voices": {"samples": on(drawn), "validation": on(val),
                                                 "originals": on(originals)},
                      "classifier_accuracy": logistic_accuracy(features(drawn), real[:len(drawn)]),
                      "classifier_accuracy_defaults": logistic_accuracy(features(by_default), real[:len(by_default)]),
                      "reference_classifier_accuracy": logistic_accuracy(real[:half], real[half:2 * half]),
                      "classifier_features": MEASURES}
    return out


# --- given material: the validation chorales' sopranos harmonized, their middle bars filled in


def given_pieces(pieces, n):
    """Up to n validation pieces of the main four-part style (Bach's chorales where there are some): (notes, header)."""
    four = [(d, s) for d, s in zip(pieces.val_decoded, pieces.val_styles) if len(d[1].parts) == 4 and d[0]]
    styles = Counter(s for _, s in four)
    style = "bach" if "bach" in styles else styles.most_common(1)[0][0] if styles else None
    return [d for d, s in four if s == style][:n]


def infill_span(bars):
    """The bars an evaluation fills in: 5 to 8 where a piece has 10 or more, else its middle two; None under 4."""
    return (5, 8) if bars >= 10 else (bars // 2, bars // 2 + 1) if bars >= 4 else None


def hold_piece(header, bars):
    """The controls that hold a piece's own header and length (what sample.py sets for given material)."""
    return Controls(style=header.style, tempo=header.bpm, meter=header.meter, bars=bars, instruments=header.parts)


def given_bits(model, tok, notes, header, device, modes):
    """Bits per note that the sampler pays, each piece scored as it would be drawn: the lower voices alone, under
    the soprano forced at its onsets, under the soprano also shown ahead; and the middle bars (infill_span) with
    only the left side, with the right side forced after the gap, with it also shown ahead (`modes`: the look-ahead
    settings measured). Sums of (bits, notes)."""
    spec, ln2 = tok.spec, math.log(2)
    soprano = [n for n in notes if n.part == 0]
    lower = [n._replace(part=n.part - 1) for n in notes if n.part > 0]
    bars = header.bars_needed(notes, spec.sample_freq)
    cases = {}

    def score(name, tokens, mask, counted, count):
        ids = tok.encode(tokens)
        rows = mask_rows(mask, ids, device)
        nats = model_nats(model, [np.asarray(ids)], [1 + len(HEADER) + len(header.parts)], device, allowed=[rows],
                          counted=[counted(tokens)[1:]])[0]
        cases[name] = (nats / ln2, count)

    everything = lambda tokens: np.ones(len(tokens), dtype=bool)
    held = hold_piece(header, bars)
    score("lower voices alone", notes_to_tokens(lower, spec, replace(header, parts=header.parts[1:])),
          GrammarMask(tok, device, replace(held, instruments=header.parts[1:])), everything, len(lower))
    for ahead, name in ((False, "under the soprano at its onsets"), (True, "under the soprano, shown ahead"))[:modes]:
        tokens = notes_to_tokens(notes, spec, header, given=soprano if ahead else None)
        material = harmonize(soprano, header, spec, ahead)[1]
        score(name, tokens, GrammarMask(tok, device, held, material=material), everything, len(lower))
    if span := infill_span(bars):
        lines = header.bar_lines(spec.sample_freq, bars)
        gap = [n for n in notes if lines[span[0] - 1] <= n.start < lines[span[1]]]
        after = [n for n in notes if n.start >= lines[span[1]]]

        def in_gap(tokens):  # from the gap's first bar line to the next bar line after it (or the END)
            at = [i for i, t in enumerate(tokens) if kind(t) == "bar"] + [len(tokens) - 1]
            return (np.arange(len(tokens)) >= at[span[0] - 1]) & (np.arange(len(tokens)) < at[span[1]])
        plain = notes_to_tokens(notes, spec, header)
        score("bars from the left only", plain, GrammarMask(tok, device, held), in_gap, len(gap))
        for ahead, name in ((False, "bars between both sides, the right at its onsets"),
                            (True, "bars between both sides, the right shown ahead"))[:modes]:
            tokens = notes_to_tokens(notes, spec, header, given=after if ahead else None)
            material = infill(notes, header, spec, *span, ahead)[1]
            score(name, tokens, GrammarMask(tok, device, held, material=material), in_gap, len(gap))
    return cases


def given_material(args, model, tok, pieces, device):
    """Harmonize each of --given_pieces validation chorales' sopranos (--given_samples samples each, with the
    soprano only forced at its onsets and, for a run trained with given material, also shown ahead), fill in their
    middle bars (as sample.py does, config.look_ahead), and measure them beside the real chorales by the same code;
    with the bits per note that the given material saves."""
    spec, chorales = tok.spec, given_pieces(pieces, args.given_pieces)
    if not chorales:
        return None
    knobs = sampling_knobs(args)
    modes = 2 if learnt_given(tok, args.out_dir) else 1
    ways = [(False, False, "at its onsets"), (False, True, "at its onsets, the style's defaults"),
            (True, False, "shown ahead")][:modes + 1]  # (shown ahead?, the style's defaults?, name)
    drawn = {name: [] for _, _, name in ways}
    kept = {k: [] for k in drawn}
    filled, filled_ok, bits = [], [], defaultdict(lambda: [0.0, 0])
    for k, (notes, header) in enumerate(chorales):
        share_cores(device)
        bars = header.bars_needed(notes, spec.sample_freq)
        soprano = [n for n in notes if n.part == 0]
        for ahead, defaults, name in ways:  # (under the defaults, the melody's repeats are the form)
            repeats = form_repeats(style_settings(header.style, {}, with_given=True)["form"]) if defaults else 0
            prompt, material, bars = harmonize(soprano, header, spec, ahead, repeats)
            held, own = hold_piece(header, bars), {}
            if defaults:  # the rules and knobs of the chorales' style
                held, own = style_defaults(header.style, args.given_samples, 0, controls=held, with_given=True)
            for t in draw(model, tok, Request(held, tuple(prompt), material), args.given_samples,
                          args.seed + 300 + k, **{**knobs, **own}):
                got, head, _ = tokens_to_notes(finish(t), spec)
                drawn[name].append((got, head))
                kept[name].append([n for n in got if n.part == 0] == soprano)
        if span := infill_span(bars):
            prompt, material, _ = infill(notes, header, spec, *span, config.look_ahead and modes == 2)
            lo, hi = header.bar_lines(spec.sample_freq, bars)[span[0] - 1], header.bar_lines(spec.sample_freq,
                                                                                             bars)[span[1]]
            for t in draw(model, tok, Request(hold_piece(header, bars), tuple(prompt), material), args.given_samples,
                          args.seed + 400 + k, **knobs):
                got = tokens_to_notes(finish(t), spec)[0]
                filled.append(sorted(n for n in got if not lo <= n.start < hi) ==
                              sorted(n for n in notes if not lo <= n.start < hi))
                filled_ok.append(all(n.end <= hi for n in got if lo <= n.start < hi))
        for name, (b, count) in given_bits(model, tok, notes, header, device, modes).items():
            bits[name][0] += b
            bits[name][1] += count
    real = [(n, h) for n, h in chorales]
    heard = lambda ps: {**listen(ps, 4, spec.sample_freq), "voice_ranges": voice_ranges(ps, 4)}
    return {"style": chorales[0][1].style, "pieces": len(chorales), "samples_per_piece": args.given_samples,
            "harmonized": {**{name: {"melody_kept": float(np.mean(kept[name])), **heard(d)}
                              for name, d in drawn.items()}, "real": heard(real)},
            "infill": {"span": "bars 5-8 (the middle two in pieces under 10 bars)", "samples": len(filled),
                       "all_other_notes_kept": float(np.mean(filled)) if filled else None,
                       "no_new_note_past_the_gap": float(np.mean(filled_ok)) if filled_ok else None},
            "bits_per_note": {name: b / max(c, 1) for name, (b, c) in bits.items()}}


def memorization(args, tok, pieces, sampled):
    """The longest run each sample shares with train.bin, in tokens and in note events, against as many validation
    pieces (never trained on) cut the same way."""
    sample_ids = [np.asarray(tok.encode(t), dtype=np.int64) for t in sampled]
    token_runs = longest_runs(sample_ids, pieces.train)
    event_vocab = {}
    events = lambda ids: np.asarray([event_vocab.setdefault(g, len(event_vocab)) for g in note_events(ids, tok.itos)],
                                    dtype=np.int64)
    train_events = events(pieces.train)
    note_runs = longest_runs([events(s) for s in sample_ids], train_events, k=4)
    at_or_above = lambda runs: float(np.mean([r >= args.memorization_threshold for r in runs]))
    unseen = [np.asarray(tok.encode(pieces.cut(pieces.val[i])), dtype=np.int64)
              for i in np.random.default_rng(args.seed).permutation(len(pieces.val))[:args.num_samples]]
    unseen_runs = longest_runs(unseen, pieces.train)
    unseen_note_runs = longest_runs([events(s) for s in unseen], train_events, k=4)
    share, reference = at_or_above(token_runs), at_or_above(unseen_runs)
    twice = {unit: 2 * float(np.median(ref))
             for unit, ref in (("tokens", unseen_runs), ("note_events", unseen_note_runs))}
    return {"longest_token_run": token_runs, "longest_note_run": note_runs,
            "threshold_tokens": args.memorization_threshold, "share_at_or_above_threshold": share,
            "reference_longest_token_run": unseen_runs, "reference_longest_note_run": unseen_note_runs,
            "reference_share_at_or_above_threshold": reference,
            # the test of copying: at most a third of the reference's share, no run past twice its median
            "share_within_a_third_of_reference": share <= reference / 3,
            "twice_reference_median_run": twice,
            "longest_runs_within_twice_reference_median": {"tokens": max(token_runs) <= twice["tokens"],
                                                           "note_events": max(note_runs) <= twice["note_events"]}}


def measure(args, model, tok, splits, meta, device):
    """Every measure, as one report of plain values (what eval.json holds), and the histograms to draw."""
    pieces = Pieces(args, tok, splits, meta)
    likelihood, fit_tokens = likelihoods(args, model, tok, pieces, device)
    knobs = sampling_knobs(args)

    def sample(n, max_new, seed, controls=Controls(), constrained=True, own=None):
        share_cores(device)  # (as other work on the machine starts and stops)
        return draw(model, tok, Request(controls), n, seed, **{**knobs, **(own or {})}, max_new=max_new,
                    constrained=constrained)

    sampled, hists, statistics = sample_statistics(args, tok.spec, pieces, sample)
    pooled, ratio = likelihood(np.ones(len(pieces.val), dtype=bool))
    per_style, profiles, real = style_statistics(args, pieces, sample, likelihood)
    main_styles = [s for s in pieces.styles if per_style[s]["main"]]
    control = adherence(sample, tok.spec, args, main_styles, profiles, real)
    heard = listening(args, tok.spec, pieces, sample, main_styles)
    given = given_material(args, model, tok, pieces, device)
    originals = against_originals(args, tok.spec, pieces, sample, main_styles)
    return {"val_pieces": len(pieces.val), "val_tokens": sum(len(p) - 1 for p in pieces.val),
            "val_notes": sum(map(len, pieces.val_notes)), "ngram_fit_tokens": fit_tokens, "sampling": knobs,
            "compared_tokens": args.max_new_tokens, "likelihood": pooled, "bits_per_note_vs_ngram": ratio,
            **statistics, "per_style": per_style, "main_styles": main_styles, "control_adherence": control,
            "listening": heard, "given_material": given, "originals_known": pieces.originals_known,
            "against_originals": originals,
            "memorization": memorization(args, tok, pieces, sampled)}, hists


def markdown(report, args, name):
    """eval.md: the report as tables."""
    r, memo, control = report, report["memorization"], report["control_adherence"]
    widths = report["kernel_widths"]
    knob_text = (f"temperature {args.temperature:g}" + (f", durations at {args.rhythm_temperature:g}" if
                 args.rhythm_temperature else "") + f", top_k {args.top_k or 'off'}, top_p {args.top_p:g}")
    lines = [f"# Evaluation of {name}", "", f"{r['val_pieces']} validation pieces, {r['val_tokens']:,} tokens, "
             f"{r['val_notes']:,} notes; {args.num_samples} samples of up to {args.max_new_tokens} tokens "
             f"({knob_text}).", "", "| model | bits/token | bits/note |", "|---|---|---|"]
    lines += [f"| {k} | {v['bits_per_token']:.3f} | {v['bits_per_note']:.3f} |" for k, v in r["likelihood"].items()]
    lines += ["", f"bits/note vs the n-gram: {r['bits_per_note_vs_ngram']:.2f}x", "",
              "| grammar | valid share |", "|---|---|"] + [f"| {k} | {v:.0%} |"
                                                        for k, v in r["grammar_valid_share"].items()]
    lines += ["", f"Statistics of the samples and of the validation pieces cut to their first {args.max_new_tokens} "
              f"tokens; the reference puts {args.num_samples} real pieces from train.bin, cut the same way, in place "
              "of the samples (per-piece statistics smoothed with a Gaussian kernel of the width in brackets, in "
              "bins):", "", "| statistic | overlapping area | reference |", "|---|---|---|"]
    lines += [f"| {k}{f' ({widths[k]:.2f})' if widths.get(k) else ''} | {v:.3f} | "
              f"{r['reference_overlapping_area'][k]:.3f} |" for k, v in r["overlapping_area"].items()]
    lines += ["", "Per style (samples asked for the style with --style, against that style's validation pieces, and in "
              f"brackets {args.control_samples} real pieces of the style from train.bin in their place; main styles, "
              f"with at least {args.main_style_pieces} validation pieces, in bold):", "",
              "| style | val pieces | model bits/note | vs n-gram | " + " | ".join(STATS) + " | "
              + " | ".join(PIECE_STATS) + " |", "|---" * (4 + len(STATS) + len(PIECE_STATS)) + "|"]
    lines += [f"| {f'**{s}**' if d['main'] else s} | {d['val_pieces']} | "
              f"{d['likelihood']['model']['bits_per_note']:.3f} | "
              f"{d['bits_per_note_vs_ngram']:.2f}x | "
              + " | ".join(f"{d['overlapping_area'][k]:.2f} ({d['reference_overlapping_area'][k]:.2f})"
                           for k in {**STATS, **PIECE_STATS}) + " |"
              for s, d in r["per_style"].items()]
    lines += ["", f"Control adherence ({args.control_samples} samples each, measured on the MIDI files):", "",
              "| control | share |", "|---|---|"]
    if "style" in control:
        lines.append(f"| --style: closest to the asked style's statistics, among the {len(r['main_styles'])} main "
                     f"styles (real pieces: {control['style']['reference']:.0%}) | "
                     f"{control['style']['share_closest_to_asked_style']:.0%} |")
    lines += [f"| --bars {args.eval_bars}: ends in its last bar | "
              f"{control['bars']['share_ending_in_the_last_bar']:.0%} |",
              f"| --seconds {args.eval_seconds:g}: ends within one bar of it | "
              f"{control['seconds']['share_within_one_bar']:.0%} |",
              f"| --key \"{args.eval_key}\" --pitch_range {','.join(map(str, args.eval_pitch_range))}: no note outside | "
              f"{control['key_and_range']['share_with_no_note_outside']:.0%} |"]
    if r["listening"]:
        lines += ["", f"What a listener hears, per main style: {args.control_samples} samples asked for as many "
                  "bars as the style's validation pieces have (their median) against those whole pieces, by the same "
                  "code (voices: the parts most of the style's pieces have; parallels: perfect fifths and octaves "
                  "per 100 beat-to-beat moves of all voices; the last two for four voices):", "",
                  "| style | bars | voices | " + " | ".join(title for _, title, _ in LISTENED) + " |",
                  "|---|---|---|" + "---|" * len(LISTENED)]
        for s, d in r["listening"].items():
            for name, a in (("", d["samples"]), (", its defaults", d.get("samples_defaults"))):
                if a is not None:  # (eval.json of before lacks the newer measures: shown as –)
                    lines.append(f"| {s}{name} | {d['bars']} | {a['voices']} | "
                                 + " | ".join(f"{shown(a.get(k), f)} ({shown(d['real'].get(k), f)})"
                                              for k, _, f in LISTENED) + " |")
        lines.append("(samples, and in brackets the real pieces)")
    if g := r.get("given_material"):
        lines += given_markdown(g)
    if r.get("against_originals"):
        lines += originals_markdown(r, args)
    runs = lambda v: f"{max(v)} ({np.median(v):g})"
    yes = lambda b: "yes" if b else "**no**"
    twice, within = memo["twice_reference_median_run"], memo["longest_runs_within_twice_reference_median"]
    lines += ["", f"Copying: the longest run each of {len(memo['longest_token_run'])} samples shares with train.bin, "
              f"beside as many validation pieces cut the same way (music never trained on, which shares scales, "
              "cadences and tunes found in two collections):", "", "| | samples | validation pieces |", "|---|---|---|",
              f"| share with a run of {args.memorization_threshold} tokens or more | "
              f"{memo['share_at_or_above_threshold']:.1%} | {memo['reference_share_at_or_above_threshold']:.1%} |",
              f"| longest run in tokens, max (median) | {runs(memo['longest_token_run'])} | "
              f"{runs(memo['reference_longest_token_run'])} |",
              f"| longest run in note events, max (median) | {runs(memo['longest_note_run'])} | "
              f"{runs(memo['reference_longest_note_run'])} |", "",
              f"At most a third of the reference's share: {yes(memo['share_within_a_third_of_reference'])}; no run "
              f"longer than twice the reference's median ({twice['tokens']:g} tokens, {twice['note_events']:g} note "
              f"events): {yes(within['tokens'])}, {yes(within['note_events'])}.",
              "", "![histograms](eval_histograms.png)", ""]
    return "\n".join(lines)


def originals_markdown(r, args):
    """eval.md's section on each main style against its training originals."""
    pct = lambda v: "–" if v is None else f"{v:.0%}"
    which = ("train.bin without its augmented copies" if r["originals_known"] else "every piece of train.bin, copies "
             "included: this data was prepared before meta.json said where they are")
    lines = ["", f"Each main style against every training original of it ({which}), "
             f"all cut to {args.max_new_tokens} tokens: {args.style_samples} samples asked for the style, and in "
             "brackets the style's validation pieces (never trained on) in their place. Overlapping areas of the "
             "per-piece statistics; the share of onsets with all voices sounding (after the slash: the originals' "
             "own); how often a cross-validated logistic regression on the pieces' measures tells the samples from as "
             "many originals, the model alone, then with the style's defaults (in brackets: two halves of the "
             "originals, which it cannot tell apart):", "",
             "| style | originals | " + " | ".join(PIECE_STATS) + " | onsets with all voices | classifier accuracy: "
             "alone / defaults |", "|---" * (4 + len(PIECE_STATS)) + "|"]
    for style, d in r["against_originals"].items():
        o = d["onsets_with_all_voices"]
        lines.append(f"| {style} ({d['voices']} voices) | {d['originals']} | "
                     + " | ".join(f"{d['overlapping_area'][k]:.2f} ({d['reference_overlapping_area'][k]:.2f})"
                                  for k in PIECE_STATS)
                     + f" | {pct(o['samples'])} ({pct(o['validation'])}) / {pct(o['originals'])} | "
                     f"{pct(d['classifier_accuracy'])} / {pct(d.get('classifier_accuracy_defaults'))} "
                     f"({pct(d['reference_classifier_accuracy'])}) |")
    return lines


def given_markdown(g):
    """eval.md's section on harmonizing and filling in."""
    h, pct = g["harmonized"], lambda v: "–" if v is None else f"{v:.0%}"
    rng = lambda r: " / ".join("–" if v is None else f"{v[0]:.0f}-{v[1]:.0f}" for v in r["voice_ranges"][1:])
    lines = ["", f"Given material, on {g['pieces']} validation pieces of {g['style']} (four parts), never trained on: "
             f"each soprano harmonized {g['samples_per_piece']} times, forced by the mask at its onsets (also with "
             "the style's defaults: its rules of part writing and sampling knobs) and, where the run was trained "
             "with given material, also shown ahead of where it sounds; the real pieces by the same code:", "",
             "| | melody kept | beats with four notes | parallels per 100 moves | ends on the tonic triad | "
             "alto / tenor / bass range (median lowest-highest) |", "|---|---|---|---|---|---|"]
    for name, d in h.items():
        par = d["parallels_per_100_moves"]
        lines.append(f"| {name} | {pct(d.get('melody_kept', 1.0))} | {d['full_beats']:.0%} | "
                     f"{'–' if par is None else f'{par:.1f}'} | {d['ends_on_tonic']:.0%} | {rng(d)} |")
    f = g["infill"]
    lines += ["", f"Filled in ({f['span']}; {f['samples']} samples): every note outside the gap kept in "
              f"{pct(f['all_other_notes_kept'])}, no new note ringing past the gap in "
              f"{pct(f['no_new_note_past_the_gap'])}.", "", "Bits per note the sampler pays for the notes it writes "
              "(the real pieces scored under the mask that draws them; a forced token costs nothing):", "",
              "| | bits/note |", "|---|---|"]
    lines += [f"| {name} | {b:.3f} |" for name, b in g["bits_per_note"].items()]
    return lines


EVAL_FILES = ("eval.json", "eval.md", "eval_histograms.png")  # what an evaluation writes into the run folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, help in [("ngram", "the order of the n-gram baseline"),
                       ("ngram_max_tokens", "fit the n-gram on at most this many training tokens"),
                       ("memorization_threshold", "tokens"),
                       ("control_samples", "samples per style and per control measured"),
                       ("eval_bars", "the --bars target whose adherence is measured"),
                       ("eval_seconds", "the --seconds target measured"),
                       ("main_style_pieces", "validation pieces that make a style a main one"),
                       ("eval_key", "the --key measured"), ("eval_pitch_range", "the --pitch_range measured, LOW,HIGH"),
                       ("given_pieces", "validation chorales whose sopranos are harmonized and middles filled in"),
                       ("given_samples", "samples of each"),
                       ("style_samples", "samples per main style compared with every training original of it")]:
        configurator.option(parser, name, help)
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace the run folder's earlier evaluation ({', '.join(EVAL_FILES)})")
    parser.add_argument("--listen", nargs="+", help="MIDI files or encodings (.txt), or folders of them: print what a "
                                                    "listener hears in them (the measures of listen()) and exit")
    parser.add_argument("--voices", type=configurator.typed("parts", 4), default=4,
                        help="with --listen: the voices a beat should sound")
    parser.add_argument("--against", nargs="+", help="with --listen: real pieces (MIDI files or encodings, or folders "
                                                     "of them) to measure alike and to tell the files from by a "
                                                     "classifier")
    parser.add_argument("--keep", metavar="DEST", help="with --listen and --against: copy into DEST (a new folder) the "
                                                       "files a teacher keeps beside the real pieces (kept_pieces), "
                                                       "e.g. samples' encodings to fine-tune on (MODEL.md)")
    parser.add_argument("--keep_range", type=configurator.typed("keep_range", False), default=False,
                        help="with --keep and --voices 4: bound the voices' range too (kept_pieces' `ranges`)")
    parser.add_argument("--keep_opening", type=configurator.typed("keep_opening", False), default=False,
                        help="with --keep and more than one voice: keep only pieces that begin on the tonic triad "
                             "too (kept_pieces' `opening`)")
    parser.add_argument("--cadence", nargs="+", help="encodings (.txt) of pieces the run never trained on: how well "
                                                     "it knows each one's last bar, with and without its opening "
                                                     "in view, against its other bars (teacher-forced), and exit")
    parser.add_argument("--rules", nargs="+", help="encodings (.txt) of pieces of styles with rules of part writing "
                                                   "(config.STYLE_DEFAULTS): teacher-forced, how often the pieces "
                                                   "break each rule and the run's probability on what it forbids, "
                                                   "and exit")
    parser.add_argument("--repeats", nargs="+", help="encodings (.txt) of pieces: teacher-forced, what the run pays "
                                                     "for bars that repeat earlier ones, and for bars written again "
                                                     "(can it copy?), and exit")
    parser.add_argument("--styles", nargs="+", help="encodings (.txt) of pieces the run never trained on: the style "
                                                    "it finds likeliest for each (as a piece given without --style "
                                                    "draws its samples' style), per style named, and exit")
    parser.add_argument("--forms", nargs="+", help="MIDI files or encodings (.txt) of real pieces: print each style's "
                                                   "forms (measures.piece_form) and keys (measures.piece_key), as "
                                                   "--form auto and --key auto draw them, and exit")
    args = configurator.cli(parser, ["out_dir", "data_dir", "num_samples", "max_new_tokens", "temperature",
                                     "rhythm_temperature", "top_k", "top_p", "seed", "device"], argv,
                            own={"num_samples": config.eval_num_samples})
    if why := style_defaults_problem(config.STYLE_DEFAULTS):
        die(why)
    if args.against and not args.listen:
        die("--against names the real pieces to set beside --listen's files: give --listen FILES too")
    if args.keep and not args.against:
        die("--keep picks --listen's files by the real pieces' measures: give --listen FILES --against REAL too")
    if args.keep_range and not (args.keep and args.voices == 4):
        die(f"--keep_range bounds the range of four voices among --keep's picks: give --keep DEST and --voices 4 (not "
            f"{args.voices})" if args.keep else "--keep_range bounds --keep's picks: give --keep DEST too")
    if args.keep_opening and not (args.keep and args.voices > 1):
        die("--keep_opening keeps --keep's picks that begin on their tonic triad: give --keep DEST and more than one "
            f"voice (--voices {args.voices})" if args.keep else "--keep_opening bounds --keep's picks: give --keep "
            "DEST too")
    if args.keep and Path(args.keep).exists():
        die(f"--keep {args.keep}: already there; name a new folder (nothing in it is overwritten)")
    if args.keep:
        writable_dir(args.keep, "--keep", create=False)
    if args.listen:
        return listen_to_files(args.listen, args.voices, args.against, args.keep, args.keep_range, args.keep_opening)
    if args.forms:
        return forms_of_files(args.forms)
    run = Path(args.out_dir)
    device, _ = pick_device(args.device, "float32")
    model, tok, ckpt = load_run(run, device)
    if args.cadence:
        return cadence_of_files(model, tok, args.cadence, device)
    if args.rules:
        return rules_of_files(model, tok, args.rules, device)
    if args.repeats:
        return repeats_of_files(model, tok, args.repeats, device)
    if args.styles:
        return styles_of_files(model, tok, args.styles)
    writable_dir(run, "the run folder (eval.json goes there)")
    eval_key_controls(args, tok.spec)  # checked before any work
    if (earlier := [name for name in EVAL_FILES if (run / name).exists()]) and not args.overwrite:
        die(f"{run} holds an earlier evaluation ({', '.join(earlier)}): give --overwrite to replace it, or copy it "
            f"away first")
    splits, meta, data_tokenizer = read_data(args.data_dir)
    if json.loads(data_tokenizer) != json.loads((run / "tokenizer.json").read_bytes()):
        die(f"{args.data_dir} was prepared with another tokenizer than {run}/tokenizer.json: evaluate on data prepared "
            f"with the run's tokenizer")
    report, hists = measure(args, model, tok, splits, meta, device)
    report = {"checkpoint": str(ckpt), **report}
    text, png = markdown(report, args, run.name), histograms_png(hists)
    # the three written one after the other once all are made: a kill falls between two of them only by a hair
    atomic_write(run / "eval_histograms.png", png)
    write_json(run / "eval.json", report)
    atomic_write(run / "eval.md", text)
    print(text)


KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # a tonic's name, by pitch class


def forms_of_files(paths, least=0.02, least_key=0.01):
    """evaluate.py --forms: per style (the encoding's, or a MIDI file's folder), how often each form is found in the
    pieces (measures.piece_form), and the forms of at least `least` of them as a row of config.STYLE_DEFAULTS
    (measures.form_shares); and its keys as the key analysis hears them (measures.piece_key), those of at least
    `least_key` of the pieces as the row's `keys` (--key auto draws them)."""
    forms, keys = defaultdict(Counter), defaultdict(Counter)
    for (notes, header), path in zip(*readable_pieces(paths, "--forms")):
        style = header.style if path.suffix.lower() == ".txt" else path.parent.name
        forms[style][piece_form(notes, header, Spec().sample_freq)] += 1
        tonic, mode = piece_key(notes)
        keys[style][f"{KEY_NAMES[tonic]} {mode}"] += 1
    for style, found in sorted(forms.items()):
        total = sum(found.values())
        print(f"{style}: {total} pieces, {len(found)} forms ('' none)\n" + "\n".join(
            f"  {form or '(none)':10s} {n:5d} {n / total:6.1%}" for form, n in found.most_common()))
        share = form_shares(found, least)
        print(f"  forms={share!r},  # % of the {total} pieces ({sum(found[f] for f in share)} of them in these forms)")
        share = {k: round(100 * n / total, 1) for k, n in keys[style].most_common() if n >= least_key * total}
        print(f"  keys={share!r},  # % of the {total} pieces ({sum(keys[style][k] for k in share)} of them in these "
              f"keys)")


def of_encodings(tok, paths, take):
    """[take(tokens, ids)] for the encodings (.txt) at `paths` (or in a folder among them) that this run's tokenizer
    reads, each other file (or one `take` raises ValueError on) one line that says why, the rest going on."""
    rows, (found, skipped) = [], files_among(paths, {".txt"})
    for line in skipped:
        print(f"skipped {line}")
    for path in found:
        try:
            tokens = text_to_tokens(read_text(path))
            if why := validate(tokens, tok.spec):
                raise ValueError(f"not an encoding this run reads (token {why[0]}: {why[1]})")
            rows.append(take(tokens, tok.encode(tokens)))
        except (OSError, ValueError) as e:
            print(f"skipped {path}: {reason(e)}")
    return rows


def cadence_of_files(model, tok, paths, device):
    """evaluate.py --cadence: cadence_bits over the encodings given, as one table."""
    rows = of_encodings(tok, paths, lambda tokens, ids: (len(ids), cadence_bits(model, tok.itos, ids,
                                                                                 header_end(tokens), device)))
    if not rows:
        die("--cadence: no encoding of this run's vocabulary among the files")
    views = [f"{v} tokens" for v in CADENCE_VIEWS] + ["a window"]
    mean = lambda key, some: f"{np.mean(xs):.2f} ({len(xs)})" if (xs := [r[key] for _, r in some if r.get(key)]) \
        else "–"
    print(f"{len(rows)} pieces, {np.median([n for n, _ in rows]):.0f} tokens (median); bits per note of the last "
          f"bar with the tokens before the piece's end in view (and START and the header), beside the other bars' "
          f"as training windows show them (in brackets: pieces)\n\n| | other bars | last bar: "
          + " | ".join(views) + " | the whole piece |\n|---|---|" + "---|" * (len(views) + 1))
    for name, some in ((f"all {len(rows)}", rows), ("those within one window", [x for x in rows if x[1]["fits"]]),
                       ("those longer (the whole: positions never trained)", [x for x in rows if not x[1]["fits"]])):
        print(f"| {name} | {mean('others', some)} | " + " | ".join(mean(v, some) for v in views)
              + f" | {mean('whole', some)} |")


def repeats_of_files(model, tok, paths, device):
    """evaluate.py --repeats: repeat_bits over the encodings given, as one table."""
    rows = of_encodings(tok, paths, lambda tokens, ids: repeat_bits(model, tok.itos, ids, header_end(tokens), device))
    if not rows:
        die("--repeats: no encoding of this run's vocabulary among the files")

    def cell(key):
        got = [r[key] for r in rows if r[key]]
        notes = sum(n for _, n in got)
        return f"{sum(x for x, _ in got) / notes:.2f} ({len(got)} pieces, {notes} notes)" if notes else "–"
    c = COPIED_BARS
    print(f"{len(rows)} pieces; bits per note, teacher-forced as training windows show them\n\n| bars | bits per "
          f"note |\n|---|---|\n| those repeating an earlier bar note for note | {cell('repeated')} |\n| the others "
          f"| {cell('others')} |\n| bars 2-{1 + c}, as written | {cell('first written')} |\n| the same bars "
          f"written again as bars {2 + c}-{1 + 2 * c} (a model that copies pays little) | {cell('written again')} |")


def styles_of_files(model, tok, paths):
    """evaluate.py --styles: for each encoding given, the style the run finds likeliest for it (mask.style_logits:
    P(style | START) P(piece | style), as a piece given without --style draws its samples' style), and the margin in
    nats of the style it names over the likeliest other, as one table per named style. A run whose style token has
    drifted from the real pieces of the style hears them as another (models/corpus/MODEL.md, "Round 17")."""
    styles = tok.spec.styles
    rows = of_encodings(tok, paths, lambda tokens, ids: (
        Header.of_tokens(tokens[:2]).style, style_logits(model, tok, tokens)[0].cpu()))
    if not rows:
        die("--styles: no encoding of this run's vocabulary among the files")
    print("| named style | pieces | heard as (pieces) | margin of the named style over the likeliest other, "
          "median (least), nats |\n|---|---|---|---|")
    for named in sorted({n for n, _ in rows}):
        some = [lo for n, lo in rows if n == named]
        heard = Counter(styles[int(lo.argmax())] for lo in some)
        k = styles.index(named)
        margins = [float(lo[k] - torch.cat([lo[:k], lo[k + 1:]]).max()) for lo in some]
        print(f"| {named} | {len(some)} | {', '.join(f'{s} {c}' for s, c in heard.most_common())} | "
              f"{np.median(margins):+.1f} ({min(margins):+.1f}) |")


RULE_FAMILIES = {"parallels and crossing": ("parallels", "crossing"), "the last bar's tonic triad": ("ending",),
                 "no rests": ("rests",), "the choir's range, spacing, leaps and repeats": ()}  # () : the choir's rules


def rules_of_files(model, tok, paths, device):
    """evaluate.py --rules: per rule of part writing that the pieces' styles take (style_rules), at each note where
    it forbids some pitches, teacher-forced: how often the piece takes one, and the run's mean probability on them
    (where the piece keeps the rule, where it breaks it). Does the model know the rule, or sample it anyway?"""
    def styled(tokens, ids):
        style = tokens[1].removeprefix("style:") if len(tokens) > 1 and kind(tokens[1]) == "style" else None
        if style_rules(style) is None:
            raise ValueError(f"its style ({style}) takes no rules of part writing by default")
        return style, (ids, header_end(tokens))

    pieces = defaultdict(list)  # style -> token ids
    for style, piece in of_encodings(tok, paths, styled):
        pieces[style].append(piece)
    if not pieces:
        die("--rules: no encoding of a style with rules of part writing among the files")
    note = torch.tensor([kind(t) == "n" for t in tok.itos], device=device)
    print("teacher-forced, at each note where a rule forbids some pitches (the key from the notes so far, as the "
          "sampler reckons it)\n\n| style | rule | notes ruled | the piece takes a forbidden pitch | the run's "
          "probability on them | where the piece keeps the rule | where it breaks it |\n|---|---|---|---|---|---|---|")
    for style, found in sorted(pieces.items()):
        probs = [next_token_probs(model, ids, keep, device) for ids, keep in found]
        ruled = style_rules(style)
        for family, rules in RULE_FAMILIES.items():
            keep_rules = tuple(r for r in ruled.voice_leading_rules if r in rules) if ruled.voice_leading else ()
            if not (keep_rules or (not rules and ruled.choir)):
                continue
            controls = replace(ruled, voice_leading=bool(keep_rules), voice_leading_rules=keep_rules,
                               choir=not rules and ruled.choir)
            mass, broke = [], []
            for (ids, _), p, (at, packed, broken) in zip(found, probs, rule_breaks(tok, [i for i, _ in found],
                                                                                      controls, device)):
                forbidden = torch.from_numpy(np.unpackbits(packed, axis=1)[:, :tok.vocab_size].astype(bool))
                on_note = note[torch.as_tensor(ids, device=device)[torch.from_numpy(at)]].cpu().numpy()
                mass += ((p[torch.from_numpy(at)] * forbidden.to(device)).sum(1).cpu().numpy()[on_note]).tolist()
                broke += broken[on_note].tolist()
            mass, broke = np.array(mass), np.array(broke, dtype=bool)
            pct = lambda x: f"{100 * x.mean():.1f} %" if len(x) else "–"
            print(f"| {style} ({len(found)}) | {family} | {len(mass):,} | {pct(broke)} | {pct(mass)} | "
                  f"{pct(mass[~broke])} | {pct(mass[broke])} |")


def files_among(paths, suffixes):
    """(the files `paths` names, a folder among them walked for files of `suffixes` as encode_all.py walks its
    folders, ["path: why" of each left out]): a path that is not there, a link back up, a folder not listed. In a
    folder, a sample.py output's MIDI file and its encoding (X.mid, X.txt) are one piece, taken once, as the text."""
    found, problems = [], []
    for path in map(Path, paths):
        if path.is_dir():
            walked = [p for _, p in find_files([path], suffixes, problems)]
            texts = {p.with_suffix("") for p in walked if p.suffix.lower() == ".txt"}
            found += [p for p in walked if p.suffix.lower() == ".txt" or p.with_suffix("") not in texts]
        elif path.exists():
            found.append(path)
        else:
            problems.append((path, "no such file or folder"))
    return found, [f"{path}: {why}" for path, why in problems]


def readable_pieces(paths, flag):
    """([(notes of pitched parts, Header)], [their paths]) of MIDI files or encodings, those in a folder given among
    them too (walked as encode_all.py walks its folders); a file with no pitched notes (empty, drums only,
    unreadable) is named with its reason and left out, and with none at all, one line."""
    spec, pieces, kept = Spec(), [], []
    found, skipped = files_among(paths, MIDI_SUFFIXES | {".txt"})
    if not found and not skipped:
        die(f"{flag}: no MIDI file (.mid, .midi) or encoding (.txt) in {' '.join(map(str, paths))}")
    for path in found:
        try:
            notes, header, dropped = read_music(path, spec, scores=False)
        except (OSError, ValueError) as e:
            skipped.append(f"{path}: {reason(e)}")
            continue
        except Exception as e:  # a damaged file is a ValueError; any other failure of the reader is told the same way
            skipped.append(f"{path}: not a readable MIDI file ({reason(e)})")
            continue
        pitched = [n for n in notes if header.parts[min(n.part, len(header.parts) - 1)] != DRUMS]
        if pitched:
            pieces.append((pitched, header))
            kept.append(path)
        else:
            changes = described_changes(dropped, spec)  # (a file of notes all outside the pitch range, say)
            skipped.append(f"{path}: no pitched notes to hear (" + ("drums only" if notes else "no notes at all")
                           + (f" once read: {changes})" if changes else ")"))
    for line in skipped:
        print(f"skipped {line}")
    if not pieces:
        die(f"{flag}: nothing measured: none of the {len(skipped)} files has pitched notes that can be read")
    return pieces, kept


def listen_to_files(paths, voices, against=None, keep=None, keep_range=False, keep_opening=False):
    """evaluate.py --listen: the measures of listen() over the pitched notes of MIDI files or encodings, as one
    table; a file with none (empty, drums only, unreadable) is named with its reason and left out. With `against`
    (real pieces): their row too, and how often a classifier on the pieces' measures (MEASURES) tells the files
    from as many of them, beside two halves of them (about 50 %: what it cannot tell apart), drawn by a fixed seed.
    With `keep` (a new folder): the files kept_pieces picks are copied there (with `keep_range`, the voices' range
    among its bounds; with `keep_opening`, only those that begin on the tonic triad), and their row is printed too."""
    sf, (files, file_paths) = Spec().sample_freq, readable_pieces(paths, "--listen")
    rows = [("files", files)]
    rows += [("real", readable_pieces(against, "--against")[0])] if against else []
    if keep:
        picked = kept_pieces(files, rows[1][1], voices, sf, ranges=keep_range, opening=keep_opening)
        rows += [("kept", [files[i] for i in picked])] if picked else []
        copy_files([file_paths[i] for i in picked], Path(keep))
        print(f"kept {len(picked)} of {len(files)} files in {keep}")
    measured = [(name, pieces, listen(pieces, voices, sf)) for name, pieces in rows]
    heard = [(k, title.replace("all voices", f"{voices} notes"), f) for k, title, f in LISTENED if k in measured[0][2]]
    print(f"| | pieces | {' | '.join(title for _, title, _ in heard)} |\n|---|---|{'---|' * len(heard)}")
    for name, pieces, r in measured:
        print(f"| {name} | {len(pieces)} | {' | '.join(shown(r[k], f) for k, _, f in heard)} |")
    if against:
        (_, files, _), (_, real, _) = measured[:2]
        features = lambda ps: [piece_measures(n, h, voices, sf) for n, h in ps]
        a, b, half = features(files), features(real), len(real) // 2
        b = [b[i] for i in np.random.default_rng(0).permutation(len(b))]  # halves and a sample of them by chance
        told, halves = logistic_accuracy(a, b[:len(a)]), logistic_accuracy(b[:half], b[half:2 * half])
        print(f"told apart from as many real pieces by a classifier: {shown(told, '.0%')} (two halves of the real "
              f"pieces: {shown(halves, '.0%')})" + ("; – too few pieces to tell" if None in (told, halves) else ""))


def copy_files(paths, dest):
    """Copy files into a new folder, built beside it and swapped in whole (no half-copied folder is ever seen)."""
    tmp = dest.parent / temp_name(dest.name, "tmp")
    try:
        tmp.mkdir(parents=True)
        for path in paths:
            if (tmp / path.name).exists():
                die(f"--keep: two files named {path.name}; {dest} is not written")
            shutil.copyfile(path, tmp / path.name)
        swap_in(tmp, dest)
    except OSError as e:
        die(f"--keep: {dest} is not written ({why_not_written(e)})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# listen()'s measures as table columns: (key, title, format)
LISTENED = [("full_beats", "beats with all voices sounding", ".0%"),
            ("parallels_per_100_moves", "parallel fifths and octaves per 100 moves", ".1f"),
            ("begins_on_tonic", "begins on the tonic triad", ".0%"),
            ("ends_on_tonic", "ends on the tonic triad", ".0%"),
            ("ends_not_a_triad", "last chord not a triad", ".0%"),
            ("comes_home", "last chord on the first chord's root", ".0%"),
            ("authentic_cadence", "last chord reached from its dominant (V-I)", ".0%"),
            ("close_has_third", "last chord with its third (no bare fifth)", ".0%"),
            ("opening_has_third", "first chord with its third", ".0%"),
            ("close_struck_once", "last chord struck once (not again each beat)", ".0%"),
            ("repeated_bars", "bars repeating an earlier bar", ".0%"),
            ("repeated_notes", "notes repeating their part's last pitch", ".0%"),
            ("frozen_parts", "pieces with a part repeating over half its notes", ".0%"),
            ("returning_notes", "notes going back to their part's pitch before last (a b a)", ".0%"),
            ("other_lengths", "notes not of their piece's commonest length", ".0%"),
            ("looped", "pieces looping one phrase throughout", ".0%"),
            ("outside_key", "notes outside the key", ".1%"), ("minor", "pieces in a minor key", ".0%"),
            ("leaps_per_100_moves", "leaps over an octave per 100 moves of a voice", ".1f"),
            ("outside_range", "four-note beats with a voice outside its range", ".1%"),
            ("wide_per_100_beats", "upper voices over an octave apart, per 100 four-note beats", ".1f")]


def shown(value, fmt):
    return "–" if value is None else format(value, fmt)


def histograms_png(hists):
    """The histograms of samples beside validation pieces, as PNG bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, math.ceil(len(hists) / 2), figsize=(4.7 * math.ceil(len(hists) / 2), 7))
    for ax, (name, (a, b)) in zip(axes.flat, hists.items()):
        ax.bar(np.arange(len(b)), b, alpha=0.5, label="validation")
        ax.bar(np.arange(len(a)), a, alpha=0.5, label="samples")
        ax.set_title(f"{name} (overlap {overlapping_area(a, b):.2f})")
        ax.legend(fontsize="small")
    return figure_png(fig)


if __name__ == "__main__":
    batch.main(main)
