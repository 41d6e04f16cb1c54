"""The measures of notes, as a music teacher and a statistician count them: pure functions of note lists (no torch, no
model), the same code for samples and for real pieces, so that a gap between the two means something. evaluate.py
samples and reports them; `evaluate.py --listen` applies listen() to any MIDI file.

- Statistics (Yang & Lerch, 2018): histograms of pitch class, pitch, duration, inter-onset interval, notes per bar
  and polyphony, and per-piece values (a piece's mean or span), compared by their overlapping area.
- What a listener hears: voices sounding per beat, parallel perfect fifths and octaves, the final chord against the
  key's tonic triad, repeated bars, notes repeating their part's last pitch; each voice's range.
- A classifier (logistic regression) that tries to tell two sets of pieces apart by their per-piece measures.
"""
from bisect import bisect_right
from collections import Counter, defaultdict

import numpy as np

import config
from controls import KEY_STEPS
from encoding_decoding import as_note

STATS = {  # name -> (number of bins, values of one piece from its notes, header and grid steps per quarter note)
    "pitch_class": (12, lambda notes, header, sf: [n.pitch % 12 for n in notes]),
    "pitch": (128, lambda notes, header, sf: [n.pitch for n in notes]),
    "duration": (33, lambda notes, header, sf: [min(n.dur, 32) for n in notes]),
    "inter_onset_interval": (33, lambda notes, header, sf: np.minimum(np.diff(sorted({n.start for n in notes})), 32)),
    "notes_per_bar": (41, lambda notes, header, sf: [min(len(b), 40) for b in bar_contents(notes, header, sf) if b]),
    "polyphony": (11, lambda notes, header, sf: [min(c, 10) for c in polyphony(notes)]),
}
PIECE_STATS = {  # one value per piece (its mean or its span), so that whole pieces are compared, per style too
    "piece_notes_per_bar": (41, lambda *piece: [min(round(np.mean(STATS["notes_per_bar"][1](*piece))), 40)]),
    "piece_polyphony_x2": (21, lambda notes, header, sf: [min(round(2 * np.mean(polyphony(notes))), 20)]),
    "piece_pitch_range": (89, lambda *piece: [np.ptp(STATS["pitch"][1](*piece))]),
    "piece_mean_pitch": (128, lambda *piece: [round(np.mean(STATS["pitch"][1](*piece)))]),
}
# --- what a listener hears: voices, parallels, the final chord, repeated bars (the same code for samples and real
# pieces; the voices of a beat are its sounding notes, highest first, so one-part MIDI files are measured alike)


def beat_chords(notes, sample_freq):
    """Per beat (quarter note) from the first onset to the last end: the pitches sounding on it, highest first."""
    notes = list(map(as_note, notes))
    if not notes:
        return []
    first, last = min(n.start for n in notes), max(n.end for n in notes)
    beats = range(first - first % sample_freq, last, sample_freq)
    return [sorted((n.pitch for n in notes if n.start <= b < n.end), reverse=True) for b in beats]


def full_beats(chords, voices):
    """The share of beats with `voices` notes sounding."""
    return float(np.mean([len(c) == voices for c in chords])) if chords else 0.0


def parallels(chords, voices):
    """(parallel perfect fifths and octaves, beat-to-beat moves): between two beats that both sound `voices` notes,
    a pair of voices that both move the same way and stand a perfect fifth or octave (or unison) apart, the same
    before and after, is one parallel; a move is one such pair of beats."""
    count = moves = 0
    for a, b in zip(chords, chords[1:]):
        if len(a) != voices or len(b) != voices:
            continue
        moves += 1
        for i in range(voices):
            for j in range(i + 1, voices):
                up, down = b[i] - a[i], b[j] - a[j]
                same = (a[i] - a[j]) % 12 == (b[i] - b[j]) % 12 and (a[i] - a[j]) % 12 in (0, 7)
                count += same and up != 0 and (up > 0) == (down > 0)
    return count, moves


def piece_key(notes):
    """(tonic pitch class, "major" or "minor") of a piece's notes by music21's key analysis (Krumhansl-Schmuckler,
    with Aarden's profiles), each note weighted by its length; None for no notes."""
    from music21 import note, stream
    notes = list(map(as_note, notes))
    if not notes:
        return None
    s = stream.Stream()
    for n in notes:
        el = note.Note(n.pitch)
        el.quarterLength = max(n.dur, 1) / 4
        s.insert(n.start / 4, el)
    key = s.analyze("key")
    return key.tonic.pitchClass, key.mode


def tonic_chord(pitch_classes, key, picardy=False):
    """Whether these pitch classes are the tonic triad of `key` (tonic, mode): they hold the tonic and lie in the
    triad (with `picardy`, a major third allowed in minor)."""
    tonic, mode = key
    triad = {tonic, (tonic + 7) % 12, (tonic + (4 if mode == "major" else 3)) % 12}
    triad |= {(tonic + 4) % 12} if picardy and mode == "minor" else set()
    return tonic in pitch_classes and pitch_classes <= triad


def ends_on_tonic(notes, key=None):
    """Whether the last onset's chord is the tonic triad of the piece's key (piece_key, unless given), a major third
    allowed in minor (Picardy)."""
    notes = list(map(as_note, notes))
    return bool(notes) and tonic_chord(final_pitch_classes(notes), key or piece_key(notes), picardy=True)


def begins_on_tonic(notes, key=None):
    """Whether the first onset's chord is the tonic triad of the piece's key (piece_key, unless given): where the
    piece sets out from is where it comes home to (Bach's chorales: 78 % of those in four parts)."""
    notes = list(map(as_note, notes))
    return bool(notes) and tonic_chord(first_pitch_classes(notes), key or piece_key(notes))


def comes_home(notes):
    """Whether the last onset's chord is a triad on the root of the first onset's triad (its mode may change: a
    Picardy third, a minor opening's major close): where the piece set out from, wherever the key analysis hears it
    (the demo's 413 Bach chorales: 87 %)."""
    notes = list(map(as_note, notes))
    root = triad_root(first_pitch_classes(notes)) if notes else None
    return root is not None and triad_root(final_pitch_classes(notes)) == root


def triad_root(pitch_classes):
    """The root of the major or minor triad these pitch classes spell (all three, root and fifth, or root and third,
    any doubled), or None: a dissonance (a seventh, a second, a diminished or augmented triad) or a single pitch."""
    for root in range(12):
        above = {(p - root) % 12 for p in pitch_classes}
        if {0, 7} <= above <= {0, 3, 4, 7} and not {3, 4} <= above or above in ({0, 3}, {0, 4}):
            return root
    return None


LAST_CHORDS = ("tonic", "dominant", "subdominant", "other triad", "fewer than 3 notes", "not a triad")


def final_pitch_classes(notes):
    """The pitch classes sounding at a piece's last onset (Notes)."""
    last = max(n.start for n in notes)
    return {n.pitch % 12 for n in notes if n.start <= last < n.end}


def first_pitch_classes(notes):
    """The pitch classes struck at a piece's first onset (Notes)."""
    first = min(n.start for n in notes)
    return {n.pitch % 12 for n in notes if n.start == first}


def last_chord(notes, key=None):
    """What the chord sounding at the last onset is, by the piece's key (piece_key, unless given): the tonic triad
    (ends_on_tonic), a triad on the dominant (a half cadence) or the subdominant, another triad, fewer than three
    different pitches, or not a triad at all (LAST_CHORDS). Bach's chorales end on the tonic or, a few, the
    dominant; never on a dissonance."""
    notes = list(map(as_note, notes))
    if not notes:
        return "fewer than 3 notes"
    key = key or piece_key(notes)
    if ends_on_tonic(notes, key):
        return "tonic"
    final = final_pitch_classes(notes)
    if len(final) < 3:
        return "fewer than 3 notes"
    root = triad_root(final)
    if root is None:
        return "not a triad"
    return {7: "dominant", 5: "subdominant"}.get((root - key[0]) % 12, "other triad")


def full_triad(pitch_classes):
    """Whether these pitch classes are a triad that sounds its third, not a bare fifth or octave."""
    root = triad_root(pitch_classes)
    return root is not None and bool({(root + 3) % 12, (root + 4) % 12} & pitch_classes)


def close_has_third(notes):
    """Whether the last onset's chord (Notes) is a triad that sounds its third: Bach's chorales close with it in 199
    of the demo's first 200 (models/corpus/MODEL.md)."""
    notes = list(map(as_note, notes))
    return bool(notes) and full_triad(final_pitch_classes(notes))


def close_struck_once(notes):
    """Whether the last chord (Notes) is struck once: the onset before the last one sounds a pitch class outside the
    last onset's triad (either third; its pitch classes where it is no triad), so the close is not that chord struck
    again beat after beat in other voicings (Bach's chorales: 198 of the demo's first 200; Bach's defaults struck it
    again in 85 of 96 before the rule that holds it)."""
    notes = list(map(as_note, notes))
    onsets = sorted({n.start for n in notes})
    if len(onsets) < 2:
        return bool(onsets)
    sounding = lambda t: {n.pitch % 12 for n in notes if n.start <= t < n.end}
    last, root = sounding(onsets[-1]), triad_root(sounding(onsets[-1]))
    chord = last if root is None else {root, (root + 3) % 12, (root + 4) % 12, (root + 7) % 12}
    return not sounding(onsets[-2]) <= chord


def opening_has_third(notes):
    """Whether the first onset's chord (Notes) is a triad that sounds its third (Bach's chorales: 194 of 200)."""
    notes = list(map(as_note, notes))
    return bool(notes) and full_triad(first_pitch_classes(notes))


CADENCES = ("authentic", "plagal", "other")


def cadence(notes):
    """How the last chord is reached (Notes): "authentic" where the latest chord before it with a note outside the
    last chord's triad (any third) holds the leading tone (a semitone under its root) and lies in the dominant's
    seventh chord, a suspended root allowed (V or V7 to I, and vii to I), "plagal" where it lies in the
    subdominant's triad, its third major or minor (IV to I), else "other"; None where the last chord is no triad.
    Bach's chorales reach their last chord from its dominant in 83 % of the demo's first 200 (models/corpus/MODEL.md)."""
    notes = list(map(as_note, notes))
    root = triad_root(final_pitch_classes(notes)) if notes else None
    if root is None:
        return None
    last = max(n.start for n in notes)
    for t in sorted({n.start for n in notes if n.start < last}, reverse=True):
        above = {(n.pitch - root) % 12 for n in notes if n.start <= t < n.end}
        if not above <= {0, 3, 4, 7}:
            if 11 in above and above <= {7, 11, 2, 5, 0}:
                return "authentic"
            return "plagal" if 5 in above and above <= {5, 8, 9, 0} else "other"
    return "other"


def outside_key(notes, key):
    """The share of a piece's notes whose pitch class is not in its key (KEY_STEPS above the key's tonic)."""
    if not notes or key is None:
        return 0.0
    tonic, mode = key
    return float(np.mean([(as_note(n).pitch - tonic) % 12 not in KEY_STEPS[mode] for n in notes]))


def out_of_range(chords, ranges):
    """(four-note beats with a voice outside its range, four-note beats): the voices of a beat are its notes
    highest first, `ranges` ((low, high) MIDI pitches) soprano to bass."""
    full = [c for c in chords if len(c) == len(ranges)]
    return sum(any(not lo <= p <= hi for p, (lo, hi) in zip(c, ranges)) for c in full), len(full)


def wide_upper_voices(chords, voices=4):
    """(beats of `voices` notes whose upper voices (soprano and alto, alto and tenor) stand more than an octave
    apart, beats of `voices` notes)."""
    full = [c for c in chords if len(c) == voices]
    return sum(any(c[i] - c[i + 1] > 12 for i in range(voices - 2)) for c in full), len(full)


def leaps(chords, voices):
    """(moves of a voice by more than an octave from one beat of `voices` notes to the next such beat, moves)."""
    pairs = [(a, b) for a, b in zip(chords, chords[1:]) if len(a) == len(b) == voices]
    return sum(abs(x - y) > 12 for a, b in pairs for x, y in zip(a, b)), voices * len(pairs)


def part_lines(notes):
    """Each part's pitches in onset order, an onset's highest note standing for a chord in one part: {part: [pitch]}."""
    top = {}
    for n in map(as_note, notes):
        top[n.part, n.start] = max(top.get((n.part, n.start), n.pitch), n.pitch)
    lines = defaultdict(list)
    for (part, _), pitch in sorted(top.items()):
        lines[part].append(pitch)
    return lines


def repeated_notes(notes, by_part=False):
    """(notes that strike again the pitch their part just had, notes after their part's first), or with `by_part`
    a dict of them per part: each part's notes in onset order (part_lines). A voice that only repeats its note can
    neither move in parallels nor cross: counted beside those, it shows what a rule avoided by standing still."""
    lines = part_lines(notes)
    counts = {part: (sum(a == b for a, b in zip(line, line[1:])), len(line) - 1) for part, line in lines.items()}
    return counts if by_part else (sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values()))


def returning_notes(notes):
    """(notes that go back to the pitch their part had before its last, a b a, notes after their part's second;
    part_lines' lines). A neighbour note (C D C) is one; a voice rocking between two pitches on every beat (C F C F
    C F: a bass swinging between the tonic and the subdominant, or the whole texture between two chords) makes one
    of every note. Bach's chorales: 14.7 % of a voice's notes."""
    lines = part_lines(notes).values()
    return (sum(line[i] == line[i - 2] != line[i - 1] for line in lines for i in range(2, len(line))),
            sum(max(len(line) - 2, 0) for line in lines))


def other_lengths(notes):
    """(notes whose length is not the piece's commonest, notes): how much the rhythm varies. Bach's chorales move in
    crotchets with quavers passing between, about 4 notes of 10 not crotchets; a hymn-book texture of crotchets
    throughout, or a tune in running quavers from end to end, has none."""
    lengths = Counter(as_note(n).dur for n in notes)
    return (len(notes) - max(lengths.values(), default=0), len(notes))


def worst_part_repeats(notes, least=8):
    """The largest share of its notes that a part (with at least `least` notes after its first) strikes again the
    pitch it just had (repeated_notes); 0 where no part has that many."""
    return max((struck / after for struck, after in repeated_notes(notes, by_part=True).values() if after >= least),
               default=0.0)


def frozen_part(notes, share=0.5):
    """Whether a part of the piece strikes again its last pitch in over `share` of its notes (worst_part_repeats): a
    voice standing still while the others move, which 2-4 % of Bach's chorales have."""
    return worst_part_repeats(notes) > share


def bar_contents(notes, header, sample_freq):
    """Each bar's notes as a sorted tuple of (onset in the bar, pitch, duration, part), for every bar to the end."""
    notes = list(map(as_note, notes))
    n_bars = max(header.bars, header.bars_needed(notes, sample_freq))
    lines = header.bar_lines(sample_freq, n_bars)
    bars = defaultdict(list)
    for n in notes:
        k = bisect_right(lines, n.start) - 1
        bars[k].append((n.start - lines[k], n.pitch, n.dur, n.part))
    return [tuple(sorted(bars[k])) for k in range(n_bars)]


def repeated_bars(notes, header, sample_freq):
    """The share of a piece's bars (those with an onset) that repeat an earlier bar note for note (onsets in the
    bar, pitches, durations, parts)."""
    bars = [b for b in bar_contents(notes, header, sample_freq) if b]
    return sum(b in bars[:k] for k, b in enumerate(bars)) / len(bars) if bars else 0.0


def piece_form(notes, header, sample_freq, most=8):
    """A piece's repeat structure as --form letters ("" where no phrase repeats): its bars (after a pickup bar) cut
    into m phrases as the Form rule cuts a planned length (phrase i from bar ceil(i * bars / m)), a phrase the
    same letter as the first earlier one of its length whose bars it repeats note for note, its last bar aside (a
    second ending); of m = 2 to `most`, the cut whose repeats cover the most bars, the fewest phrases on a tie."""
    bars = bar_contents(notes, header, sample_freq)
    if bars and bars[0] and bars[0][0][0] > 0:  # a pickup sits at the end of a whole first bar: phrases begin after it
        bars = bars[1:]
    best, covered = "", 0
    for m in range(2, min(most, len(bars)) + 1):
        cut = [(i * len(bars) + m - 1) // m for i in range(m + 1)]
        phrases = [bars[cut[i]:cut[i + 1]] for i in range(m)]
        model = []  # each phrase's: the first earlier phrase it repeats, else its own
        for i, p in enumerate(phrases):
            model.append(next((j for j in range(i) if model[j] == j and len(phrases[j]) == len(p) > 1
                               and phrases[j][:-1] == p[:-1]), i))
        repeats = sum(len(p) for i, p in enumerate(phrases) if model[i] != i)
        if repeats > covered:
            letters = {}
            best, covered = "".join(letters.setdefault(j, chr(65 + len(letters))) for j in model), repeats
    return best


def looped(notes, header, sample_freq, least=4):
    """Whether a piece only plays one phrase over and over: its form (piece_form) `least` phrases or more, all one
    letter (16 bars of one 2-bar phrase eight times). No real piece of the corpus's chorales and tunes does."""
    form = piece_form(notes, header, sample_freq)
    return len(form) >= least and len(set(form)) == 1


def listen(pieces, voices, sample_freq):
    """What a music teacher counts, over pieces [(notes, header)]: the share of beats with `voices` notes sounding,
    parallels per 100 moves, the shares of pieces beginning and ending on the tonic triad, the mean share of
    repeated bars, the share of notes outside the piece's key, the share of pieces in a minor key, a voice's leaps
    over an octave per 100 of its moves between beats of `voices` notes, the share of a part's notes repeating its
    last pitch (repeated_notes), the share going back to the pitch before their part's last (returning_notes), the
    share of notes not of their piece's commonest length (other_lengths), the share of pieces with a part striking
    its last pitch again in over half its notes (frozen_part), the share of pieces that loop one phrase (looped),
    with more than one voice the share of pieces whose last chord is not a triad (last_chord), of those whose last
    chord stands on the first one's root (comes_home), of those that reach it from its dominant (cadence) and of
    those whose last and first chords sound their third (close_has_third, opening_has_third) and whose last chord is
    struck once (close_struck_once), and,
    for four voices, the share of four-note beats with a voice outside its range (config.usual_ranges) and the upper
    voices more than an octave apart per 100 four-note beats."""
    chords = [beat_chords(n, sample_freq) for n, _ in pieces]
    keys = [piece_key(n) for n, _ in pieces]
    par = [parallels(c, voices) for c in chords]
    moves = sum(m for _, m in par)
    leapt = np.sum([leaps(c, voices) for c in chords], axis=0)
    struck = np.sum([repeated_notes(n) for n, _ in pieces], axis=0)
    out = {"voices": voices, "full_beats": float(np.mean([full_beats(c, voices) for c in chords])),
           "parallels_per_100_moves": 100 * sum(p for p, _ in par) / moves if moves else None,
           "begins_on_tonic": float(np.mean([begins_on_tonic(n, k) for (n, _), k in zip(pieces, keys)])),
           "ends_on_tonic": float(np.mean([ends_on_tonic(n, k) for (n, _), k in zip(pieces, keys)])),
           "repeated_bars": float(np.mean([repeated_bars(n, h, sample_freq) for n, h in pieces])),
           "outside_key": float(np.mean([outside_key(n, k) for (n, _), k in zip(pieces, keys)])),
           "minor": float(np.mean([k is not None and k[1] == "minor" for k in keys])),
           "leaps_per_100_moves": float(100 * leapt[0] / leapt[1]) if leapt[1] else None,
           "repeated_notes": float(struck[0] / struck[1]) if struck[1] else None}
    if voices == 4:
        ranged, wide = (np.sum([f(c) for c in chords], axis=0) for f in (
            lambda c: out_of_range(c, config.usual_ranges), wide_upper_voices))
        out["outside_range"] = float(ranged[0] / ranged[1]) if ranged[1] else None
        out["wide_per_100_beats"] = float(100 * wide[0] / wide[1]) if wide[1] else None
    back = np.sum([returning_notes(n) for n, _ in pieces], axis=0)
    out["returning_notes"] = float(back[0] / back[1]) if back[1] else None
    varied = np.sum([other_lengths(n) for n, _ in pieces], axis=0)
    out["other_lengths"] = float(varied[0] / varied[1]) if varied[1] else None
    out["frozen_parts"] = float(np.mean([frozen_part(n) for n, _ in pieces]))
    out["looped"] = float(np.mean([looped(n, h, sample_freq) for n, h in pieces]))
    if voices > 1:
        out["ends_not_a_triad"] = float(np.mean([last_chord(n, k) == "not a triad" for (n, _), k in zip(pieces, keys)]))
        out["comes_home"] = float(np.mean([comes_home(n) for n, _ in pieces]))
        out["authentic_cadence"] = float(np.mean([cadence(n) == "authentic" for n, _ in pieces]))
        out["close_has_third"] = float(np.mean([close_has_third(n) for n, _ in pieces]))
        out["opening_has_third"] = float(np.mean([opening_has_third(n) for n, _ in pieces]))
        out["close_struck_once"] = float(np.mean([close_struck_once(n) for n, _ in pieces]))
    return out


def polyphony(notes):
    """The number of notes sounding at each onset."""
    onsets = sorted({n.start for n in notes})
    return [sum(n.start <= t < n.end for n in notes) for t in onsets]


def histogram(pieces, name, sample_freq, width=0.0):
    """The normalised histogram of a statistic over pieces, each (notes, header); width > 0 smooths it with a Gaussian
    kernel of that many bins (a kernel density estimate on the bins)."""
    bins, values = {**STATS, **PIECE_STATS}[name]
    counts = np.zeros(bins)
    for notes, header in pieces:
        if notes:
            notes = list(map(as_note, notes))  # plain (start, pitch, dur, vel) tuples are read as Notes
            counts += np.bincount(np.asarray(values(notes, header, sample_freq), dtype=np.int64), minlength=bins)[:bins]
    if width > 0:
        grid = np.arange(bins)
        counts = np.exp(-0.5 * ((grid[:, None] - grid[None, :]) / width) ** 2) @ counts
    return counts / max(counts.sum(), 1)


def kernel_width(pieces, name, n, sample_freq):
    """The kernel width (Silverman's rule of thumb) for a per-piece statistic, from its spread over `pieces`, in a
    comparison whose smaller side has n pieces: a few dozen single values per side would leave most of 128 bins
    empty, so that even two sets of real pieces would share little area. 0 for the note-level statistics."""
    values = ([x for notes, header in pieces if notes
               for x in PIECE_STATS[name][1](list(map(as_note, notes)), header, sample_freq)]
              if name in PIECE_STATS else [])
    if len(values) < 2:
        return 0.0
    sd, iqr = np.std(values, ddof=1), np.subtract(*np.percentile(values, [75, 25])) / 1.34
    return float(0.9 * min(sd, iqr or sd) * min(len(values), n) ** -0.2)


def overlapping_area(p, q):
    """The area two normalised histograms share: 1 for identical, 0 for disjoint."""
    return float(np.minimum(p, q).sum())


def profile(pieces, sample_freq):
    """The normalised histograms of a set of pieces, each (notes, header), one per statistic."""
    return {name: histogram(pieces, name, sample_freq) for name in STATS}


def closeness(a, b):
    """Mean overlapping area of two profiles: 1 when every histogram is the same."""
    return float(np.mean([overlapping_area(a[k], b[k]) for k in STATS]))


def closest_style(piece, styles, style_profiles, sample_freq):
    """The style whose profile is closest to one piece's statistics (its notes and header)."""
    mine = profile([piece], sample_freq)
    return max(styles, key=lambda t: closeness(mine, style_profiles[t]))


MEASURES = [*PIECE_STATS, "onsets_with_all_voices", "beats_with_all_voices", "parallels_per_100_moves",
            "repeated_bars", "mean_duration", "ends_on_tonic", "outside_key", "outside_range", "wide_per_100_beats",
            "repeated_notes", "looped"]


def piece_measures(notes, header, voices, sample_freq):
    """One piece's musical measures (MEASURES, a classifier's features): its per-piece statistics, the share of its
    onsets and of its beats with `voices` notes sounding, its parallels per 100 moves, its share of repeated bars,
    its mean note length (steps), whether it ends on its key's tonic triad, its share of notes outside that key
    and, for four voices, its share of four-note beats with a voice outside its range (config.usual_ranges) and its
    upper voices more than an octave apart per 100 four-note beats (0 for other voicings), its share of notes
    repeating their part's last pitch, and whether it loops one phrase."""
    notes = list(map(as_note, notes))
    chords = beat_chords(notes, sample_freq)
    par, moves = parallels(chords, voices)
    key = piece_key(notes)
    ranged, wide = (out_of_range(chords, config.usual_ranges), wide_upper_voices(chords)) if voices == 4 else (
        (0, 0), (0, 0))
    struck, after = repeated_notes(notes)
    return [float(PIECE_STATS[name][1](notes, header, sample_freq)[0]) for name in PIECE_STATS] + [
        float(np.mean(np.equal(polyphony(notes), voices))), full_beats(chords, voices), 100 * par / max(moves, 1),
        repeated_bars(notes, header, sample_freq), float(np.mean([n.dur for n in notes])),
        float(ends_on_tonic(notes, key)), outside_key(notes, key), ranged[0] / max(ranged[1], 1),
        100 * wide[0] / max(wide[1], 1), struck / max(after, 1), float(looped(notes, header, sample_freq))]


def logistic_accuracy(a, b, folds=5, repeats=4, l2=1.0, seed=0):
    """How well a logistic regression (L2-regularized, fitted by Newton's method on features standardized on each
    training fold) tells rows of `a` from rows of `b`: its accuracy on held-out rows, cross-validated over `folds`
    folds drawn `repeats` times, with as many rows of each side. 0.5: it cannot tell them apart."""
    n = min(len(a), len(b))
    if n < folds:
        return None
    x, y = np.vstack([np.asarray(a, float)[:n], np.asarray(b, float)[:n]]), np.r_[np.ones(n), np.zeros(n)]
    rng, hits = np.random.default_rng(seed), []
    ridge = l2 * np.diag(np.r_[0.0, np.ones(x.shape[1])])  # the intercept is not shrunk
    for _ in range(repeats):
        fold = np.r_[rng.permutation(n) % folds, rng.permutation(n) % folds]  # each fold holds both sides alike
        for f in range(folds):
            fit = fold != f
            mean, sd = x[fit].mean(0), x[fit].std(0)
            z = np.c_[np.ones(len(x)), (x - mean) / np.where(sd > 0, sd, 1.0)]
            w = np.zeros(z.shape[1])
            for _ in range(30):
                p = 1 / (1 + np.exp(-np.clip(z[fit] @ w, -30, 30)))
                grad = z[fit].T @ (p - y[fit]) + ridge @ w
                hess = (z[fit].T * (p * (1 - p))) @ z[fit] + ridge + 1e-9 * np.eye(len(w))
                w -= np.linalg.solve(hess, grad)
            hits += list((z[~fit] @ w > 0) == (y[~fit] == 1))
    return float(np.mean(hits))


def voice_ranges(pieces, voices):
    """Per voice (part), the median over pieces of its lowest and highest pitch: [[low, high], ...]."""
    out = []
    for v in range(voices):
        spans = [(min(p), max(p)) for p in ([n.pitch for n in notes if n.part == v] for notes, _ in pieces) if p]
        out.append([float(np.median([a for a, _ in spans])), float(np.median([b for _, b in spans]))] if spans
                   else None)
    return out


def form_shares(found, least=0.02):
    """{form: % of the pieces} of the forms found (a Counter of piece_form's) in at least `least` of the pieces, as a
    row of config.STYLE_DEFAULTS draws them: "" (no repeated phrase) its own share, the rarer forms' share given to
    the kept forms with repeats in proportion, so that as many samples repeat a phrase as real pieces do."""
    total = sum(found.values())
    kept = {form: n for form, n in found.most_common() if n >= least * total}
    repeated, kept_repeated = total - found[""], sum(n for form, n in kept.items() if form)
    scale = lambda form: repeated / kept_repeated if form else 1  # the rarer forms' share, in proportion
    return {form: round(100 * n / total * scale(form), 1) for form, n in kept.items()}


def kept_pieces(pieces, real, voices, sample_freq, seed=0, percentile=90, ranges=False, opening=False):
    """Indices of the pieces [(notes, Header)] a teacher keeps beside the real ones: those that end on the tonic
    triad of their key, move in parallel fifths and octaves (with more than one voice), repeat their parts' last
    pitches (a voice standing still avoids parallels too; all parts together and the part that repeats most, of
    those with at least 8 notes), go back to the pitch before their parts' last (returning_notes: a texture rocking
    between two chords avoids them as well), stray outside their key and loop one phrase (looped: a tune of one
    2-bar phrase eight times ends on its tonic too) at most as often as `percentile` % of the real pieces do, and
    vary their rhythm at least as much (other_lengths: a piece in crotchets throughout avoids much of the rest; the
    rounds of distillation learnt it), each piece by itself (so that what is kept is spread about as the real
    pieces are, not all better than their mean), then the major or the minor ones left out (by `seed`) until minor
    keys are as common as among the real pieces. With `ranges` (four voices), two more bounds: the share of its
    four-note beats with a voice outside its usual range (config.usual_ranges) and its span from lowest to highest
    pitch (models/corpus/MODEL.md: the samples' voices wander wider than Bach's). With `opening` (more than one
    voice), they begin on the tonic triad too (begins_on_tonic: the samples set out from another chord).
    evaluate.py --keep copies them."""
    # parallels per move; repeated notes per note, in all parts and the worst; returning notes; notes outside the
    # key; a loop; notes not of the commonest length, negated (the fewer, the plainer: the bound is the real
    # pieces' 100 - percentile)
    def measured(notes, header, key):
        chords = beat_chords(notes, sample_freq)
        count, moves = parallels(chords, voices) if voices > 1 else (0, 1)
        struck, after = repeated_notes(notes)
        back, later = returning_notes(notes)
        varied, total = other_lengths(notes)
        shares = (count / max(moves, 1), struck / max(after, 1), worst_part_repeats(notes), back / max(later, 1),
                  outside_key(notes, key), float(looped(notes, header, sample_freq)), -varied / max(total, 1))
        if ranges and voices == 4:
            out, beats = out_of_range(chords, config.usual_ranges)
            shares += (out / max(beats, 1), float(np.ptp([as_note(n).pitch for n in notes])))
        return shares, moves > 0

    real_keys = [piece_key(notes) for notes, _ in real]
    bound = np.percentile([measured(n, h, k)[0] for (n, h), k in zip(real, real_keys)], percentile, axis=0)
    share = np.mean([key is not None and key[1] == "minor" for key in real_keys])
    keys = [piece_key(notes) for notes, _ in pieces]
    kept = [i for i, ((notes, header), key) in enumerate(zip(pieces, keys)) if ends_on_tonic(notes, key) and (
        not (opening and voices > 1) or begins_on_tonic(notes, key)) and (
        (m := measured(notes, header, key))[1] and all(np.array(m[0]) <= bound))]
    minor = [i for i in kept if keys[i] is not None and keys[i][1] == "minor"]
    major = sorted(set(kept) - set(minor))
    rng = np.random.default_rng(seed)
    if minor and len(minor) < share * len(kept):  # too few minor ones: fewer majors
        major = sorted(rng.permutation(major)[:round(len(minor) * (1 - share) / share)].tolist())
    elif len(minor) > share * len(kept):  # too many: fewer minors
        minor = sorted(rng.permutation(minor)[:round(len(major) * share / (1 - share))].tolist())
    return sorted(minor + major)
