"""The one token grammar of nano-GPT-v3: MIDI files and scores ⇄ note lists ⇄ text tokens.

A piece is `START`, then for each onset step (earliest first) its notes as `n{pitch} d{steps} v{velocity}`
(highest pitch first), with `sepxx d{steps}` advancing the clock between onsets, then `END`:

    START n72 d4 v80 n64 d4 v70 sepxx d4 n74 d2 v82 ... END

A note list is a sorted list of `(start, pitch, dur, vel)` tuples in grid steps. `canonical()` is the single
normal form: encoding writes it, decoding reads it back, so decode → encode is the identity on encodings.
music21 is imported only where MIDI or scores are read or written, so the grammar loads without it.
"""
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass, fields

import config

START, END, SEP = "START", "END", "sepxx"

# What may follow what: state -> {token kind -> next state}. The validator, the lenient decoder and the
# sampler's mask all read this table; a token's kind is START, END, sepxx or its letter n/d/v.
GRAMMAR = {
    "begin": {START: "event"},
    "event": {"n": "note_dur", SEP: "rest_dur", END: "end"},
    "note_dur": {"d": "note_vel"},
    "note_vel": {"v": "event"},
    "rest_dur": {"d": "event"},
    "end": {},
}


def kind(token):
    """START, END, sepxx, or the letter of an n/d/v token."""
    return token if token in (START, END, SEP) else token[0]


@dataclass(frozen=True)
class Spec:
    """The ranges that fix the closed vocabulary; the tokenizer JSON stores them."""
    sample_freq: int = config.sample_freq
    pitch_range: tuple = config.pitch_range
    velocity_range: tuple = config.velocity_range
    max_dur: int = config.max_dur

    @classmethod
    def of(cls, values):
        """Build from a dict or namespace that has (at least) these names; lists (from JSON) become tuples."""
        picked = config.pick(values, [f.name for f in fields(cls)])
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in picked.items()})

    def to_dict(self):
        return asdict(self)

    def vocab(self):
        """The closed vocabulary, in id order."""
        (p0, p1), (v0, v1) = self.pitch_range, self.velocity_range
        return ([START, END, SEP] + [f"n{p}" for p in range(p0, p1 + 1)]
                + [f"d{d}" for d in range(1, self.max_dur + 1)] + [f"v{v}" for v in range(v0, v1 + 1)])


def canonical(notes, spec, dropped=None):
    """Notes in normal form: pitches in range, velocities clamped, 1 <= dur <= max_dur, sorted by
    (start, -pitch), one note per (start, pitch), and a note cut short where the same pitch starts again
    (a MIDI file cannot hold two sounding copies of one key). Counts what it drops or changes in `dropped`."""
    dropped = Counter() if dropped is None else dropped
    (p0, p1), (v0, v1) = spec.pitch_range, spec.velocity_range
    kept = []
    for start, pitch, dur, vel in notes:
        if not p0 <= pitch <= p1:
            dropped["pitch_out_of_range"] += 1
            continue
        if dur > spec.max_dur:
            dropped["duration_clamped"] += 1
        kept.append((start, pitch, min(max(dur, 1), spec.max_dur), min(max(vel, v0), v1)))
    kept.sort(key=lambda n: (n[0], -n[1], -n[2], -n[3]))
    out, last = [], {}  # last: pitch -> index in out of its latest note
    for note in kept:
        start, pitch = note[0], note[1]
        j = last.get(pitch)
        if j is not None and out[j][0] == start:
            dropped["duplicate_note"] += 1
            continue
        if j is not None and out[j][0] + out[j][2] > start:
            out[j] = (out[j][0], pitch, start - out[j][0], out[j][3])
            dropped["overlap_shortened"] += 1
        last[pitch] = len(out)
        out.append(note)
    return out


def notes_to_tokens(notes, spec):
    """Canonical notes -> tokens (START ... END)."""
    tokens, now = [START], 0
    for start, pitch, dur, vel in notes:
        gap = start - now
        while gap > 0:
            step = min(gap, spec.max_dur)
            tokens += [SEP, f"d{step}"]
            gap -= step
        now = start
        tokens += [f"n{pitch}", f"d{dur}", f"v{vel}"]
    return tokens + [END]


def grammar_tables(itos):
    """The grammar as lookup tables over token ids, for the sampler's mask: (states, allowed, next_state) where
    allowed[s][i] says whether token id i may come in state s and next_state[s][i] is where it leads. After END
    only END is allowed, so a finished sequence can be padded with it."""
    states = list(GRAMMAR)
    kinds = [kind(t) for t in itos]
    allowed = [[k in GRAMMAR[s] or (s == "end" and k == END) for k in kinds] for s in states]
    next_state = [[states.index(GRAMMAR[s].get(k, "end")) for k in kinds] for s in states]
    return states, allowed, next_state


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


def tokens_to_notes(tokens, spec):
    """Any token list -> (canonical notes, number of broken groups and stray tokens skipped). Never raises; reads
    the groups by GRAMMAR and stops at END."""
    vocab, notes, now, group, state, bad = set(spec.vocab()), [], 0, [], "event", 0
    for i, tok in enumerate(tokens):
        k = kind(tok) if tok in vocab else None
        if i == 0 and k == START:
            continue
        nxt = GRAMMAR[state].get(k)
        if nxt is None and state != "event":  # a group broken off: drop it, read this token afresh
            bad, group, state = bad + 1, [], "event"
            nxt = GRAMMAR[state].get(k)
        if nxt is None:  # a stray token: junk, a lone d or v, a START
            bad += 1
            continue
        if nxt == "end":
            break
        group.append(tok)
        state = nxt
        if state == "event":  # a group is complete
            if group[0] == SEP:
                now += int(group[1][1:])
            else:
                notes.append((now, int(group[0][1:]), int(group[1][1:]), int(group[2][1:])))
            group = []
    return canonical(notes, spec), bad + bool(group)


def text_to_tokens(text):
    return text.split()


def tokens_to_text(tokens):
    return " ".join(tokens) + "\n"


# --- MIDI in


def _to_step(tick, tpq, sample_freq):
    """Nearest grid step, halves rounded up, in integers (ticks can be huge in a broken file)."""
    return (2 * tick * sample_freq + tpq) // (2 * tpq)


def check_midi_header(data):
    """Raise ValueError naming what is wrong with the chunk structure of a standard MIDI file."""
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
        pos += 8 + length


def midi_to_notes(data, spec, keep_drums=config.keep_drums, max_steps=config.max_piece_steps):
    """MIDI file bytes -> (canonical notes, Counter of what was dropped and why), through music21's low-level
    reader. Note on/off pair per track, channel and pitch, first in first out; a note-on of velocity 0 is a
    note-off. All tracks and channels merge into one part."""
    from music21 import midi
    check_midi_header(data)
    mf = midi.MidiFile()
    mf.readstr(data)
    tpq, on_off = mf.ticksPerQuarterNote, (midi.ChannelVoiceMessages.NOTE_ON, midi.ChannelVoiceMessages.NOTE_OFF)
    dropped, notes = Counter(), []
    for t, track in enumerate(mf.tracks):
        tick, sounding = 0, defaultdict(deque)  # (channel, pitch) -> deque of (start tick, velocity)
        for ev in track.events:
            if ev.isDeltaTime():
                tick += ev.time
                continue
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
    notes = canonical([(a, p, b - a, v) for a, b, p, v in steps], spec, dropped)
    return notes, +dropped  # unary + keeps the positive counts only


# --- scores in


def score_to_notes(score, spec, default_velocity=config.default_velocity):
    """A music21 Score -> (canonical notes, Counter of what was dropped). Ties are merged; grace notes and chord
    symbols are dropped."""
    dropped, notes = Counter(), []
    for el in score.stripTies(inPlace=False).flatten().getElementsByClass(["Note", "Chord"]):
        if "Harmony" in el.classes:  # a chord symbol above the staff, not sounding notes
            dropped["chord_symbol"] += 1
            continue
        if el.duration.isGrace:
            dropped["grace_note"] += 1
            continue
        start = round(float(el.offset) * spec.sample_freq)
        end = round(float(el.offset + el.duration.quarterLength) * spec.sample_freq)
        vel = el.volume.velocity if el.volume.velocity else default_velocity
        notes += [(start, p.midi, end - start, vel) for p in el.pitches]
    return canonical(notes, spec, dropped), dropped


def parse_score(path):
    """A score file -> list of (suffix, Score): one per tune of a many-tune file (ABC opus), else one."""
    from music21 import converter
    parsed = converter.parse(path, forceSource=True, storePickle=False)
    if "Opus" in parsed.classes:
        return [(f"_tune{k:03d}", s) for k, s in enumerate(parsed.scores, 1)]
    return [("", parsed)]


# --- MIDI out


def notes_to_midi(notes, spec, bpm=120):
    """Canonical notes -> MIDI file bytes: one piano track at `bpm`, written with music21's MIDI objects."""
    from music21 import midi
    per_step = 480 // spec.sample_freq if 480 % spec.sample_freq == 0 else 120
    mf = midi.MidiFile()
    mf.format, mf.ticksPerQuarterNote = 0, per_step * spec.sample_freq
    track = midi.MidiTrack(0)
    events = [(0, 0, "tempo", round(60_000_000 / bpm), 0), (0, 0, "program", 0, 0)]
    for start, pitch, dur, vel in notes:  # at one tick, note-offs go before note-ons
        events += [(start * per_step, 1, "on", pitch, vel), ((start + dur) * per_step, 0, "off", pitch, 0)]
    events.sort()
    tick = 0
    for t, _, what, a, b in events:
        track.events.append(midi.DeltaTime(track, time=t - tick))
        tick = t
        if what == "tempo":
            ev = midi.MidiEvent(track, type=midi.MetaEvents.SET_TEMPO)
            ev.data = a.to_bytes(3, "big")
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


def text_to_midi(text, spec, bpm=120):
    """Any token text -> (MIDI bytes, number of malformed groups skipped)."""
    notes, bad = tokens_to_notes(text_to_tokens(text), spec)
    return notes_to_midi(notes, spec, bpm), bad


def midi_file_to_text(path, spec):
    """Read a MIDI file and return (token text, notes, dropped)."""
    with open(path, "rb") as f:
        notes, dropped = midi_to_notes(f.read(), spec)
    return tokens_to_text(notes_to_tokens(notes, spec)), notes, dropped


if __name__ == "__main__":
    # python encoding_decoding.py file.mid | file.txt [out.mid]: show an encoding, or decode one to MIDI
    import sys
    from pathlib import Path
    src = Path(sys.argv[1])
    if src.suffix.lower() in (".mid", ".midi"):
        print(midi_file_to_text(src, Spec())[0], end="")
    else:
        data, bad = text_to_midi(src.read_text(), Spec())
        Path(sys.argv[2] if len(sys.argv) > 2 else src.with_suffix(".mid")).write_bytes(data)
        print(f"skipped {bad} malformed groups" if bad else "decoded cleanly")
