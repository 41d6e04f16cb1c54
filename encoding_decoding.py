"""The one token grammar of nano-GPT-v3: MIDI files and scores ⇄ note lists ⇄ text tokens.

A piece is `START`, a header of three tokens (its style, first tempo and first time signature), then for each
onset step (earliest first) its notes as `n{pitch} d{steps} v{velocity}` (highest pitch first), with
`sepxx d{steps}` advancing the clock between onsets, then `END`:

    START style:bach tempo:96 meter:3/4 n72 d4 v80 n64 d4 v70 sepxx d4 n74 d2 v82 ... END

A note list is a sorted list of `Note(start, pitch, dur, vel)` in grid steps; a `Header` carries the rest.
`canonical()` is the single normal form: encoding writes it, decoding reads it back, so decode → encode is the
identity on encodings. music21 is imported only where MIDI or scores are read or written, so the grammar loads
without it.
"""
import json
import math
import re
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import config
import configurator

START, END, SEP = "START", "END", "sepxx"
HEADER = ("style", "tempo", "meter")  # the header's token kinds, in order; a header token is `kind:value`
OPENING = ("begin",) + HEADER          # the grammar states before the first event (each header state is named
                                       # after the kind it waits for)

# What may follow what: state -> {token kind -> next state}. The validator, the lenient decoder, finish() and the
# sampler's mask all read this table; a token's kind is START, END, sepxx, a header kind or the letter n/d/v.
GRAMMAR = {
    "begin": {START: "style"},
    "style": {"style": "tempo"},
    "tempo": {"tempo": "meter"},
    "meter": {"meter": "event"},
    "event": {"n": "note_dur", SEP: "rest_dur", END: "end"},
    "note_dur": {"d": "note_vel"},
    "note_vel": {"v": "event"},
    "rest_dur": {"d": "event"},
    "end": {},
}
STYLE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")  # a style token must survive whitespace splitting and the ':'
METER = re.compile(r"[1-9][0-9]{0,2}/[1-9][0-9]{0,2}")


def kind(token):
    """START, END, sepxx, a header kind (the part before ':'), or the letter of an n/d/v token."""
    if token in (START, END, SEP):
        return token
    head, colon, _ = token.partition(":")
    return head if colon else token[0]


def value(token):
    """What a header token says: 'bach' of style:bach, '3/4' of meter:3/4."""
    return token.partition(":")[2]


def corpus_style_names():
    """The styles of config.corpus_styles, sorted: the default styles of a vocabulary."""
    return tuple(sorted(config.corpus_styles))


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

    def __post_init__(self):
        """A spec is read from tokenizer files too: every value is checked (the numbers against configurator.LIMITS)
        before it can divide by zero or build a vocabulary of another shape; ValueError names the first bad one."""
        number = lambda v, kinds=(int,): isinstance(v, kinds) and not isinstance(v, bool)
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("meters", "styles"):
                pattern = METER if f.name == "meters" else STYLE_NAME
                ok = isinstance(v, tuple) and len(set(v)) == len(v) and all(
                    isinstance(x, str) and pattern.fullmatch(x) for x in v)
                why = "distinct names like " + ("3/4" if f.name == "meters" else "bach") if not ok else None
            elif isinstance(f.default, tuple):
                kinds = (int, float) if f.name == "tempo_range" else (int,)
                why = ("two numbers" if not (isinstance(v, tuple) and len(v) == 2 and all(number(x, kinds) for x in v))
                       else configurator.check(f.name, v))
            else:
                why = "a whole number" if not number(v) else configurator.check(f.name, v)
            if why:
                raise ValueError(f"{f.name}={v!r}: wants {why}")

    @classmethod
    def of(cls, values):
        """Build from a dict or namespace holding some of these names (the rest keep their defaults); lists (from
        JSON) become tuples."""
        has = values.__contains__ if isinstance(values, dict) else lambda k: hasattr(values, k)
        picked = configurator.pick(values, [f.name for f in fields(cls) if has(f.name)])
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in picked.items()})

    def to_dict(self):
        return asdict(self)

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

    def meter_token(self, meter):
        return f"meter:{meter}" if meter in self.meters else "meter:other"

    def header_tokens(self, header):
        return [f"style:{header.style}", self.tempo_token(header.bpm), self.meter_token(header.meter)]

    def vocab(self):
        """The closed vocabulary, in id order (the styles last, so that a new style only appends)."""
        (p0, p1), (v0, v1) = self.pitch_range, self.velocity_range
        return ([START, END, SEP] + [f"n{p}" for p in range(p0, p1 + 1)]
                + [f"d{d}" for d in range(1, self.max_dur + 1)] + [f"v{v}" for v in range(v0, v1 + 1)]
                + [f"tempo:{b}" for b in self.tempo_bpms()] + [self.meter_token(m) for m in self.meters]
                + ["meter:other"] + [f"style:{s}" for s in self.styles])


class Note(NamedTuple):
    """One note on the grid: its onset and duration in steps, its MIDI pitch and velocity."""
    start: int
    pitch: int
    dur: int
    vel: int

    @property
    def end(self):
        return self.start + self.dur


@dataclass(frozen=True)
class Header:
    """What a listener needs besides the notes: the style, the first tempo (quarter notes per minute) and the
    first time signature as written ("3/4", or anything else, which the meter token calls `other`)."""
    style: str = "other"
    bpm: float = config.default_bpm
    meter: str = "4/4"

    @classmethod
    def of_tokens(cls, tokens):
        """The header that header tokens (in any order, any subset) describe; defaults for what is missing."""
        got = {kind(t): value(t) for t in tokens if kind(t) in HEADER}
        return cls(style=got.get("style", cls.style), bpm=float(got.get("tempo", cls.bpm)),
                   meter=got.get("meter", cls.meter))


def bar_steps(meter, sample_freq):
    """Grid steps in one bar of `meter` ("6/8" -> 12 at 4 steps per quarter); 4/4 for `other` or a bad meter."""
    m = re.fullmatch(r"(\d+)/(\d+)", meter)
    if not m or not int(m[1]) or not int(m[2]):
        return 4 * sample_freq
    return max(1, round(int(m[1]) * 4 * sample_freq / int(m[2])))


def canonical(notes, spec, dropped=None):
    """Notes in normal form: pitches in range, velocities clamped, 1 <= dur <= max_dur, sorted by
    (start, -pitch), one note per (start, pitch), and a note cut short where the same pitch starts again
    (a MIDI file cannot hold two sounding copies of one key). Counts what it drops or changes in `dropped`."""
    dropped = Counter() if dropped is None else dropped
    (p0, p1), (v0, v1) = spec.pitch_range, spec.velocity_range
    kept = []
    for n in map(Note._make, notes):
        if not p0 <= n.pitch <= p1:
            dropped["pitch_out_of_range"] += 1
            continue
        if n.dur > spec.max_dur:
            dropped["duration_clamped"] += 1
        kept.append(n._replace(dur=min(max(n.dur, 1), spec.max_dur), vel=min(max(n.vel, v0), v1)))
    kept.sort(key=lambda n: (n.start, -n.pitch, -n.dur, -n.vel))
    out, last = [], {}  # last: pitch -> index in out of its latest note
    for note in kept:
        j = last.get(note.pitch)
        if j is not None and out[j].start == note.start:
            dropped["duplicate_note"] += 1
            continue
        if j is not None and out[j].end > note.start:
            out[j] = out[j]._replace(dur=note.start - out[j].start)
            dropped["overlap_shortened"] += 1
        last[note.pitch] = len(out)
        out.append(note)
    return out


def notes_to_tokens(notes, spec, header=Header()):
    """Canonical notes and their header -> tokens (START header ... END)."""
    tokens, now = [START] + spec.header_tokens(header), 0
    for n in map(Note._make, notes):  # plain (start, pitch, dur, vel) tuples are read as Notes
        gap = n.start - now
        while gap > 0:
            step = min(gap, spec.max_dur)
            tokens += [SEP, f"d{step}"]
            gap -= step
        now = n.start
        tokens += [f"n{n.pitch}", f"d{n.dur}", f"v{n.vel}"]
    return tokens + [END]


def finish(tokens):
    """Cut a sample at END, or, if it ran out of tokens first, after its last complete group, then close it."""
    state, cut = "begin", 0
    for i, t in enumerate(tokens):
        state = GRAMMAR[state].get(kind(t))
        if state is None:  # a constrained sample never breaks the grammar; keep what came before
            break
        if state == "end":
            return tokens[:i + 1]
        cut = i + 1 if state == "event" else cut
    return tokens[:cut] + [END]


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


def header_end(tokens):
    """The index of the first event after START and a whole header; 0 if the tokens do not begin so."""
    state = "begin"
    for i, tok in enumerate(tokens):
        if state == "event":
            return i
        if (state := GRAMMAR[state].get(kind(tok))) is None:
            return 0
    return len(tokens) if state == "event" else 0


def strip_leading_silence(tokens):
    """START header sepxx d8 sepxx d4 n60 ... -> START header n60 ...; anything else is returned unchanged."""
    i = header_end(tokens)
    j = i
    while j + 1 < len(tokens) and tokens[j] == SEP:
        j += 2
    return tokens[:i] + tokens[j:]


def tokens_to_notes(tokens, spec):
    """Any token list -> (canonical notes, Header, number of broken groups and stray tokens skipped). Never
    raises; reads the header and the groups by GRAMMAR and stops at END. A missing START or header part is no
    error (the header takes defaults): text from before the header decodes as it did."""
    vocab, notes, now, group, state, bad, head = set(spec.vocab()), [], 0, [], "begin", 0, []
    for tok in tokens:
        k = kind(tok) if tok in vocab else None
        nxt = GRAMMAR[state].get(k)
        if nxt is None and state in OPENING:  # no START or a header cut short: go on with the events
            state = "event"
            nxt = GRAMMAR[state].get(k)
        if nxt is None and state != "event":  # a group broken off: drop it, read this token afresh
            bad, group, state = bad + 1, [], "event"
            nxt = GRAMMAR[state].get(k)
        if nxt is None:  # a stray token: junk, a lone d or v, a START
            bad += 1
            continue
        if nxt == "end":
            break
        if state in OPENING:
            head.append(tok)
            state = nxt
            continue
        group.append(tok)
        state = nxt
        if state == "event":  # a group is complete
            if group[0] == SEP:
                now += int(group[1][1:])
            else:
                notes.append(Note(now, int(group[0][1:]), int(group[1][1:]), int(group[2][1:])))
            group = []
    return canonical(notes, spec), Header.of_tokens(head), bad + bool(group)


TOKENIZER_VERSION = 2  # 2: the piece header (style, tempo, meter) after START


class Tokenizer:
    """The closed vocabulary of a Spec as ids (styles last, so that new styles only append), and its JSON file."""

    def __init__(self, spec):
        self.spec = spec
        self.itos = spec.vocab()
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
        return {"version": TOKENIZER_VERSION, "vocab_size": self.vocab_size, "spec": self.spec.to_dict(),
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
        if d.get("version") != TOKENIZER_VERSION:
            raise ValueError(f"{path}: tokenizer version {d.get('version')!r}, this code reads version "
                             f"{TOKENIZER_VERSION}")
        try:
            spec = Spec.of(d["spec"])
        except ValueError as e:
            raise ValueError(f"{path}: its spec is not one this code can use: {e}") from None
        except (KeyError, TypeError, AttributeError):
            raise ValueError(f"{path}: tokenizer JSON lacks or garbles its spec (edited by hand?)") from None
        tok = cls(spec)
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


def tokens_to_text(tokens):
    return " ".join(tokens) + "\n"


# --- MIDI in


def _to_step(tick, tpq, sample_freq):
    """Nearest grid step, halves rounded up, in integers (ticks can be huge in a broken file)."""
    return (2 * tick * sample_freq + tpq) // (2 * tpq)


def check_midi_header(data):
    """Raise ValueError naming what is wrong with the chunk structure of a standard MIDI file; return a Counter of
    the event-level damage that the reader will repair or drop (see track_warnings)."""
    warnings = Counter()
    if not data:
        raise ValueError("empty file (0 bytes)")
    if data[:4] != b"MThd":
        raise ValueError(f"not a MIDI file (starts with {data[:8]!r}, not MThd)")
    if len(data) < 14:
        raise ValueError(f"truncated header ({len(data)} bytes)")
    if (size := int.from_bytes(data[4:8], "big")) != 6:
        raise ValueError(f"bad header length {size} (a MIDI header holds 6 bytes)")
    fmt, ntracks, division = (int.from_bytes(data[i:i + 2], "big") for i in (8, 10, 12))
    if fmt == 2:
        raise ValueError("type-2 MIDI (independent sequences) is not supported")
    if fmt not in (0, 1):
        raise ValueError(f"unknown MIDI format {fmt}")
    if division & 0x8000:
        raise ValueError("SMPTE time division is not supported (only ticks per quarter note)")
    if division == 0:
        raise ValueError("ticks per quarter note is 0")
    pos = 14
    for n in range(ntracks):
        if pos + 8 > len(data):
            raise ValueError(f"truncated file: header promises {ntracks} tracks, found {n}")
        length = int.from_bytes(data[pos + 4:pos + 8], "big")
        if data[pos:pos + 4] != b"MTrk":
            raise ValueError(f"bad chunk at byte {pos}: {data[pos:pos + 4]!r} where a track (MTrk) should be")
        if pos + 8 + length > len(data):
            raise ValueError(f"track {n} at byte {pos} claims {length} bytes but only {len(data) - pos - 8} remain "
                             f"(truncated file or bad chunk length)")
        warnings.update(track_warnings(data[pos + 8:pos + 8 + length]))
        pos += 8 + length
    return warnings


def _vlq(data, i):
    """(value, next index) of the variable-length quantity at data[i]; None for the value if it runs off the end."""
    value = 0
    for k in range(4):
        if i + k >= len(data):
            return None, len(data)
        value = (value << 7) | (data[i + k] & 0x7F)
        if not data[i + k] & 0x80:
            return value, i + k + 1
    return value, i + 4


def track_warnings(track):
    """What music21's reader will repair or drop in one track's event bytes, as a Counter: a meta or sysex event
    whose length runs past the track (every later event is lost with it), running status with no status byte
    before it (the reader invents a message), a track that ends inside an event."""
    found, i, status = Counter(), 0, None
    while i < len(track):
        _, i = _vlq(track, i)  # delta time
        if i >= len(track):
            found["track_ends_inside_an_event"] += 1
            break
        byte = track[i]
        if byte == 0xFF or byte in (0xF0, 0xF7):  # meta (type byte, length) or sysex (length), then the data
            length, j = _vlq(track, i + 2 if byte == 0xFF else i + 1)
            if length is None or j + length > len(track):
                found["meta_or_sysex_event_runs_past_its_track"] += 1
                break
            i, status = j + length, None if byte != 0xFF else status
            continue
        if byte & 0x80:
            status, i = byte, i + 1
        elif status is None:
            found["running_status_without_a_status_byte"] += 1
            status = 0x90  # read it as the reader will: a note-on
        i += 1 if status >> 4 in (0xC, 0xD) else 2
        if i > len(track):
            found["track_ends_inside_an_event"] += 1
    return found


def midi_to_notes(data, spec, keep_drums=config.keep_drums, max_steps=config.max_piece_steps,
                  default_bpm=config.default_bpm):
    """MIDI file bytes -> (canonical notes, Header, Counter of what was dropped and why), through music21's
    low-level reader. Note on/off pair per track, channel and pitch, first in first out; a note-on of velocity 0
    is a note-off. All tracks and channels merge into one part. The header takes the earliest set-tempo and
    time-signature events (its style is left to the caller)."""
    from music21 import midi
    warnings = check_midi_header(data)
    mf = midi.MidiFile()
    mf.readstr(data)
    tpq, on_off = mf.ticksPerQuarterNote, (midi.ChannelVoiceMessages.NOTE_ON, midi.ChannelVoiceMessages.NOTE_OFF)
    dropped, notes, first = Counter(), [], {}  # first: "tempo" | "meter" -> (tick, value)
    for t, track in enumerate(mf.tracks):
        tick, sounding = 0, defaultdict(deque)  # (channel, pitch) -> deque of (start tick, velocity)
        for ev in track.events:
            if ev.isDeltaTime():
                tick += ev.time
                continue
            if ev.type == midi.MetaEvents.SET_TEMPO and len(ev.data) == 3 and int.from_bytes(ev.data, "big"):
                value = 60_000_000 / int.from_bytes(ev.data, "big")
                first["tempo"] = min(first.get("tempo", (tick, value)), (tick, value), key=lambda e: e[0])
            elif ev.type == midi.MetaEvents.TIME_SIGNATURE and len(ev.data) >= 2 and ev.data[0] and ev.data[1] < 8:
                value = f"{ev.data[0]}/{2 ** ev.data[1]}"
                first["meter"] = min(first.get("meter", (tick, value)), (tick, value), key=lambda e: e[0])
            if ev.type not in on_off:
                continue
            if ev.channel == 10 and not keep_drums:
                dropped["drums"] += ev.type == on_off[0] and ev.velocity > 0
                continue
            key = (ev.channel, ev.pitch)
            if ev.type == on_off[0] and ev.velocity > 0:
                sounding[key].append((tick, ev.velocity))
            elif sounding[key]:
                start, vel = sounding[key].popleft()
                notes.append((start, tick, ev.pitch, vel))
            else:
                dropped["note_off_without_on"] += 1
        for (channel, pitch), q in sounding.items():  # never released: end them with the track
            dropped["closed_at_track_end"] += len(q)
            notes += [(start, tick, pitch, vel) for start, vel in q]
    steps = [(_to_step(a, tpq, spec.sample_freq), _to_step(b, tpq, spec.sample_freq), p, v) for a, b, p, v in notes]
    if steps and (last := max(b for _, b, _, _ in steps)) > max_steps:
        raise ValueError(f"a note ends at step {last}, past max_piece_steps={max_steps} (absurd delta time?)")
    notes = canonical([Note(a, p, b - a, v) for a, b, p, v in steps], spec, dropped)
    header = Header(bpm=first.get("tempo", (0, default_bpm))[1], meter=first.get("meter", (0, "4/4"))[1])
    dropped.update({f"warning:{k}": v for k, v in warnings.items()})
    return notes, header, +dropped  # unary + keeps the positive counts only


# --- scores in


def score_to_notes(score, spec, default_velocity=config.default_velocity, default_bpm=config.default_bpm):
    """A music21 Score -> (canonical notes, Header, Counter of what was dropped). Ties are merged; grace notes and
    chord symbols are dropped. The header takes the first metronome mark and time signature."""
    dropped, notes, flat = Counter(), [], score.stripTies(inPlace=False).flatten()
    marks = [m.getQuarterBPM() for m in flat.getElementsByClass("MetronomeMark")]
    meters = [ts.ratioString for ts in flat.getElementsByClass("TimeSignature")]
    meters = [m for m in meters if not m.startswith("1/")] or meters  # 1/8 and the like mark a pickup bar in ABC
    header = Header(bpm=next((b for b in marks if b), default_bpm), meter=meters[0] if meters else "4/4")
    for el in flat.getElementsByClass(["Note", "Chord"]):
        if "Harmony" in el.classes:  # a chord symbol above the staff, not sounding notes
            dropped["chord_symbol"] += 1
            continue
        if el.duration.isGrace:
            dropped["grace_note"] += 1
            continue
        start = round(float(el.offset) * spec.sample_freq)
        end = round(float(el.offset + el.duration.quarterLength) * spec.sample_freq)
        vel = el.volume.velocity if el.volume.velocity else default_velocity
        notes += [Note(start, p.midi, end - start, vel) for p in el.pitches]
    return canonical(notes, spec, dropped), header, dropped


def parse_score(path):
    """A score file -> list of (suffix, Score): one per tune of a many-tune file (ABC opus), else one."""
    from music21 import converter
    parsed = converter.parse(path, forceSource=True, storePickle=False)
    if "Opus" in parsed.classes:
        return [(f"_tune{k:03d}", s) for k, s in enumerate(parsed.scores, 1)]
    return [("", parsed)]


# --- MIDI out


def notes_to_midi(notes, spec, header=Header()):
    """Canonical notes -> MIDI file bytes: one piano track at the header's tempo and time signature (none for a
    meter that is not n/2^k), written with music21's MIDI objects."""
    from music21 import midi
    per_step = 480 // spec.sample_freq if 480 % spec.sample_freq == 0 else 120
    mf = midi.MidiFile()
    mf.format, mf.ticksPerQuarterNote = 0, per_step * spec.sample_freq
    track = midi.MidiTrack(0)
    tempo = min(max(round(60_000_000 / header.bpm), 1), 0xFFFFFF)  # microseconds per quarter, in 3 bytes
    events = [(0, 0, "tempo", tempo, 0), (0, 0, "program", 0, 0)]
    if (m := re.fullmatch(r"(\d+)/(\d+)", header.meter)) and 0 < int(m[1]) < 256 and int(m[2]) in (1, 2, 4, 8, 16, 32):
        events.append((0, 0, "meter", int(m[1]), int(m[2]).bit_length() - 1))
    for n in map(Note._make, notes):  # at one tick, note-offs go before note-ons
        events += [(n.start * per_step, 1, "on", n.pitch, n.vel), (n.end * per_step, 0, "off", n.pitch, 0)]
    events.sort()
    tick = 0
    for t, _, what, a, b in events:
        track.events.append(midi.DeltaTime(track, time=t - tick))
        tick = t
        if what == "tempo":
            ev = midi.MidiEvent(track, type=midi.MetaEvents.SET_TEMPO)
            ev.data = a.to_bytes(3, "big")
        elif what == "meter":  # numerator, log2(denominator), MIDI clocks per click, 32nds per quarter
            ev = midi.MidiEvent(track, type=midi.MetaEvents.TIME_SIGNATURE)
            ev.data = bytes([a, b, 24, 8])
        elif what == "program":
            ev = midi.MidiEvent(track, type=midi.ChannelVoiceMessages.PROGRAM_CHANGE)
            ev.data = 0
        else:
            ev = midi.MidiEvent(track, type=midi.ChannelVoiceMessages.NOTE_ON if what == "on"
                                else midi.ChannelVoiceMessages.NOTE_OFF)
            ev.pitch, ev.velocity = a, b
        track.events.append(ev)
    track.events.append(midi.DeltaTime(track, time=0))
    end = midi.MidiEvent(track, type=midi.MetaEvents.END_OF_TRACK)
    end.data = b""
    track.events.append(end)
    mf.tracks.append(track)
    return mf.writestr()


def text_to_midi(text, spec, bpm=None):
    """Any token text -> (MIDI bytes, number of malformed groups skipped); `bpm` overrides the header's tempo."""
    notes, header, bad = tokens_to_notes(text_to_tokens(text), spec)
    return notes_to_midi(notes, spec, header if bpm is None else replace(header, bpm=bpm)), bad


def midi_file_to_text(path, spec, style="other"):
    """Read a MIDI file and return (token text, notes, header, dropped)."""
    with open(path, "rb") as f:
        notes, header, dropped = midi_to_notes(f.read(), spec)
    header = replace(header, style=style)
    return tokens_to_text(notes_to_tokens(notes, spec, header)), notes, header, dropped


if __name__ == "__main__":
    # python encoding_decoding.py file.mid | file.txt [out.mid]: show an encoding, or decode one to MIDI
    import sys
    src = Path(sys.argv[1])
    if src.suffix.lower() in (".mid", ".midi"):
        print(midi_file_to_text(src, Spec())[0], end="")
    else:
        data, bad = text_to_midi(src.read_text(), Spec())
        Path(sys.argv[2] if len(sys.argv) > 2 else src.with_suffix(".mid")).write_bytes(data)
        print(f"skipped {bad} malformed groups" if bad else "decoded cleanly")
