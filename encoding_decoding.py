"""The one token grammar of nano-GPT-v3 (second edition): note lists ⇄ text tokens (midi_io.py: files ⇄ note lists).

A piece is `START`, a header, then its bars, then `END`:

    START style:bach tempo:96 meter:3/4 inst:52 inst:52 inst:52 inst:52
    bar:16 pos:8 n67 d4 v80 p1 n62 d4 v80 p2 n59 d4 v80 p3 n43 d4 v80 bar:15 pos:0 p0 n69 d4 p1 n64 d2 ... END

- The header: the style, the first tempo (one of log-spaced BPM buckets), the first meter, and one `inst:` token
  per part, in part order (a General MIDI program, or `inst:drums`).
- `bar:k` opens a bar and counts down: k is the number of bars left, this one included, so the first bar line says
  how long the piece is and every later one how far the end is. Beyond `max_countdown` bars a bar line says
  `bar:more`. A `meter:` token right after a bar line changes the meter from that bar on (a change inside a bar
  of the source takes effect at the next bar line; a score's pickup is laid at the end of a whole first bar).
- `pos:k` is an onset k grid steps into the bar; its notes follow, part by part, highest pitch first within a
  part: `n{pitch} d{steps}` and `v{velocity}` only where the velocity differs from the part's previous note.
  `p{k}` switches the part and is written only where the part changes, so a one-part piece never has one.

Why this design. Parts give every voice its own line, so a resting voice and a forgotten one differ and voice
leading is learnt per voice. Bar lines with positions (REMI's idea) give phrases a frame, and their countdown
lets `--bars N` be a plan the model can cadence to, not a cut. The cost is paid back where it falls: a position is
one token where a rest was two (`sepxx d4`), a velocity is written only where it changes (scores hold one
velocity throughout), and a part token only where the part changes. Time is exact: encoding and decoding lay bar
lines by the same meters, so every onset keeps its step.

A note list is a sorted list of `Note(start, pitch, dur, vel, part)` in grid steps; a `Header` carries the rest.
`canonical()` and `notes_to_tokens()` write the single normal form, so decode → encode is the identity on
encodings. MIDI files and scores are read and written in midi_io.py, the boundary to files: this module is the token
format alone, and loads without music21.
"""
import gc
import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import NamedTuple

import numpy as np

import config
import configurator

START, END = "START", "END"
AHEAD = "ahead"  # opens a bar's given material, shown ahead of its place (see `notes_to_tokens`'s `given`)
HEADER = ("style", "tempo", "meter")  # the header's fixed tokens, in order; one `inst` per part follows them
OPENING = ("begin",) + HEADER + ("inst", "parts")  # the grammar states before the first bar line
MORE = "more"                          # bar:more, a bar line further than max_countdown bars from the end
DRUMS = 128                            # the instrument number of a drum part (inst:drums, MIDI channel 10)

# What may follow what: state -> {token kind -> next state}. The validator, the lenient decoder, finish() and the
# sampler's mask all read this table. A token's kind is START, END, the part before ':' (style, tempo, meter,
# inst, bar, pos), or the letter of an n/d/v/p token.
AFTER_NOTE = {"p": "part", "n": "pitch", "pos": "onset", "bar": "bar", AHEAD: "ahead", END: "end"}
AFTER_AHEAD = {AHEAD: "ahead", "bar": "bar"}  # a block of given material stands right before a bar line
GRAMMAR = {
    "begin": {START: "style"},
    "style": {"style": "tempo"},
    "tempo": {"tempo": "meter"},
    "meter": {"meter": "inst"},
    "inst": {"inst": "parts"},
    "parts": {"inst": "parts", **AFTER_AHEAD},
    "bar": {"meter": "bar_meter", "pos": "onset", "bar": "bar", AHEAD: "ahead", END: "end"},
    "bar_meter": {"pos": "onset", "bar": "bar", AHEAD: "ahead", END: "end"},
    "onset": {"p": "part", "n": "pitch"},
    "part": {"n": "pitch"},
    "pitch": {"d": "note"},
    "note": {"v": "loud", **AFTER_NOTE},
    "loud": AFTER_NOTE,
    # a block of given notes (no velocities): its own states, so that its onsets and notes are not the bar's
    "ahead": {"pos": "a_onset", **AFTER_AHEAD},
    "a_onset": {"p": "a_part", "n": "a_pitch"},
    "a_part": {"n": "a_pitch"},
    "a_pitch": {"d": "a_note"},
    "a_note": {"pos": "a_onset", "p": "a_part", "n": "a_pitch", **AFTER_AHEAD},
    "end": {},
}
AHEAD_STATES = ("ahead", "a_onset", "a_part", "a_pitch", "a_note")
WHOLE = ("parts", "bar", "bar_meter", "note", "loud")  # states where a piece may be cut and closed with END
STYLE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")  # a style token must survive whitespace splitting and the ':'
METER = re.compile(r"[1-9][0-9]{0,2}/[1-9][0-9]{0,2}")

def kind(token):
    """START, END, AHEAD, the part before ':' of a header, bar or position token, or the letter of an n/d/v/p
    token."""
    if token in (START, END, AHEAD):
        return token
    head, colon, _ = token.partition(":")
    return head if colon else token[0]


def value(token):
    """What a `kind:value` token says: 'bach' of style:bach, '3/4' of meter:3/4, '12' of bar:12."""
    return token.partition(":")[2]


def corpus_style_names():
    """The styles of config.corpus_styles, sorted: the default styles of a vocabulary."""
    return tuple(sorted(config.corpus_styles))


def meter_fraction(meter):
    """(numerator, denominator) of 'n/d', or None for anything else."""
    m = re.fullmatch(r"(\d+)/(\d+)", meter)
    return (int(m[1]), int(m[2])) if m and int(m[1]) and int(m[2]) else None


@lru_cache(maxsize=4096)
def bar_steps(meter, sample_freq):
    """Grid steps in one bar of `meter` ("6/8" -> 12 at 4 steps per quarter); 4/4 for a bad meter. Cached: it is
    asked at every bar line."""
    n, d = meter_fraction(meter) or (4, 4)
    return max(1, round(n * 4 * sample_freq / d))


def beat_steps(meter, sample_freq):
    """Grid steps in one beat of `meter`: a dotted note in a compound meter (6/8, 9/8, 12/8: three eighths), else the
    note its denominator names ("3/4" -> 4, "2/2" -> 8 at 4 steps per quarter); a quarter for a bad meter."""
    n, d = meter_fraction(meter) or (4, 4)
    return max(1, round((3 if n % 3 == 0 and n > 3 and d >= 8 else 1) * 4 * sample_freq / d))


@dataclass(frozen=True)
class Spec:
    """The ranges and lists that fix the closed vocabulary; the tokenizer JSON stores them."""
    sample_freq: int = config.sample_freq
    pitch_range: tuple = config.pitch_range
    velocity_range: tuple = config.velocity_range
    max_dur: int = config.max_dur
    tempo_range: tuple = config.tempo_range
    tempo_buckets: int = config.tempo_buckets
    meters: tuple = config.meters
    styles: tuple = corpus_style_names()
    max_parts: int = config.max_parts
    max_countdown: int = config.max_countdown

    def __post_init__(self):
        """A spec is read from tokenizer files too: every value is checked (the numbers against configurator.LIMITS)
        before it can divide by zero or build a vocabulary of another shape; ValueError names the first bad one."""
        number = lambda v, kinds=(int,): isinstance(v, kinds) and not isinstance(v, bool)
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("meters", "styles"):
                pattern = METER if f.name == "meters" else STYLE_NAME
                ok = isinstance(v, tuple) and len(v) > 0 and len(set(v)) == len(v) and all(
                    isinstance(x, str) and pattern.fullmatch(x) and (f.name == "styles" or meter_fraction(x))
                    for x in v)
                why = "distinct names like " + ("3/4" if f.name == "meters" else "bach") if not ok else None
            elif isinstance(f.default, tuple):
                kinds = (int, float) if f.name == "tempo_range" else (int,)
                why = ("two numbers" if not (isinstance(v, tuple) and len(v) == 2 and all(number(x, kinds) for x in v))
                       else configurator.check(f.name, v))
            else:
                why = "a whole number" if not number(v) else configurator.check(f.name, v)
            if why:
                raise ValueError(f"{f.name}={v!r}: wants {why}")
        (lo, hi), n = self.tempo_range, self.tempo_buckets
        if not lo < hi:
            raise ValueError(f"tempo_range={self.tempo_range!r}: wants LOW < HIGH, a range that tempo buckets can "
                             f"divide")
        if len(set(self.tempo_bpms())) < n:
            raise ValueError(f"tempo_buckets={n} over tempo_range={self.tempo_range!r}: wants buckets that stand for "
                             f"distinct whole BPMs (this range holds {len(set(self.tempo_bpms()))}): fewer buckets, or "
                             f"a wider range")

    @classmethod
    def of(cls, values):
        """Build from a dict or namespace holding some of these names (the rest keep their defaults); lists (from
        JSON) become tuples."""
        has = values.__contains__ if isinstance(values, dict) else lambda k: hasattr(values, k)
        picked = configurator.pick(values, [f.name for f in fields(cls) if has(f.name)])
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in picked.items()})

    def to_dict(self):
        return asdict(self)

    def with_styles_of(self, tokens):
        """This spec, with any style that `tokens` name and it lacks added: to check a file of another run's styles
        by the grammar (a style that is no name still fails, as a token outside the vocabulary)."""
        new = [value(t) for t in tokens if kind(t) == "style" and value(t) not in self.styles]
        return replace(self, styles=self.styles + tuple(dict.fromkeys(s for s in new if STYLE_NAME.fullmatch(s))))

    def tempo_bpms(self):
        """The BPM each tempo bucket stands for (its geometric centre, rounded): the tempo tokens' values."""
        (lo, hi), n = self.tempo_range, self.tempo_buckets
        return [round(lo * (hi / lo) ** ((k + 0.5) / n)) for k in range(n)]

    def bucket_bpm(self, bpm, shift=0):
        """The BPM of the bucket that holds `bpm` (clamped to the range), moved `shift` buckets."""
        (lo, hi), n = self.tempo_range, self.tempo_buckets
        k = math.floor(n * math.log(max(bpm, 1e-9) / lo) / math.log(hi / lo))
        return self.tempo_bpms()[min(max(k + shift, 0), n - 1)]

    def tempo_token(self, bpm, shift=0):
        return f"tempo:{self.bucket_bpm(bpm, shift)}"

    def max_bar_steps(self):
        return max(bar_steps(m, self.sample_freq) for m in self.meters)

    def meter_of(self, steps):
        """The first meter of this vocabulary whose bar has `steps` grid steps (config.meters lists the common
        ones first), or None."""
        return next((m for m in self.meters if bar_steps(m, self.sample_freq) == steps), None)

    def countdown_token(self, left):
        return f"bar:{left}" if left <= self.max_countdown else f"bar:{MORE}"

    def header_tokens(self, header):
        return ([f"style:{header.style}", self.tempo_token(header.bpm), f"meter:{header.meter}"]
                + [f"inst:{'drums' if i == DRUMS else i}" for i in header.parts])

    def vocab(self):
        """The closed vocabulary, in id order (the styles last, so that a new style only appends)."""
        (p0, p1), (v0, v1) = self.pitch_range, self.velocity_range
        return ([START, END, AHEAD] + [f"n{p}" for p in range(p0, p1 + 1)]
                + [f"d{d}" for d in range(1, self.max_dur + 1)] + [f"v{v}" for v in range(v0, v1 + 1)]
                + [f"p{k}" for k in range(self.max_parts)] + [f"pos:{k}" for k in range(self.max_bar_steps())]
                + [f"bar:{k}" for k in range(1, self.max_countdown + 1)] + [f"bar:{MORE}"]
                + [f"tempo:{b}" for b in self.tempo_bpms()] + [f"meter:{m}" for m in self.meters]
                + [f"inst:{k}" for k in range(128)] + ["inst:drums"] + [f"style:{s}" for s in self.styles])


class Note(NamedTuple):
    """One note on the grid: its onset and duration in steps, its MIDI pitch and velocity, and its part."""
    start: int
    pitch: int
    dur: int
    vel: int
    part: int = 0

    @property
    def end(self):
        return self.start + self.dur


def as_note(n):
    """A Note from a Note or a plain (start, pitch, dur, vel[, part]) tuple."""
    return n if isinstance(n, Note) else Note(*n)


@dataclass(frozen=True)
class Header:
    """What a listener needs besides the notes: the style, the first tempo (quarter notes per minute), the meter
    of the first bar as written and of later bars where it changes ((bar index, meter) pairs), each part's
    instrument (a General MIDI program or DRUMS), and the length in bars (0: as many as the notes need)."""
    style: str = "other"
    bpm: float = config.default_bpm
    meter: str = "4/4"
    parts: tuple = (0,)
    bars: int = 0
    changes: tuple = ()

    @classmethod
    def of_tokens(cls, tokens):
        """The header that header tokens (any subset) describe; defaults for what is missing."""
        got = {kind(t): value(t) for t in tokens if kind(t) in HEADER}
        parts = tuple(DRUMS if value(t) == "drums" else int(value(t)) for t in tokens if kind(t) == "inst")
        return cls(style=got.get("style", cls.style), bpm=float(got.get("tempo", cls.bpm)),
                   meter=got.get("meter", cls.meter), parts=parts or cls.parts)

    def meter_at(self, bar):
        """The meter of bar `bar` (0-based)."""
        meter = self.meter
        for b, m in self.changes:
            if b > bar:
                break
            meter = m
        return meter

    def bar_lines(self, sample_freq, n_bars):
        """The step each of the first n_bars + 1 bar lines falls on (the last closes bar n_bars - 1)."""
        lines = [0]
        for b in range(n_bars):
            lines.append(lines[-1] + bar_steps(self.meter_at(b), sample_freq))
        return lines

    def bars_needed(self, notes, sample_freq):
        """How many bars hold every note to its end (at least one)."""
        last = max((n.end for n in notes), default=1) - 1  # the last step that sounds
        bars, start = 0, 0
        while start <= last:
            start += bar_steps(self.meter_at(bars), sample_freq)
            bars += 1
        return max(bars, 1)


def canonical(notes, spec, dropped=None):
    """Notes in normal form: pitches in range, velocities clamped, 1 <= dur <= max_dur, sorted by (start, part,
    -pitch), one note per (start, part, pitch), and a note cut short where the same pitch starts again in its part
    (a MIDI channel cannot hold two sounding copies of one key). Counts what it drops or changes in `dropped`."""
    rows = np.array([tuple(as_note(n)) for n in notes], dtype=np.int64).reshape(-1, 5)
    return rows_to_notes(canonical_rows(rows, spec, dropped))


def sort_order(*keys):
    """The stable order of rows by int64 columns, the first the most significant: one sort of the columns packed
    into one int64 where their ranges fit (a tenth of np.lexsort's time), else np.lexsort."""
    if not len(keys[0]):
        return np.zeros(0, dtype=np.int64)
    spans = [k - k.min() for k in keys]
    widths = [int(k.max()).bit_length() for k in spans]
    if sum(widths) > 63:
        return np.lexsort(keys[::-1])
    packed = np.zeros(len(keys[0]), dtype=np.int64)
    for k, w in zip(spans, widths):
        packed = (packed << w) | k
    return np.argsort(packed, kind="stable")


def rows_to_notes(a):
    """A list of Notes from an (n, 5) array of (start, pitch, dur, vel, part) rows, made with Python's cyclic
    garbage collector paused: it would sweep the growing list again and again (three times the time)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return list(map(tuple.__new__, repeat(Note), zip(*(column.tolist() for column in a.T))))  # Note._make in C
    finally:
        if paused:
            gc.enable()


def canonical_rows(a, spec, dropped=None):
    """`canonical` on an (n, 5) int64 array of (start, pitch, dur, vel, part) rows, in numpy: the rows in normal
    form (a MIDI file's hundred thousand notes in milliseconds)."""
    dropped = Counter() if dropped is None else dropped
    count = lambda why, n: dropped.update({why: int(n)} if n else {})
    (p0, p1), (v0, v1) = spec.pitch_range, spec.velocity_range
    inside = (a[:, 1] >= p0) & (a[:, 1] <= p1)
    count("pitch_out_of_range", len(a) - inside.sum())
    a = a[inside]
    if not len(a):
        return a
    count("duration_clamped", (a[:, 2] > spec.max_dur).sum())
    a[:, 2], a[:, 3] = a[:, 2].clip(1, spec.max_dur), a[:, 3].clip(v0, v1)
    a = a[sort_order(a[:, 0], a[:, 4], -a[:, 1], -a[:, 2], -a[:, 3])]
    key = a[:, 4] * 256 + a[:, 1]  # a part's pitch: one key of its keyboard
    line = np.argsort(key, kind="stable")  # each key's notes in that order
    b, key = a[line], key[line]
    again = np.concatenate(([False], (key[1:] == key[:-1]) & (b[1:, 0] == b[:-1, 0])))  # at one onset: the first wins
    count("duplicate_note", again.sum())
    line, b, key = line[~again], b[~again], key[~again]
    cut = np.concatenate(((key[1:] == key[:-1]) & (b[:-1, 0] + b[:-1, 2] > b[1:, 0]), [False]))  # sounding where
    count("overlap_shortened", cut.sum())                                                     # its key starts again
    b[cut, 2] = b[np.concatenate(([False], cut[:-1])), 0] - b[cut, 0]
    a[line] = b
    return a[np.sort(line)]


def notes_to_tokens(notes, spec, header=Header(), given=None):
    """Canonical notes and their header -> tokens (START header bars END). The header's parts must name every
    part the notes use; its meters must be the vocabulary's.

    With `given` (a subset of `notes`: a melody, parts, the bars after a gap), those notes are also shown ahead of
    their place, a bar at a time, so that a left-to-right model writing the rest sees them coming: a block
    `ahead [pos:k] [p{k}] n{pitch} d{steps} ...` (no velocities; its part starts at 0) stands before every bar
    line, for the bar after the one that line opens, and two stand before the first (bars 1 and 2). Each bar gets
    one block, an empty one (`ahead` alone) where nothing given starts in it. This is anticipation (Thickstun et
    al., 2023) with a look-ahead of one to two bars, laid on bar lines."""
    notes = list(map(as_note, notes))  # plain tuples are read as Notes
    n_bars = max(header.bars, header.bars_needed(notes, spec.sample_freq))
    lines = header.bar_lines(spec.sample_freq, n_bars)
    tokens, bar, at, part, vel = [START] + spec.header_tokens(header), -1, None, 0, {}
    changes = dict(header.changes)
    blocks = ahead_blocks(given, lines) if given is not None else None

    def open_bar(bar):  # the blocks due before this bar line, the line, its meter change
        for b in ((0, 1) if bar == 0 else (bar + 1,)) if blocks is not None else ():
            tokens.extend(blocks[b] if b < n_bars else [])
        tokens.append(spec.countdown_token(n_bars - bar))
        tokens.extend([f"meter:{changes[bar]}"] if bar in changes else [])

    for n in notes:
        while n.start >= lines[bar + 1] or bar < 0:  # open the bars up to the one that holds this onset
            bar += 1
            open_bar(bar)
        if n.start != at:
            tokens.append(f"pos:{n.start - lines[bar]}")
            at = n.start
        if n.part != part:
            tokens.append(f"p{n.part}")
            part = n.part
        tokens += [f"n{n.pitch}", f"d{n.dur}"]
        if vel.get(part) != n.vel:
            tokens.append(f"v{n.vel}")
            vel[part] = n.vel
    for bar in range(bar + 1, n_bars):  # bars that only ring or rest
        open_bar(bar)
    return tokens + [END]


def ahead_blocks(given, lines):
    """Per bar (its lines from Header.bar_lines), the block that shows its given notes ahead: AHEAD, then each
    note's onset in the bar where it changes, its part where that changes (from 0), its pitch and duration."""
    blocks = [[AHEAD] for _ in lines[:-1]]
    at, part, bar = None, [0] * len(blocks), 0
    for n in sorted(map(as_note, given), key=lambda n: (n.start, n.part, -n.pitch)):
        while n.start >= lines[bar + 1]:
            bar += 1
        block = blocks[bar]
        if n.start != at:
            block.append(f"pos:{n.start - lines[bar]}")
            at = n.start
        if n.part != part[bar]:
            block.append(f"p{n.part}")
            part[bar] = n.part
        block += [f"n{n.pitch}", f"d{n.dur}"]
    return blocks


def finish(tokens):
    """Cut a sample at END, or, if it ran out of tokens first, after its last whole note or bar line, then close
    it (a sample that never reached its first bar line gets one empty bar)."""
    state, cut, bare = "begin", 0, False
    for i, t in enumerate(tokens):
        state = GRAMMAR[state].get(kind(t))
        if state is None:  # a constrained sample never breaks the grammar; keep what came before
            break
        if state == "end":
            return tokens[:i + 1]
        if state in WHOLE:
            cut, bare = i + 1, state == "parts"
    return tokens[:cut] + ["bar:1"] * bare + [END]


def validate(tokens, spec):
    """None if `tokens` follow the grammar and the vocabulary, else (index, reason) of the first break."""
    vocab, state = set(spec.vocab()), "begin"
    for i, tok in enumerate(tokens):
        if tok not in vocab:
            return i, f"{tok!r} is not in the vocabulary"
        nxt = GRAMMAR[state].get(kind(tok))
        if nxt is None:
            want = " or ".join(GRAMMAR[state]) or "nothing after END"
            return i, f"{tok!r} cannot follow state {state!r} (expected {want})"
        state = nxt
    return None if state == "end" else (len(tokens), f"sequence ends in state {state!r}, not after END")


def decodes_cleanly(tokens, spec):
    """Whether a sample follows the grammar up to its END; one that ran out of tokens may end mid-group."""
    upto = tokens[:tokens.index(END) + 1] if END in tokens else tokens
    err = validate(upto, spec)
    return err is None or (END not in tokens and err[0] == len(upto))


def first_tokens(ids, max_new, tok):
    """A piece's first max_new tokens after START, closed after its last whole group: the most a sample holds."""
    return finish(tok.decode([int(i) for i in ids[:max_new + 1]]))


def header_end(tokens):
    """The index of the first bar line after START and a whole header; 0 if the tokens do not begin so."""
    state = "begin"
    for i, tok in enumerate(tokens):
        if (state := GRAMMAR[state].get(kind(tok))) is None:
            return 0
        if state == "bar":
            return i
    return 0


def strip_leading_silence(tokens):
    """START header bar:9 bar:8 pos:0 n60 ... -> START header bar:8 pos:0 n60 ...: the bars before the first note
    are dropped, and the meter they or the first kept bar set becomes the header's; anything else unchanged."""
    i = header_end(tokens)
    if not i:
        return tokens
    meter_at = lambda j: tokens[j + 1] if j + 1 < len(tokens) and kind(tokens[j + 1]) == "meter" else None
    j, meter = i, None
    while (nxt := j + 1 + bool(meter_at(j))) < len(tokens) and kind(tokens[nxt]) == "bar":
        meter, j = meter_at(j) or meter, nxt  # tokens[j] is an empty bar: skip it
    if j == i:
        return tokens
    meter = meter_at(j) or meter
    head = [meter if meter and kind(t) == "meter" else t for t in tokens[:i]]
    return head + [tokens[j]] + tokens[j + 1 + bool(meter_at(j)):]


def shifter(tokens, spec):
    """shift for one piece, its tokens read once (a piece gives 107 variants): (pitch=0, velocity=0, tempo=0) ->
    shift(tokens, spec, pitch, velocity, tempo)."""
    (p0, p1), (v0, v1) = spec.pitch_range, spec.velocity_range
    kinds = [kind(t) for t in tokens]
    drums = [value(t) == "drums" for t, k in zip(tokens, kinds) if k == "inst"]
    notes, velocities, tempos, part = [], [], [], 0  # (index, pitch) of pitched notes, (index, part, velocity), index
    for i, (t, k) in enumerate(zip(tokens, kinds)):
        if k == "p":
            part = int(t[1:])
        elif k == "n" and not (part < len(drums) and drums[part]):
            notes.append((i, int(t[1:])))
        elif k == "v":
            velocities.append((i, part, int(t[1:])))
        elif k == "tempo":
            tempos.append(i)
    low, high = min((p for _, p in notes), default=None), max((p for _, p in notes), default=None)

    def shifted(pitch=0, velocity=0, tempo=0):
        if pitch and notes and not p0 <= low + pitch <= high + pitch <= p1:
            return None
        out, dropped, last = list(tokens), set(), {}
        for i, p in notes if pitch else ():
            out[i] = f"n{p + pitch}"
        for i, part, v in velocities:
            v = min(max(v + velocity, v0), v1)
            if last.get(part) == v:
                dropped.add(i)
            else:
                out[i], last[part] = f"v{v}", v
        for i in tempos if tempo else ():
            out[i] = spec.tempo_token(float(value(tokens[i])), tempo)
        return [t for i, t in enumerate(out) if i not in dropped] if dropped else out
    return shifted


def shift(tokens, spec, pitch=0, velocity=0, tempo=0):
    """Tokens of a canonical encoding with every note of a pitched part moved `pitch` semitones (drums stay: their
    pitches name drums), every velocity `velocity` louder (clamped; one that clamping makes equal to its part's last is
    dropped, as the normal form has it) and the tempo token `tempo` buckets faster (clamped); None if a note would
    leave the pitch range. The order within a part is kept by a shift."""
    return shifter(tokens, spec)(pitch, velocity, tempo)


def tokens_to_notes(tokens, spec):
    """Any token list -> (canonical notes, Header, number of broken notes and stray tokens skipped). Never raises;
    reads the header and the bars by GRAMMAR and stops at END. A missing START or header part is no error (the
    header takes defaults); notes before the first bar line fall in the first bar. Blocks of given material
    (`ahead ...`) are skipped: their notes are read where they sound."""
    vocab, state, bad, head, notes, changes, vel = set(spec.vocab()), "begin", 0, [], [], [], {}
    meter, bars, bar_start, at, part, note = Header.meter, 0, 0, 0, 0, None  # note: [pitch, dur, vel] being read
    for tok in tokens:
        k = kind(tok) if tok in vocab else None
        nxt = GRAMMAR[state].get(k)
        if nxt is None and state in OPENING:  # no START, or a header cut short: go on with the bars
            state, nxt = "bar", GRAMMAR["bar"].get(k)
        if nxt is None and state in ("onset", "part", "pitch"):  # a note broken off: drop it, read this afresh
            bad, state, note = bad + 1, "loud", None
            nxt = GRAMMAR[state].get(k)
        if nxt is None and state in AHEAD_STATES[1:4]:  # the same inside a block
            bad, state = bad + 1, "a_note"
            nxt = GRAMMAR[state].get(k)
        if nxt is None:  # a stray token
            bad += 1
            continue
        state, was = nxt, state
        if note and k not in ("d", "v"):  # the note before this token is whole
            vel[part] = note[2] if note[2] is not None else vel.get(part, config.default_velocity)
            notes.append(Note(at, note[0], note[1], vel[part], part))
            note = None
        if state in AHEAD_STATES:  # a block of given material: its notes are read where they sound
            continue
        if was in OPENING and k != "bar":
            head.append(tok)
            meter = value(tok) if k == "meter" else meter
            continue
        if k == END:
            break
        if k == "bar":
            bar_start += bar_steps(meter, spec.sample_freq) if bars else 0
            bars, at = bars + 1, bar_start
        elif k == "meter":
            meter = value(tok)
            changes.append((max(bars - 1, 0), meter))
        elif k == "pos":
            bars, at = bars or 1, bar_start + int(value(tok))
        elif k == "p":
            part = int(tok[1:])
        elif k == "n":
            note = [int(tok[1:]), None, None]
        else:
            note[1 if k == "d" else 2] = int(tok[1:])
    if note and note[1] is not None:
        notes.append(Note(at, note[0], note[1], note[2] or vel.get(part, config.default_velocity), part))
    header = replace(Header.of_tokens(head), bars=bars, changes=tuple(changes))
    stray = [n for n in notes if n.part >= len(header.parts)]  # a part the header does not name
    notes = [n for n in notes if n.part < len(header.parts)] if stray else notes
    return canonical(notes, spec), header, bad + len(stray) + bool(note and note[1] is None)


GIVEN_KINDS = ("melody", "parts", "bars")


def given_variant(tokens, spec, rng, kinds=GIVEN_KINDS):
    """A piece's encoding with some of it given, as sampling with given material sees it: its top part (a melody
    to harmonize), every part but one (a part to add), or every note after a gap of 1 to 8 bars (an infill), one of
    `kinds` drawn by `rng` (a random.Random); a one-part piece only the last. None where no kind fits the piece."""
    notes, header, _ = tokens_to_notes(tokens, spec)
    parts = sorted({n.part for n in notes})
    fits = [k for k in kinds if len(parts) > 1 or k == "bars"]
    if not fits:
        return None
    pick = rng.choice(fits)
    if pick == "melody":
        given = [n for n in notes if n.part == parts[0]]
    elif pick == "parts":
        new = rng.choice(parts)
        given = [n for n in notes if n.part != new]
    else:
        first = rng.randrange(header.bars)
        after = header.bar_lines(spec.sample_freq, header.bars)[min(first + rng.randint(1, 8), header.bars)]
        given = [n for n in notes if n.start >= after]
    return notes_to_tokens(notes, spec, header, given=given)


TOKENIZER_VERSION = 4  # 2: the piece header (style, tempo, meter) after START; 3: parts, bar lines, a countdown;
#                        4: blocks of given material (`ahead`). A version-3 tokenizer loads without that token.
FIRST_EDITION_TAG = "first-edition (commit 3690610)"  # the last code that samples runs of version 2 (legacy.py)


class Tokenizer:
    """The closed vocabulary of a Spec as ids (styles last, so that new styles only append), and its JSON file."""

    def __init__(self, spec, version=TOKENIZER_VERSION):
        self.spec, self.version = spec, version
        self.itos = [t for t in spec.vocab() if version >= 4 or t != AHEAD]
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.vocab_size = len(self.itos)

    def encode(self, tokens):
        try:
            return [self.stoi[t] for t in tokens]
        except KeyError as e:
            raise ValueError(f"unknown token {e.args[0]!r} (not in the {self.vocab_size}-token vocabulary)") from None

    def decode(self, ids):
        if bad := [i for i in ids if not 0 <= i < self.vocab_size]:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (size {self.vocab_size})")
        return [self.itos[i] for i in ids]

    def to_dict(self):
        return {"version": self.version, "vocab_size": self.vocab_size, "spec": self.spec.to_dict(),
                "itos": self.itos, "stoi": self.stoi}

    @classmethod
    def load(cls, path):
        """Read a tokenizer JSON and check that it is whole and matches the grammar of this code."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such tokenizer file")
        try:
            d = json.loads(path.read_text())
            d.get("version")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            raise ValueError(f"{path}: not a tokenizer JSON (truncated or corrupt file?)") from None
        if d.get("version") == 1:
            raise ValueError(f"{path}: this tokenizer predates the piece header (style, tempo, meter) that samples "
                             f"now start with; re-encode the data and retrain the run with this code")
        if d.get("version") == 2:
            raise ValueError(f"{path}: this is the first edition of the token grammar (no parts, no bar lines); "
                             f"re-encode the data with this code (encode_all.py) and build the tokenizer again, or "
                             f"sample a run of it with the code of the git tag {FIRST_EDITION_TAG}")
        if d.get("version") not in (3, TOKENIZER_VERSION):
            raise ValueError(f"{path}: tokenizer version {d.get('version')!r}, this code reads versions 3 and "
                             f"{TOKENIZER_VERSION}")
        try:
            spec = Spec.of(d["spec"])
        except ValueError as e:
            raise ValueError(f"{path}: its spec is not one this code can use: {e}") from None
        except (KeyError, TypeError, AttributeError):
            raise ValueError(f"{path}: tokenizer JSON lacks or garbles its spec (edited by hand?)") from None
        tok = cls(spec, d["version"])  # version 3: a run trained before given material; it samples as before
        if tok.vocab_size > 2**16:
            raise ValueError(f"{path}: its spec makes {tok.vocab_size} tokens, more than uint16 token ids can hold")
        try:
            whole = d["itos"] == tok.itos and d["vocab_size"] == tok.vocab_size and d["stoi"] == tok.stoi
        except KeyError:
            raise ValueError(f"{path}: tokenizer JSON lacks its vocabulary (edited by hand?)") from None
        if not whole:
            raise ValueError(f"{path}: vocabulary does not match its spec {d['spec']} (edited by hand?)")
        return tok


def text_to_tokens(text):
    return text.split()


class FirstEdition(ValueError):
    """An encoding of the grammar's first edition, given to a step of the second."""


def check_edition(tokens, path):
    """FirstEdition if `tokens` (of the file `path`) are an encoding of the grammar's first edition: its header has
    no parts, a note or a `sepxx` rest follows the meter."""
    if len(tokens) > 4 and tokens[0] == START and (tokens[4] == "sepxx" or kind(tokens[4]) == "n"):
        raise FirstEdition(f"{path}: an encoding of the grammar's first edition (one part, sepxx rests, no bar "
                         f"lines); re-encode its folder with this code (encode_all.py)")


def tokens_to_text(tokens):
    return " ".join(tokens) + "\n"
