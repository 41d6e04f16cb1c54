import io
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT, meta, midi_file, off, on, program, scale, track, vlq
from encoding_decoding import (DRUMS, END, START, Header, Spec, canonical, check_edition, notes_to_tokens,
                               strip_leading_silence, tokens_to_notes, tokens_to_text, validate)
from midi_io import (midi_to_notes, notes_to_midi, notes_to_score, parse_score, pickup, score_to_notes, text_to_midi,
                     tidy_parts)

SPEC = Spec()
HEAD = "START style:other tempo:121 meter:4/4"


def roundtrip(notes, header=Header()):
    """notes -> tokens -> MIDI bytes -> notes -> tokens (parts without notes left out, as a MIDI file has none)."""
    notes, parts = tidy_parts(canonical(notes, SPEC), header.parts, SPEC, Counter())
    header = replace(header, parts=parts)
    tokens = notes_to_tokens(notes, SPEC, header)
    back, back_header, _ = midi_to_notes(notes_to_midi(notes, SPEC, header), SPEC)
    return tokens, notes_to_tokens(back, SPEC, replace(back_header, style=header.style))


def test_format_of_two_parts_in_bars():
    notes = [(0, 64, 4, 70, 0), (0, 72, 4, 80, 0), (0, 48, 8, 75, 1), (4, 74, 2, 80, 0), (20, 50, 4, 75, 1)]
    tokens = notes_to_tokens(canonical(notes, SPEC), SPEC, Header(parts=(0, 32)))
    assert " ".join(tokens) == (f"{HEAD} inst:0 inst:32 bar:2 pos:0 n72 d4 v80 n64 d4 v70 p1 n48 d8 v75 "
                                "pos:4 p0 n74 d2 v80 bar:1 pos:4 p1 n50 d4 END")


def test_a_velocity_only_where_it_changes_and_a_part_only_where_it_changes():
    notes = [(k, 60, 1, 80, 0) for k in range(4)] + [(4, 62, 1, 90, 0)]
    tokens = notes_to_tokens(notes, SPEC)
    assert tokens[5:] == ["bar:1", "pos:0", "n60", "d1", "v80", "pos:1", "n60", "d1", "pos:2", "n60", "d1",
                          "pos:3", "n60", "d1", "pos:4", "n62", "d1", "v90", END]


def test_empty_bars_long_notes_and_the_countdown():
    dropped = Counter()
    notes = canonical([(0, 60, 500, 80), (300, 62, 4, 80)], SPEC, dropped)
    tokens = notes_to_tokens(notes, SPEC)
    assert tokens[5:10] == ["bar:19", "pos:0", "n60", "d128", "v80"]
    assert tokens[10:10 + 17] == [f"bar:{k}" for k in range(18, 1, -1)] and tokens[-5:] == [
        "bar:1", "pos:12", "n62", "d4", END]  # step 300 = 18 bars of 16 steps + 12
    assert dropped["duration_clamped"] == 1


def test_a_countdown_further_than_max_countdown_says_more():
    tokens = notes_to_tokens([(0, 60, 1, 80), (16 * 70, 60, 1, 80)], SPEC)
    bars = [t for t in tokens if t.startswith("bar:")]
    assert len(bars) == 71 and bars[:7] == ["bar:more"] * 7 and bars[7] == "bar:64" and bars[-1] == "bar:1"


def test_meter_changes_sit_at_bar_lines_and_survive_midi():
    header = Header(meter="3/4", changes=((2, "2/4"), (3, "3/4")))
    notes = [(0, 60, 12, 80), (12, 62, 12, 80), (24, 64, 8, 80), (32, 65, 12, 80)]
    tokens, again = roundtrip(notes, header)
    assert " ".join(tokens[5:]) == ("bar:4 pos:0 n60 d12 v80 bar:3 pos:0 n62 d12 bar:2 meter:2/4 pos:0 n64 d8 "
                                    "bar:1 meter:3/4 pos:0 n65 d12 END")
    assert again == tokens
    assert tokens_to_notes(tokens, SPEC)[1].changes == header.changes


@pytest.mark.parametrize("notes", [
    [(0, 60, 4, 80), (0, 64, 4, 80), (0, 67, 8, 80), (8, 72, 4, 100)],                      # chords
    [(0, 60, 16, 80), (4, 60, 4, 90), (6, 60, 2, 50)],                                       # overlapping same pitch
    [(0, 60, 2, 80), (1000, 62, 2, 80), (1000, 50, 128, 1), (1300, 108, 1, 127)],            # long rests, extremes
    [(0, 60, 4, 80, 0), (0, 60, 4, 70, 1), (2, 48, 8, 60, 2), (3, 60, 1, 80, 1)],           # unison in two parts
])
def test_roundtrip_through_midi(notes):
    header = Header(parts=(0, 40, 42))
    tokens, again = roundtrip(notes, header)
    assert again == tokens
    assert validate(tokens, SPEC) is None


def four_tracks_with_drums():
    tempo = meta(0x51, (500_000).to_bytes(3, "big")) + meta(0x58, bytes([3, 2, 24, 8]))
    return midi_file(track(tempo), scale(6, 72, ch=0), track(program(40, ch=1), *[on(60 + i, 80, 1) + off(
        60 + i, 1, delta=240) for i in range(5)]), scale(4, 48, ch=2), scale(8, 36, ch=9))


def type0_with_program_changes():
    events = [program(0, 0), program(41, 1)]
    events += [on(72, 90, 0) + on(55, 70, 1) + off(72, 0, delta=480) + off(55, 1)]
    events += [program(73, 0)]  # mid-file: the flute from here on
    events += [on(74, 90, 0) + on(57, 70, 1) + off(74, 0, delta=480) + off(57, 1) for _ in range(3)]
    return midi_file(track(*events), fmt=0)


def test_parts_by_track_channel_and_program_drums_kept():
    notes, header, dropped = midi_to_notes(four_tracks_with_drums(), SPEC)
    assert header.parts == (0, 40, 0, DRUMS) and header.meter == "3/4" and header.bpm == 120
    assert Counter(n.part for n in notes) == {0: 6, 1: 5, 2: 4, 3: 8}
    assert not dropped
    notes, header, dropped = midi_to_notes(four_tracks_with_drums(), SPEC, keep_drums=False)
    assert header.parts == (0, 40, 0) and dropped["drums"] == 8
    notes, header, _ = midi_to_notes(type0_with_program_changes(), SPEC)
    assert header.parts == (0, 73, 41) and Counter(n.part for n in notes) == {0: 1, 1: 3, 2: 4}  # by channel


@pytest.mark.parametrize("make", [four_tracks_with_drums, type0_with_program_changes])
def test_pretty_midi_reads_our_parts_as_we_do(make, tmp_path):
    """An independent reader agrees: on the file itself and on what we write back, the same instruments (program,
    drum flag) with the same number of notes; our tracks are named, on their own channels."""
    import mido
    import pretty_midi
    data = make()
    notes, header, _ = midi_to_notes(data, SPEC)
    ours = sorted((DRUMS if i == DRUMS else i, i == DRUMS, sum(n.part == k for n in notes))
                  for k, i in enumerate(header.parts))
    theirs = lambda d: sorted((DRUMS if x.is_drum else x.program, x.is_drum, len(x.notes))
                              for x in pretty_midi.PrettyMIDI(io.BytesIO(d)).instruments)
    assert theirs(data) == ours
    written = notes_to_midi(notes, SPEC, header)
    assert theirs(written) == ours
    tracks = mido.MidiFile(file=io.BytesIO(written)).tracks
    names = [next(m.name for m in t if m.type == "track_name") for t in tracks]
    channels = [{m.channel for m in t if m.type == "note_on"} for t in tracks]
    assert len(names) == len(set(names)) == len(header.parts)
    assert all(len(c) == 1 for c in channels) and len(set.union(*channels)) == len(channels)  # one channel each
    assert ({9} in channels) == (DRUMS in header.parts)
    assert {"set_tempo", "time_signature"} <= {m.type for m in tracks[0]}  # the first track opens with them


@pytest.mark.filterwarnings("ignore:Tempo, Key or Time signature")  # pretty_midi, on a music21 test file
def test_pretty_midi_reads_the_midi_files_inside_music21_as_we_do():
    """The 23 MIDI files that ship with music21 (its test files, Mozart's K.525): per part, the program or drums and
    the notes (one per onset and pitch) agree with pretty_midi's, wherever a file fits max_parts."""
    import music21
    import pretty_midi
    spec = replace(SPEC, pitch_range=(0, 127))
    files = sorted(p for p in Path(music21.__file__).parent.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    compared = 0
    for path in files:
        theirs = sorted((DRUMS if x.is_drum else x.program, len({(n.start, n.pitch) for n in x.notes}))
                        for x in pretty_midi.PrettyMIDI(str(path)).instruments if x.notes)
        if len(theirs) > spec.max_parts:
            continue
        notes, header, _ = midi_to_notes(path.read_bytes(), spec)
        ours = sorted((i, sum(n.part == k for n in notes)) for k, i in enumerate(header.parts))
        assert ours == theirs, path.name
        compared += 1
    assert compared >= 20


def test_more_parts_than_max_parts_merge_by_family():
    tracks = [track(program(p, ch=c), on(60 + c, 80, c) + off(60 + c, c, delta=480))
              for c, p in enumerate([40, 41, 42, 0, 1, 56])]
    notes, header, dropped = midi_to_notes(midi_file(*tracks), replace(SPEC, max_parts=3))
    assert header.parts == (40, 0, 56) and dropped["parts_merged"] == 3  # strings, pianos, brass
    assert Counter(n.part for n in notes) == {0: 3, 1: 2, 2: 1}


def test_note_on_velocity_zero_is_note_off_and_pairing_is_fifo():
    # on 60 at 0, on 60 at 240, offs at 480 and 960: first in, first out -> (0..480) and (240..960),
    # then the first is cut where the second starts.
    data = midi_file(track(on(60, 100), on(60, 50, delta=240), off(60, delta=240, zero_velocity_on=True),
                           off(60, delta=480)))
    notes, _, dropped = midi_to_notes(data, SPEC)
    assert notes == [(0, 60, 2, 100, 0), (2, 60, 6, 50, 0)]
    assert dropped["overlap_shortened"] == 1


def test_out_of_range_pitches_are_counted_and_unmatched_events_lost():
    data = midi_file(track(on(10), off(10, delta=480), on(60), off(60, delta=480), off(61), on(62)))
    notes, _, dropped = midi_to_notes(data, SPEC)
    assert [n.pitch for n in notes] == [60]  # symusic drops an off without its on, and an on never released
    assert dropped == Counter(pitch_out_of_range=1)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"hello, I am a text file\n", "not a MIDI file"),
    (midi_file(scale(), fmt=2), "type-2"),
    (midi_file(scale(), division=0xE728), "SMPTE"),
    (midi_file(scale())[:-7], "truncated"),
    (midi_file(scale()).replace(b"MTrk\x00\x00", b"MTrk\x7f\x00", 1), "bad chunk length"),
    (midi_file(track(on(60), off(60, delta=0x0FFFFFFF))), "max_piece_steps"),
    (midi_file(track(*[on(60) + off(60, delta=0x0FFFFFFF)] * 12)), "past 2"),  # ticks past int32's range
    (midi_file(track(vlq(0) + bytes([0x90, 60]))), "damaged track events"),  # a note-on cut off by the track's end
    # a meta event shorter than its kind's: symusic read the next event's bytes as its data (3/1, 458,896 us)
    (midi_file(track(meta(0x58, b"\x03"), on(60), off(60, delta=480))),
     "track 0 has a time signature event of 1 data byte, not 4"),
    (midi_file(scale(), track(meta(0x51, b"\x07"), on(60), off(60, delta=480))),
     "track 1 has a tempo event of 1 data byte, not 3"),
])
def test_bad_midi_gives_a_clear_reason(data, reason):
    with pytest.raises(ValueError, match=reason):
        midi_to_notes(data, SPEC)


def test_meta_events_are_checked_past_system_exclusive_running_status_and_programs():
    """The walk that checks meta events' lengths keeps its place through every kind of event a file holds."""
    events = [vlq(0) + b"\xf0" + vlq(5) + b"\x7e\x7f\x09\x01\xf7", program(19), vlq(0) + b"\xb0\x07\x64",
              vlq(0) + b"\x90\x3c\x50", vlq(240) + b"\x3c\x00",  # running status: a note-on, then its off
              vlq(0) + b"\xd0\x40", vlq(0) + b"\xe0\x00\x40", meta(0x03, b"\xff\x58\x01\x03"),
              meta(0x58, b"\x03\x03\x18\x08", delta=0x0FFF), meta(0x51, b"\x09\x27\xc0"), on(62), off(62, delta=480)]
    notes, header, _ = midi_to_notes(midi_file(track(*events)), SPEC)
    assert [n.pitch for n in notes] == [60, 62] and (header.meter, header.bpm) == ("3/8", 100.0)
    with pytest.raises(ValueError, match="time signature event of 2 data bytes"):
        midi_to_notes(midi_file(track(*events[:-3], meta(0x58, b"\x03\x03"), *events[-2:])), SPEC)


def test_validator_says_where_it_breaks():
    head = "START style:bach tempo:121 meter:3/4 inst:0"
    assert validate(f"{head} bar:1 pos:0 n60 d4 v80 END".split(), SPEC) is None
    assert validate(f"{head} bar:1 pos:0 n60 v80 END".split(), SPEC)[0] == 8
    assert validate(f"{head} bar:1 pos:0 n60 d4 v80".split(), SPEC)[0] == 10
    assert validate(f"{head} bar:1 n60 d4 END".split(), SPEC)[0] == 6  # an onset needs its position
    assert validate(f"{head} pos:0 n60 d4 END".split(), SPEC)[0] == 5  # the first bar line comes first
    assert validate(f"{head} bar:1 pos:99 n60 d4 END".split(), SPEC)[0] == 6
    assert validate("START style:bach tempo:121 meter:3/4 bar:1 END".split(), SPEC)[0] == 4  # a part is wanted
    assert validate("START n60 d4 v80 END".split(), SPEC) == (1, "'n60' cannot follow state 'style' (expected style)")
    assert "'style:jazz' is not in the vocabulary" in validate("START style:jazz tempo:121 meter:3/4 END".split(),
                                                               SPEC)[1]


def test_lenient_decoder_skips_and_counts_bad_groups():
    text = "START inst:0 bar:2 pos:0 n60 d4 junk n62 d2 v70 pos:3 n64 pos:4 n65 d2 v3 bar:1 pos:0 n66 END n70 d1"
    notes, header, bad = tokens_to_notes(text.split(), SPEC)
    assert notes == [(0, 62, 2, 70, 0), (0, 60, 4, 80, 0), (4, 65, 2, 3, 0)]
    assert bad == 4  # inst:0 with no header before it, the junk, n64 and n66 cut off
    data, bad = text_to_midi("complete garbage \x00 ~~", SPEC)
    assert data.startswith(b"MThd") and bad == 4  # four stray tokens


parts = st.integers(0, 2)
note_lists = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 127), st.integers(0, 300), st.integers(0, 140),
                                parts), max_size=40)


@settings(max_examples=60, deadline=None)
@given(note_lists, st.sampled_from(["4/4", "3/4", "6/8", "5/8", "2/2"]))
def test_property_roundtrip_on_random_notes(notes, meter):
    header = Header(meter=meter, parts=(0, DRUMS, 42))
    tokens, again = roundtrip(notes, header)
    assert again == tokens
    assert validate(tokens, SPEC) is None
    back, back_header, bad = tokens_to_notes(tokens, SPEC)
    assert (back, bad) == (tidy_parts(canonical(notes, SPEC), header.parts, SPEC, Counter())[0], 0)
    assert notes_to_tokens(back, SPEC, back_header) == tokens  # decode -> encode is the identity


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(SPEC.vocab()[:60] + SPEC.vocab()[-30:] + [
    "d1", "d300", "v5", "p1", "p9", "pos:0", "pos:5", "pos:40", "bar:1", "bar:3", "bar:more", "meter:7/8", "inst:0",
    "inst:drums", "zz", "", "n", "style:", "ahead", START, END]), max_size=60))
def test_property_decoder_accepts_anything_and_is_idempotent(tokens):
    notes, header, _ = tokens_to_notes(tokens, SPEC)
    text = tokens_to_text(notes_to_tokens(notes, SPEC, header))
    assert validate(text.split(), SPEC) is None
    again, header_again, bad = tokens_to_notes(text.split(), SPEC)
    assert bad == 0 and tokens_to_text(notes_to_tokens(again, SPEC, header_again)) == text
    back, header_back, dropped = midi_to_notes(text_to_midi(text, SPEC)[0], SPEC)
    assert not dropped.get("overlap_shortened") and not dropped.get("duplicate_note")


def test_music21_corpus_pieces_roundtrip_with_their_parts():
    for name, parts in [("bach/bwv66.6", 4), ("palestrina/Agnus_01", 5), ("monteverdi/madrigal.3.1.mxl", 5)]:
        pieces = parse_score(__import__("music21").corpus.getWork(name))
        notes, header, dropped = score_to_notes(pieces[0][1], SPEC)
        assert len(notes) > 20 and len(header.parts) == parts, name
        tokens = notes_to_tokens(notes, SPEC, header)
        assert validate(tokens, SPEC) is None
        back, header_back, _ = midi_to_notes(text_to_midi(tokens_to_text(tokens), SPEC)[0], SPEC)
        assert notes_to_tokens(back, SPEC, replace(header_back, style=header.style)) == tokens, name


def test_a_chorale_is_four_sung_parts_with_its_pickup_in_place():
    notes, header, _ = score_to_notes(parse_score(__import__("music21").corpus.getWork("bach/bwv66.6"))[0][1], SPEC)
    assert header.parts == (52,) * 4 and header.meter == "4/4"
    assert min(n.start for n in notes) == 12  # a one-beat pickup: the last beat of a whole first bar
    soprano, bass = ([n.pitch for n in notes if n.part == k] for k in (0, 3))
    assert min(soprano) > max(bass)


def test_musicxml_is_one_staff_per_part_with_a_fitting_clef(tmp_path):
    from music21 import converter
    from music21.musicxml.m21ToXml import GeneralObjectExporter
    notes = canonical([(0, 72, 4, 80, 0), (0, 76, 4, 80, 0), (2, 79, 10, 80, 0), (4, 74, 3, 80, 0),
                       (0, 43, 16, 70, 1), (16, 41, 6, 70, 1), (22, 45, 2, 70, 1)], SPEC)
    header = Header(meter="3/4", parts=(40, 42), bpm=90)
    path = tmp_path / "x.musicxml"
    path.write_bytes(GeneralObjectExporter(notes_to_score(notes, SPEC, header)).parse())
    score = converter.parse(path, forceSource=True, storePickle=False)
    assert [p.partName for p in score.parts] == ["Violin", "Cello"]
    assert [type(p.recurse().getElementsByClass("Clef").first()).__name__ for p in score.parts] == [
        "TrebleClef", "BassClef"]
    back, back_header, _ = score_to_notes(score, SPEC)
    assert [n[:3] + n[4:] for n in back] == [n[:3] + n[4:] for n in notes]  # velocities aside: a score has dynamics
    assert (back_header.meter, back_header.bpm) == ("3/4", 90)


def test_abc_with_many_tunes_gives_one_piece_per_tune(tmp_path):
    abc = tmp_path / "two.abc"
    abc.write_text("X:1\nT:One\nM:4/4\nL:1/8\nK:C\nCDEF GABc|cBAG FEDC|\n\n"
                   "X:2\nT:Two\nM:3/4\nL:1/4\nK:G\nGAB|dBG|A3|\n")
    pieces = parse_score(abc)
    assert [s for s, _ in pieces] == ["_tune001", "_tune002"]
    counts = [len(score_to_notes(score, SPEC)[0]) for _, score in pieces]
    assert counts == [16, 7]
    assert [score_to_notes(score, SPEC)[1].meter for _, score in pieces] == ["4/4", "3/4"]


def test_repeats_and_endings_are_read_as_played(tmp_path):
    abc = tmp_path / "reel.abc"
    abc.write_text("X:1\nT:Reel\nM:4/4\nL:1/4\nK:D\n|:D E F G|1 A B c d:|2 d c B A||\n")
    notes, header, dropped = score_to_notes(parse_score(abc)[0][1], SPEC)
    assert [n.pitch for n in notes] == [62, 64, 66, 67, 69, 71, 73, 74, 62, 64, 66, 67, 74, 73, 71, 69]
    assert notes_to_tokens(notes, SPEC, header).count("bar:4") == 1 and not dropped


def test_strip_leading_silence_drops_whole_empty_bars_only():
    tokens = notes_to_tokens([(40, 60, 4, 80), (44, 62, 4, 80)], SPEC)
    clean = strip_leading_silence(tokens)
    assert clean[:7] == "START style:other tempo:121 meter:4/4 inst:0 bar:1 pos:8".split()
    assert strip_leading_silence(clean) == clean
    changed = notes_to_tokens([(24, 60, 4, 80)], SPEC, Header(meter="3/4", changes=((1, "2/4"),)))
    assert strip_leading_silence(changed)[3:7] == ["meter:2/4", "inst:0", "bar:1", "pos:4"]


def test_first_edition_encodings_are_named():
    with pytest.raises(ValueError, match="first edition"):
        check_edition("START style:bach tempo:121 meter:4/4 n60 d4 v80 END".split(), "a.txt")
    check_edition(notes_to_tokens([(0, 60, 4, 80)], SPEC), "b.txt")


def test_the_round_trip_tool_keeps_a_users_style_tempo_meter_and_parts(tmp_path):
    folder = tmp_path / "waltz"
    folder.mkdir()
    tempo = meta(0x51, (60_000_000 // 90).to_bytes(3, "big")) + meta(0x58, bytes([3, 2, 24, 8]))
    (folder / "w.mid").write_bytes(midi_file(track(tempo), scale(6, 72, ch=0), track(
        program(42, ch=1), on(48, 80, 1) + off(48, 1, delta=1440))))
    tool = lambda *a: subprocess.run([sys.executable, str(ROOT / "midi_io.py"), *map(str, a)],
                                     capture_output=True, text=True, cwd=tmp_path)
    text = tool(folder / "w.mid")
    assert text.returncode == 0 and text.stdout.startswith("START style:waltz tempo:90 meter:3/4 inst:0 inst:42")
    (tmp_path / "w.txt").write_text(text.stdout)
    r = tool(tmp_path / "w.txt", tmp_path / "back.mid")
    assert r.stdout.strip() == "decoded cleanly"
    notes, header, _ = midi_to_notes((tmp_path / "back.mid").read_bytes(), SPEC)
    assert (round(header.bpm), header.meter, header.parts) == (90, "3/4", (0, 42)) and len(notes) == 7


def test_a_pickup_is_written_from_its_first_note_in_midi_and_musicxml(tmp_path):
    from music21 import converter, midi
    from music21.musicxml.m21ToXml import GeneralObjectExporter
    # a 3/4 piece whose first bar holds only the last beat (a pickup); the violin has two voices in the pickup, the
    # viola enters in it with a note tied over the bar line, the cello on the first downbeat
    notes = canonical([(8, 72, 4, 80, 0), (8, 76, 2, 80, 0), (10, 74, 2, 80, 0), (12, 79, 14, 80, 0),
                       (26, 77, 2, 80, 0), (10, 55, 14, 70, 1), (12, 43, 12, 70, 2), (24, 41, 12, 70, 2)], SPEC)
    header = Header(meter="3/4", parts=(40, 41, 42), bpm=90)
    assert pickup(notes, header, SPEC.sample_freq) == (8, "1/4")
    mf = midi.MidiFile()
    mf.readstr(notes_to_midi(notes, SPEC, header))
    events, tick = [], 0
    for ev in mf.tracks[0].events + mf.tracks[1].events:
        tick = 0 if ev.type == midi.MetaEvents.END_OF_TRACK else tick + (ev.time if ev.isDeltaTime() else 0)
        if not ev.isDeltaTime():
            events.append((tick, ev.type, ev.data if ev.type == midi.MetaEvents.TIME_SIGNATURE else ev.pitch))
    meters = [(t, d[:2]) for t, kind, d in events if kind == midi.MetaEvents.TIME_SIGNATURE]
    assert meters == [(0, bytes([1, 2])), (480, bytes([3, 2]))]  # 1/4, then 3/4 from the first downbeat
    assert min(t for t, kind, _ in events if kind == midi.ChannelVoiceMessages.NOTE_ON) == 0  # no silent bar
    back, back_header, _ = midi_to_notes(notes_to_midi(notes, SPEC, header), SPEC)
    assert back == notes and (back_header.meter, back_header.changes) == ("3/4", ())
    path = tmp_path / "x.musicxml"
    path.write_bytes(GeneralObjectExporter(notes_to_score(notes, SPEC, header)).parse())
    assert path.read_bytes() == GeneralObjectExporter(notes_to_score(notes, SPEC, header)).parse()  # no random ids
    score = converter.parse(path, forceSource=True, storePickle=False)
    first = [p.getElementsByClass("Measure").first() for p in score.parts]
    assert [(m.number, m.paddingLeft, m.duration.quarterLength) for m in first] == [(0, 2.0, 1.0)] * 3
    back, back_header, _ = score_to_notes(score, SPEC)
    assert [n[:3] + n[4:] for n in back] == [n[:3] + n[4:] for n in notes] and back_header.meter == "3/4"
    # a piece that opens on its downbeat, or in one bar, has no pickup
    assert pickup([n._replace(start=n.start - 8) for n in notes], header, SPEC.sample_freq) == (0, None)
    assert pickup(notes[:3], header, SPEC.sample_freq) == (0, None)
