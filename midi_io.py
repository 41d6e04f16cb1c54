"""The boundary to files: MIDI files (through symusic) and scores (MusicXML, Humdrum, ABC, ... through music21) in
and out, as the note lists and headers of the token format (encoding_decoding.py). Parts and their General MIDI
instruments, meters laid in bars, drums on channel 10. symusic and music21 are imported only where a file is read
or written.

python midi_io.py song.mid            # print its encoding
python midi_io.py song.txt [out.mid]  # write an encoding back as MIDI
"""
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

import config
from batch import atomic_write, die, read_text, reason
from encoding_decoding import (DRUMS, STYLE_NAME, FirstEdition, Header, Note, Spec, as_note, bar_steps, canonical,
                               canonical_rows, check_edition, kind, meter_fraction, notes_to_tokens, rows_to_notes,
                               strip_leading_silence, text_to_tokens, tokens_to_notes, tokens_to_text, validate, value)

MIDI_SUFFIXES = {".mid", ".midi"}  # what is read as a MIDI file (any case)
WRITABLE = (1, 2, 4, 8, 16, 32)  # the denominators of the time signatures notes_to_midi writes

# The General MIDI program names (program 0 is the Acoustic Grand Piano), for part names and --instruments.
GM_NAMES = (
    "piano", "bright piano", "electric grand", "honky-tonk", "electric piano 1", "electric piano 2", "harpsichord",
    "clavinet", "celesta", "glockenspiel", "music box", "vibraphone", "marimba", "xylophone", "tubular bells",
    "dulcimer", "drawbar organ", "percussive organ", "rock organ", "church organ", "reed organ", "accordion",
    "harmonica", "bandoneon", "nylon guitar", "steel guitar", "jazz guitar", "clean guitar", "muted guitar",
    "overdriven guitar", "distortion guitar", "guitar harmonics", "acoustic bass", "finger bass", "pick bass",
    "fretless bass", "slap bass 1", "slap bass 2", "synth bass 1", "synth bass 2", "violin", "viola", "cello",
    "contrabass", "tremolo strings", "pizzicato strings", "harp", "timpani", "strings", "slow strings",
    "synth strings 1", "synth strings 2", "choir", "voice", "synth voice", "orchestra hit", "trumpet", "trombone",
    "tuba", "muted trumpet", "horn", "brass", "synth brass 1", "synth brass 2", "soprano sax", "alto sax",
    "tenor sax", "baritone sax", "oboe", "english horn", "bassoon", "clarinet", "piccolo", "flute", "recorder",
    "pan flute", "bottle", "shakuhachi", "whistle", "ocarina", "square lead", "saw lead", "calliope lead",
    "chiff lead", "charang lead", "voice lead", "fifths lead", "bass lead", "new age pad", "warm pad",
    "polysynth pad", "choir pad", "bowed pad", "metallic pad", "halo pad", "sweep pad", "rain", "soundtrack",
    "crystal", "atmosphere", "brightness", "goblins", "echoes", "sci-fi", "sitar", "banjo", "shamisen", "koto",
    "kalimba", "bagpipe", "fiddle", "shanai", "tinkle bell", "agogo", "steel drums", "woodblock", "taiko drum",
    "melodic tom", "synth drum", "reverse cymbal", "guitar fret noise", "breath noise", "seashore", "bird tweet",
    "telephone", "helicopter", "applause", "gunshot")
VOICE_WORDS = ("soprano", "alto", "tenor", "bass", "cantus", "altus", "bassus", "quintus", "sextus", "voice",
               "superius", "contratenor", "discantus", "vox")  # score parts without a program: sung, so a choir


def instrument_name(inst):
    return "drums" if inst == DRUMS else GM_NAMES[inst]


def instrument_number(name):
    """'violin' / '40' / 'drums' -> 40 / 40 / DRUMS; ValueError naming the known names otherwise."""
    name = name.strip().lower()
    if name.isdigit() and int(name) < 128:
        return int(name)
    if name in ("drums", "drum", "percussion"):
        return DRUMS
    if name in GM_NAMES:
        return GM_NAMES.index(name)
    raise ValueError(f"unknown instrument {name!r}: a General MIDI program 0..127, 'drums', or a name such as "
                     f"{', '.join(GM_NAMES[k] for k in (0, 40, 41, 42, 52, 56, 68, 73))}")


def family(inst):
    """The General MIDI family (eight programs each; drums their own): parts beyond max_parts merge by it."""
    return 16 if inst == DRUMS else inst // 8


def meters_by_bar(changes, sample_freq, max_bars=100_000):
    """(first meter, ((bar index, meter), ...)) from meter changes at grid steps [(step, meter), ...] sorted by step:
    a change inside a bar takes effect at the next bar line."""
    if not changes:
        return "4/4", ()
    meter, out, bar, start, i = changes[0][1], [], 0, 0, 1
    while i < len(changes) and bar < max_bars:
        start += bar_steps(meter, sample_freq)
        bar += 1
        new = None
        while i < len(changes) and changes[i][0] <= start:
            new, i = changes[i][1], i + 1
        if new is not None and new != meter:
            out.append((bar, new))
            meter = new
    return changes[0][1], tuple(out)


def fit_meters(header, spec, dropped):
    """The header with every meter one of the vocabulary's: another meter of the same bar length where there is
    one, else 4/4 (its bars are then laid in 4/4; the notes keep their steps). Counted in `dropped`."""
    def fit(m):
        if m in spec.meters:
            return m
        dropped["meter_replaced"] += 1
        return spec.meter_of(bar_steps(m, spec.sample_freq)) or "4/4"
    return replace(header, meter=fit(header.meter), changes=tuple((b, fit(m)) for b, m in header.changes))


def merge_parts(parts, max_parts, dropped):
    """(the part each of `parts` becomes, the instruments) with at most max_parts parts: parts of one General MIDI
    family merge into the first of them (drums with drums), and what still does not fit folds into the last part;
    counted in `dropped`."""
    if len(parts) <= max_parts:
        return list(range(len(parts))), tuple(parts)
    families = list(dict.fromkeys(family(i) for i in parts))
    into = [min(families.index(family(i)), max_parts - 1) for i in parts]
    merged = tuple(next(i for i, f in zip(parts, into) if f == k) for k in range(min(len(families), max_parts)))
    dropped["parts_merged"] += len(parts) - len(merged)
    return into, merged


def tidy_parts(notes, parts, spec, dropped):
    """(notes, instruments) without the parts that hold no note (the rest renumbered in order) and with at most
    spec.max_parts parts (merge_parts)."""
    used = sorted({n.part for n in notes})
    into, parts = merge_parts(tuple(parts[p] for p in used) or (0,), spec.max_parts, dropped)
    into = dict(zip(used, into))
    return [n._replace(part=into[n.part]) for n in notes], parts


# --- MIDI in


def _to_step(tick, tpq, sample_freq):
    """Nearest grid step, halves rounded up, in integers (ticks can be huge in a broken file); ints or arrays."""
    return (2 * tick * sample_freq + tpq) // (2 * tpq)


def check_midi_header(data):
    """Raise ValueError naming what is wrong with the chunk structure of a standard MIDI file (what symusic would
    report less plainly, or read where we refuse: a type-2 file, 0 ticks per quarter)."""
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
        check_meta_events(data, pos + 8, pos + 8 + length, n)
        pos += 8 + length


META_SIZES = {0x51: ("tempo", 3), 0x58: ("time signature", 4), 0x59: ("key signature", 2)}  # data bytes of each


def _vlq(data, pos):
    """(a variable-length quantity of a MIDI file, the position after it)."""
    value = 0
    while True:
        byte, pos = data[pos], pos + 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos


def check_meta_events(data, pos, end, n):
    """Raise ValueError for a tempo, time or key signature event of track `n` (data[pos:end]) whose length is not
    its kind's: symusic would read the next event's bytes as its data (a meter of 3/1, a tempo of 458,896 us) and
    say nothing. Events are walked by their lengths (running status kept); where the bytes stop making events, the
    rest is left to symusic, which reports damaged events itself."""
    running = 0
    try:
        while pos < end:
            pos = _vlq(data, pos)[1]  # (the delta time)
            status = data[pos]
            if status == 0xFF:
                kind = data[pos + 1]
                length, pos = _vlq(data, pos + 2)
                if kind in META_SIZES and length != META_SIZES[kind][1]:
                    name, size = META_SIZES[kind]
                    raise ValueError(f"damaged track events: track {n} has a {name} event of {length} data "
                                     f"byte{'' if length == 1 else 's'}, not {size}")
                pos += length
            elif status in (0xF0, 0xF7):  # system exclusive: a length, then its bytes
                length, pos = _vlq(data, pos + 1)
                pos += length
            elif status & 0x80:
                if status > 0xEF:  # (no other system message belongs in a file)
                    return
                running = status
                pos += 2 if status >> 4 in (0xC, 0xD) else 3
            elif running:  # running status: the byte is the first data byte
                pos += 1 if running >> 4 in (0xC, 0xD) else 2
            else:
                return
    except IndexError:
        return


def pickup_shift(meters, sample_freq):
    """The steps a MIDI file's notes move to lay its pickup at the end of a whole first bar: where its first meter
    (at step 0) makes a bar shorter than the next meter's, which starts one bar later (as notes_to_midi writes a
    pickup, and notation programs); else 0. `meters`: [(step, meter), ...] sorted."""
    if len(meters) < 2 or meters[0][0] != 0:
        return 0
    short, bar = bar_steps(meters[0][1], sample_freq), bar_steps(meters[1][1], sample_freq)
    return bar - short if meters[1][0] == short < bar else 0


CHANGES = {  # what reading a file changed, in a listener's words ({n} and {s}: how many, and a plural's s)
    "pitch_out_of_range": "{n} note{s} outside the pitch range {lo}-{hi} dropped",
    "parts_merged": "{n} part{s} merged into others of their instrument family (a piece has at most {parts})",
    "drums": "{n} drum note{s} dropped",
    "duration_clamped": "{n} note{s} longer than {longest:g} quarter notes cut to that length",
    "meter_replaced": "{n} meter{s} this vocabulary lacks read as another (of the same bar length, else 4/4)",
    "repeats_not_expanded": "its repeats not played out",
    "chord_symbol": "{n} chord symbol{s} dropped",
    "grace_note": "{n} grace note{s} dropped",
}


def described_changes(dropped, spec):
    """What reading a file changed (`dropped`: midi_to_notes' or score_to_notes' count), in words, or ""."""
    lo, hi = spec.pitch_range
    return ", ".join(CHANGES[k].format(n=dropped[k], s="" if dropped[k] == 1 else "s", lo=lo, hi=hi,
                                       parts=spec.max_parts, longest=spec.max_dur / spec.sample_freq)
                     for k in CHANGES if dropped.get(k))


def midi_to_notes(data, spec, keep_drums=config.keep_drums, max_steps=config.max_piece_steps,
                  default_bpm=config.default_bpm):
    """MIDI file bytes -> (canonical notes, Header, Counter of what was dropped and why), read by symusic. A part
    is a (track, channel, program) that has notes, in order of track, then channel and program; channel 10 is a
    drum part. Note on/off pair per track, channel and pitch, first in first out; a note-on of velocity 0 is a
    note-off; a note never released is lost. Data bytes over 127 are read as 127 (a warning). The header takes the
    earliest set-tempo event and every time signature (its style is left to the caller)."""
    import symusic
    check_midi_header(data)
    dropped = Counter()
    try:
        try:
            score = symusic.Score.from_midi(data)
        except RuntimeError as e:
            if not str(e).startswith("Get "):  # symusic's word for a value out of range ("Get velocity=200")
                raise
            score = symusic.Score.from_midi(data, sanitize_data=True)  # read again, such bytes as 127
            dropped["warning:data_bytes_over_127_read_as_127"] += 1
    except (RuntimeError, ValueError, IndexError) as e:  # damaged events: symusic names them
        reason = str(e).removeprefix("MiniMidi: ").removesuffix(": iostream error")
        raise ValueError(f"damaged track events: {reason}") from None
    tpq, freq, rows, parts = score.ticks_per_quarter, spec.sample_freq, [], []
    for track in score.tracks:
        if not len(track.notes):
            continue
        if track.is_drum and not keep_drums:
            dropped["drums"] += len(track.notes)
            continue
        a = track.notes.numpy()  # ticks in int32: one that wrapped past 2^31 reads as negative
        start = a["time"].astype(np.int64)
        end = start + a["duration"]
        if start.min() < 0:  # (a track here holds notes)
            raise ValueError(f"a note starts past 2^31 ticks, past max_piece_steps={max_steps} (absurd delta time?)")
        start, end = _to_step(start, tpq, freq), _to_step(end, tpq, freq)
        rows.append(np.stack([start, a["pitch"], end - start, a["velocity"], np.full(len(start), len(parts))], 1))
        parts.append(DRUMS if track.is_drum else track.program)
    rows = np.concatenate(rows) if rows else np.zeros((0, 5), dtype=np.int64)
    if len(rows) and (last := int((rows[:, 0] + rows[:, 2]).max())) > max_steps:
        raise ValueError(f"a note ends at step {last}, past max_piece_steps={max_steps} (absurd delta time?)")
    into, parts = merge_parts(tuple(parts) or (0,), spec.max_parts, dropped)  # (every part holds notes)
    rows[:, 4] = np.array(into, dtype=np.int64)[rows[:, 4]]
    meters = sorted((t.time, f"{t.numerator}/{t.denominator}") for t in score.time_signatures
                    if t.numerator and t.denominator <= 128)
    meters = sorted({_to_step(tick, tpq, freq): m for tick, m in meters}.items())  # the last of one step wins
    if shift := pickup_shift(meters, freq):  # laid at the end of a whole first bar, as a score's
        rows[:, 0] += shift
        meters = [(0, meters[1][1])] + [(s + shift, m) for s, m in meters[2:]]
    meter, changes = meters_by_bar([(0, meters[0][1])] + meters[1:] if meters else [], freq)
    tempo = next((t.mspq for t in score.tempos if t.mspq), None)
    header = Header(bpm=60_000_000 / tempo if tempo else default_bpm, meter=meter, parts=parts, changes=changes)
    header = fit_meters(header, spec, dropped)
    notes = rows_to_notes(canonical_rows(rows, spec, dropped))
    return notes, header, +dropped  # unary + keeps the positive counts only


# --- scores in


def part_program(part):
    """The General MIDI program of a score part: its instrument's, else a choir for a sung part, else a piano."""
    inst = part.getInstrument(returnDefault=False)
    if inst is not None and inst.midiProgram is not None:
        return inst.midiProgram
    if inst is not None and "UnpitchedPercussion" in inst.classes:
        return DRUMS
    names = " ".join(str(x or "") for x in (part.partName, inst and inst.instrumentName)).lower()
    return 52 if any(w in names for w in VOICE_WORDS) else 0


def score_to_notes(score, spec, default_velocity=config.default_velocity, default_bpm=config.default_bpm):
    """A music21 Score -> (canonical notes, Header, Counter of what was dropped). Read as it is played: repeats and
    first and second endings expanded. One part per score part. A pickup bar is laid at the end of a whole first
    bar, so that bar lines fall where the score has them. Ties are merged; grace notes and chord symbols are
    dropped. The header takes the first metronome mark and the time signatures of the first part."""
    dropped, notes = Counter(), []
    try:
        score = score.expandRepeats()
    except Exception:  # music21 raises several kinds on repeats it cannot resolve: read the score as written
        dropped["repeats_not_expanded"] += 1
    parts = list(getattr(score, "parts", ())) or [score]
    measures = list(parts[0].getElementsByClass("Measure"))
    pickup = float(measures[0].paddingLeft) if measures else 0.0  # quarters missing from an incomplete first bar
    shift = round(pickup * spec.sample_freq)
    first = parts[0].flatten()
    marks = [m.getQuarterBPM() for m in score.flatten().getElementsByClass("MetronomeMark")]
    meters = [(round(float(ts.offset) * spec.sample_freq) + shift, ts.ratioString)
              for ts in first.getElementsByClass("TimeSignature")]
    meters = [m for m in meters if not m[1].startswith("1/")] or meters  # 1/8 and the like mark a pickup in ABC
    for k, part in enumerate(parts):
        tied = {}  # pitch -> index in notes of this part's note whose tie goes on
        for el in part.flatten().getElementsByClass(["Note", "Chord"]):
            if "Harmony" in el.classes:  # a chord symbol above the staff, not sounding notes
                dropped["chord_symbol"] += 1
                continue
            if el.duration.isGrace:
                dropped["grace_note"] += 1
                continue
            start = round(float(el.offset) * spec.sample_freq) + shift
            end = round(float(el.offset + el.duration.quarterLength) * spec.sample_freq) + shift
            vel = el.volume.velocity if el.volume.velocity else default_velocity
            for n in getattr(el, "notes", None) or [el]:  # a chord's notes carry their own ties
                tie = (n.tie or el.tie).type if (n.tie or el.tie) else None
                j = tied.pop(n.pitch.midi, None)
                if j is not None and tie in ("continue", "stop") and notes[j].end == start:
                    notes[j] = notes[j]._replace(dur=end - notes[j].start)  # music21's stripTies loses chords'
                else:                                                        # ties across voices: merged here
                    j = len(notes)
                    notes.append(Note(start, n.pitch.midi, end - start, vel, k))
                if tie in ("start", "continue"):
                    tied[n.pitch.midi] = j
    notes, programs = tidy_parts(notes, tuple(part_program(p) for p in parts), spec, dropped)
    meter, changes = meters_by_bar([(0, meters[0][1])] + meters[1:] if meters else [], spec.sample_freq)
    header = Header(bpm=next((b for b in marks if b), default_bpm), meter=meter, parts=programs, changes=changes)
    return canonical(notes, spec, dropped), fit_meters(header, spec, dropped), dropped


def read_music(path, spec, scores=True):
    """(notes, Header, what reading dropped) of a MIDI file, a text encoding (.txt, any case: checked against the
    grammar, read as it is; a style the spec lacks is read as one) or, with `scores`, a score that music21 reads (its
    first tune); ValueError saying why not (FirstEdition for an encoding of the grammar's first edition)."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        tokens = text_to_tokens(read_text(path))
        check_edition(tokens, path)
        if why := validate(tokens, spec := spec.with_styles_of(tokens)):
            raise ValueError(f"not an encoding this code reads (token {why[0]}: {why[1]})")
        return *tokens_to_notes(tokens, spec)[:2], {}
    if path.suffix.lower() in MIDI_SUFFIXES:
        return midi_to_notes(path.read_bytes(), spec)
    if not scores:
        raise ValueError("neither a MIDI file (.mid, .midi) nor an encoding (.txt)")
    return score_to_notes(parse_score(path)[0][1], spec)


def named_style(path, spec):
    """The style a text encoding's header names (a sample sample.py wrote, a piece encode_all.py encoded), where the
    run knows it; None for a MIDI file or score, which names none, and for a style the run lacks."""
    if Path(path).suffix.lower() != ".txt":
        return None
    style = next((value(t) for t in text_to_tokens(read_text(path))[:2] if kind(t) == "style"), None)
    return style if style in spec.styles else None


def read_piece(path, flag, spec, meter=None, one_meter=True):
    """(notes, Header) of a whole MIDI file, score (MusicXML, ABC, ...) or text encoding (.txt), whole bars before
    its first note dropped, or one line. Its bars are laid in `meter` where one is given, else, with `one_meter`, in
    its first (a note says so where it changes; given material is held in one meter), else in its own meters."""
    path = Path(path)
    if path.is_dir():  # (music21 would read a folder's files as one piece, or fail inside)
        die(f"{flag} {path} is a folder: give one file")
    try:
        notes, header, dropped = read_music(path, spec)
    except FirstEdition as e:  # (it names the file)
        die(f"{flag} {e}")
    except OSError as e:
        die(f"{flag} {path}: cannot read it ({e.strerror or e})")
    except Exception as e:  # music21's score readers raise their own kinds on a damaged file
        die(f"{flag} {path}: not a readable MIDI file, score or encoding ({reason(e)})")
    bpm = header.bpm  # the file's own, not its token's bucket
    header = replace(header, style=spec.styles[0])  # any style of the run's, so that its tokens read back
    notes, header, _ = tokens_to_notes(strip_leading_silence(notes_to_tokens(notes, spec, header)), spec)
    if header.changes and one_meter and not meter:
        print(f"note: {flag} {path} changes meter; it is read in its first, {header.meter}")
    changes = described_changes(dropped, spec)
    if not notes:
        die(f"{flag} {path}: no notes in it" + (f" once read ({changes})" if changes else ""))
    if changes:
        print(f"note: {flag} {path} is read with {changes}")
    header = replace(header, bpm=bpm, bars=0)  # as many bars as the notes need
    return notes, replace(header, meter=meter, changes=()) if meter else replace(
        header, changes=()) if one_meter else header


def parse_score(path):
    """A score file -> list of (suffix, Score): one per tune of a many-tune file (ABC opus), else one."""
    from music21 import converter
    parsed = converter.parse(path, forceSource=True, storePickle=False)
    if "Opus" in parsed.classes:
        return [(f"_tune{k:03d}", s) for k, s in enumerate(parsed.scores, 1)]
    return [("", parsed)]


# --- MIDI and scores out


def part_names(parts):
    """A name per part: its instrument's, numbered where several share one; four choir parts are S, A, T, B."""
    if tuple(parts) == (52,) * 4:
        return ["Soprano", "Alto", "Tenor", "Bass"]
    count, seen, names = Counter(parts), Counter(), []
    for inst in parts:
        seen[inst] += 1
        name = instrument_name(inst).capitalize()
        names.append(f"{name} {seen[inst]}" if count[inst] > 1 else name)
    return names


def pickup(notes, header, sample_freq):
    """(steps of silence before a pickup, its meter): where a piece of two bars or more opens after the first
    bar's downbeat, the silence before its first note and a time signature as long as the rest of that bar (its
    denominator the piece's where it can be); else (0, None). Only where MIDI can say both meters (n/2^k)."""
    first = min((n.start for n in map(as_note, notes)), default=0)
    own, bar = (meter_fraction(header.meter) or (0, 0))[1], bar_steps(header.meter, sample_freq)
    if not 0 < first < bar or header.bars_needed(notes, sample_freq) < 2 or own not in WRITABLE:
        return 0, None
    length = bar - first
    for d in dict.fromkeys((own, 4, 8, 16, 32)):
        if length * d % (4 * sample_freq) == 0:  # length steps are length / sample_freq quarters, of 4 / d each
            return first, f"{length * d // (4 * sample_freq)}/{d}"
    return 0, None


def notes_to_midi(notes, spec, header=Header()):
    """Canonical notes -> MIDI file bytes (type 1), written by symusic: one named track per part with its program,
    on a channel of its own (symusic's: the track's index, drums on 10), the first track opening with the tempo and
    the time signatures (none for a meter that is not n/2^k). A pickup is written from its first note, in a time
    signature of its own length (`pickup`), so that the file opens with music and every bar line stays where it
    is."""
    import symusic
    notes = list(map(as_note, notes))
    per_step = 480 // spec.sample_freq if 480 % spec.sample_freq == 0 else 120
    score = symusic.Score(per_step * spec.sample_freq)
    n_bars = max(header.bars, header.bars_needed(notes, spec.sample_freq))
    lines = header.bar_lines(spec.sample_freq, n_bars)
    pad, short = pickup(notes, header, spec.sample_freq)
    tempo = symusic.Tempo(0, 120.0)
    tempo.mspq = min(max(round(60_000_000 / header.bpm), 1), 0xFFFFFF)  # microseconds per quarter, in 3 bytes
    score.tempos.append(tempo)
    meters = [(0, header.meter)] + [(lines[bar], m) for bar, m in header.changes if bar < len(lines)]
    if pad:  # the pickup's own meter, then the piece's from its first whole bar (unless a change is there)
        meters = [(0, short)] + [(lines[1], header.meter)] * (lines[1] not in dict(meters[1:])) + meters[1:]
    for step, meter in meters:
        n, d = meter_fraction(meter) or (0, 0)
        if 0 < n < 256 and d in WRITABLE:
            score.time_signatures.append(symusic.TimeSignature((step - pad if step else 0) * per_step, n, d))
    rows = np.array(notes, dtype=np.int64).reshape(-1, 5)
    for k, name in enumerate(part_names(header.parts)):
        track, part = symusic.Track(name, 0 if header.parts[k] == DRUMS else header.parts[k],
                                    header.parts[k] == DRUMS), rows[rows[:, 4] == k]
        track.notes = symusic.Note.from_numpy((part[:, 0] - pad) * per_step, part[:, 2] * per_step, part[:, 1],
                                              part[:, 3])
        score.tracks.append(track)
    return score.dumps_midi()


def notes_to_score(notes, spec, header=Header()):
    """Canonical notes -> a music21 Score: one part per part, named, with its instrument, the time signatures and
    the tempo, and the clef that fits its range; notes of one part that start and end together are one chord. A
    pickup is a bar of its own length (measure 0), as `pickup` finds it."""
    from music21 import chord, clef, instrument, meter, note, stream, tempo
    notes = list(map(as_note, notes))
    n_bars = max(header.bars, header.bars_needed(notes, spec.sample_freq))
    lines = header.bar_lines(spec.sample_freq, n_bars)
    pad = pickup(notes, header, spec.sample_freq)[0]
    score, q = stream.Score(), lambda steps: steps / spec.sample_freq
    for k, name in enumerate(part_names(header.parts)):
        part = stream.Part()
        part.partName = name
        inst = header.parts[k]
        player = instrument.UnpitchedPercussion() if inst == DRUMS else instrument.instrumentFromMidiProgram(inst)
        player.partId, player.instrumentId = f"P{k + 1}", f"I{k + 1}"  # ours: music21 would draw random ones
        part.insert(0, player)
        for bar, m in ((0, header.meter),) + tuple(header.changes):
            part.insert(q(lines[bar]), meter.TimeSignature(m))
        if k == 0:
            part.insert(0, tempo.MetronomeMark(number=round(header.bpm, 2)))
        groups = defaultdict(list)
        for n in notes:
            if n.part == k:
                groups[(n.start, n.dur)].append(n)
        voices, ends = [], []  # notes that overlap without starting and ending together go to voices of their own
        for (start, dur), group in sorted(groups.items()):
            v = next((i for i, e in enumerate(ends) if e <= start), None)
            if v is None:
                voices.append(stream.Voice())
                ends.append(0)
                v = len(voices) - 1
            el = note.Note(group[0].pitch) if len(group) == 1 else chord.Chord([n.pitch for n in group])
            el.quarterLength, el.volume.velocity = q(dur), group[0].vel
            voices[v].insert(q(start), el)
            ends[v] = start + dur
        for voice in voices if len(voices) > 1 else ():
            part.insert(0, voice)
        for el in voices[0].elements if len(voices) == 1 else ():
            part.insert(el.offset, el)
        part.insert(0, clef.bestClef(part, recurse=True) if groups else clef.TrebleClef())
        if pad:
            lay_pickup(part, q(pad))
        score.insert(0, part)
    return score


def write_musicxml(score, path):
    """A music21 Score as MusicXML, written atomically (music21 writes a file of its own choosing first)."""
    from music21.musicxml.m21ToXml import GeneralObjectExporter
    atomic_write(path, GeneralObjectExporter(score).parse())


def lay_pickup(part, pad):
    """A music21 Part's bars made, its first a pickup (measure 0) that leaves out the `pad` quarters of silence
    before its notes, the others numbered from 1."""
    part.makeMeasures(inPlace=True)
    part.makeTies(inPlace=True)  # notes over a bar line split and tied, as the exporter does for bars it makes
    measures = list(part.getElementsByClass("Measure"))
    for holder in [measures[0], *measures[0].voices]:
        for el in list(holder.notesAndRests):
            holder.setElementOffset(el, el.offset - pad)
    measures[0].paddingLeft, measures[0].number = pad, 0
    for k, m in enumerate(measures[1:], 1):
        part.setElementOffset(m, m.offset - pad)
        m.number = k


def text_to_midi(text, spec, bpm=None):
    """Any token text -> (MIDI bytes, number of malformed groups skipped); `bpm` overrides the header's tempo.
    A style the spec does not list is read as one (a user's folder name), so the header is kept."""
    tokens = text_to_tokens(text)
    notes, header, bad = tokens_to_notes(tokens, spec := spec.with_styles_of(tokens))
    return notes_to_midi(notes, spec, header if bpm is None else replace(header, bpm=bpm)), bad


def midi_file_to_text(path, spec, style="other"):
    """Read a MIDI file and return (token text, notes, header, dropped)."""
    with open(path, "rb") as f:
        notes, header, dropped = midi_to_notes(f.read(), spec)
    header = replace(header, style=style)
    return tokens_to_text(notes_to_tokens(notes, spec, header)), notes, header, dropped


if __name__ == "__main__":
    # python midi_io.py file.mid | file.txt [out.mid]: show an encoding, or decode one to MIDI
    import sys
    src = Path(sys.argv[1])
    if src.suffix.lower() in MIDI_SUFFIXES:
        style = src.parent.name if STYLE_NAME.fullmatch(src.parent.name or "") else "other"
        print(midi_file_to_text(src, Spec(), style)[0], end="")
    else:
        data, bad = text_to_midi(src.read_text(), Spec())
        Path(sys.argv[2] if len(sys.argv) > 2 else src.with_suffix(".mid")).write_bytes(data)
        print(f"skipped {bad} malformed groups" if bad else "decoded cleanly")
