from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from conftest import midi_file, off, on, scale, track
from encoding_decoding import (END, SEP, START, Header, Spec, canonical, midi_to_notes, notes_to_midi, notes_to_tokens,
                               parse_score, score_to_notes, text_to_midi, tokens_to_notes, tokens_to_text,
                               validate)

SPEC = Spec()


def roundtrip(notes):
    """notes -> tokens -> MIDI bytes -> notes -> tokens."""
    tokens = notes_to_tokens(canonical(notes, SPEC), SPEC)
    back, _, dropped = midi_to_notes(notes_to_midi(canonical(notes, SPEC), SPEC), SPEC)
    return tokens, notes_to_tokens(back, SPEC)


def test_format_of_a_chord_then_a_rest():
    notes = [(0, 64, 4, 70), (0, 72, 4, 80), (0, 48, 8, 75), (4, 74, 2, 82)]
    assert " ".join(notes_to_tokens(canonical(notes, SPEC), SPEC)) == \
        "START style:other tempo:121 meter:4/4 n72 d4 v80 n64 d4 v70 n48 d8 v75 sepxx d4 n74 d2 v82 END"


def test_long_rest_is_split_and_long_note_clamped():
    dropped = Counter()
    notes = canonical([(0, 60, 500, 80), (300, 62, 4, 80)], SPEC, dropped)
    tokens = notes_to_tokens(notes, SPEC)
    assert tokens[4:7] == ["n60", "d128", "v80"]
    assert tokens[7:13] == [SEP, "d128", SEP, "d128", SEP, "d44"]
    assert dropped["duration_clamped"] == 1


@pytest.mark.parametrize("notes", [
    [(0, 60, 4, 80), (0, 64, 4, 80), (0, 67, 8, 80), (8, 72, 4, 100)],            # chords
    [(0, 60, 16, 80), (4, 60, 4, 90), (6, 60, 2, 50)],                             # overlapping same pitch
    [(0, 60, 2, 80), (1000, 62, 2, 80), (1000, 50, 128, 1), (1300, 108, 1, 127)],  # long rests, extremes
])
def test_roundtrip_through_midi(notes):
    tokens, again = roundtrip(notes)
    assert again == tokens
    assert validate(tokens, SPEC) is None


def test_several_tracks_merge_and_drums_are_dropped():
    data = midi_file(track(), scale(4, 60, ch=0), scale(4, 40, ch=3), scale(4, 36, ch=9))
    notes, _, dropped = midi_to_notes(data, SPEC)
    assert sorted({p for _, p, _, _ in notes}) == [40, 41, 42, 43, 60, 61, 62, 63]
    assert [n[:3] for n in notes[:2]] == [(0, 60, 2), (0, 40, 2)]  # 240 ticks = an eighth = 2 steps
    assert dropped["drums"] == 4
    kept, _, _ = midi_to_notes(data, SPEC, keep_drums=True)
    assert len(kept) == 12


def test_note_on_velocity_zero_is_note_off_and_pairing_is_fifo():
    # on 60 at 0, on 60 at 240, offs at 480 and 960: first in, first out -> (0..480) and (240..960),
    # then the first is cut where the second starts.
    data = midi_file(track(on(60, 100), on(60, 50, delta=240), off(60, delta=240, zero_velocity_on=True),
                           off(60, delta=480)))
    notes, _, dropped = midi_to_notes(data, SPEC)
    assert notes == [(0, 60, 2, 100), (2, 60, 6, 50)]
    assert dropped["overlap_shortened"] == 1


def test_out_of_range_pitches_and_unmatched_offs_are_counted():
    data = midi_file(track(on(10), off(10, delta=480), on(60), off(60, delta=480), off(61), on(62)))
    notes, _, dropped = midi_to_notes(data, SPEC)
    assert [n[1] for n in notes] == [60, 62]
    assert dropped == Counter(pitch_out_of_range=1, note_off_without_on=1, closed_at_track_end=1)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"hello, I am a text file\n", "not a MIDI file"),
    (midi_file(scale(), fmt=2), "type-2"),
    (midi_file(scale(), division=0xE728), "SMPTE"),
    (midi_file(scale())[:-7], "truncated"),
    (midi_file(scale()).replace(b"MTrk\x00\x00", b"MTrk\x7f\x00", 1), "bad chunk length"),
    (midi_file(track(on(60), off(60, delta=0x0FFFFFFF))), "max_piece_steps"),
])
def test_bad_midi_gives_a_clear_reason(data, reason):
    with pytest.raises(ValueError, match=reason):
        midi_to_notes(data, SPEC)


def test_validator_says_where_it_breaks():
    head = "START style:bach tempo:121 meter:3/4"
    assert validate(f"{head} n60 d4 v80 END".split(), SPEC) is None
    assert validate(f"{head} n60 v80 END".split(), SPEC)[0] == 5
    assert validate(f"{head} n60 d4 v80".split(), SPEC)[0] == 7
    assert validate(f"{head} n60 d999 v80 END".split(), SPEC)[0] == 5
    assert validate("n60 d4 v80 END".split(), SPEC)[0] == 0
    assert validate(f"{head} END n60".split(), SPEC)[0] == 5
    assert validate("START n60 d4 v80 END".split(), SPEC) == (1, "'n60' cannot follow state 'style' (expected style)")
    assert validate("START tempo:121 style:bach meter:3/4 END".split(), SPEC)[0] == 1  # header order is fixed
    assert "'style:jazz' is not in the vocabulary" in validate("START style:jazz tempo:121 meter:3/4 END".split(), SPEC)[1]


def test_lenient_decoder_skips_and_counts_bad_groups():
    notes, _, bad = tokens_to_notes("START n60 d4 junk n62 d2 v70 sepxx n64 d2 v3 sepxx d4 n65 END n70 d1 v1".split(), SPEC)
    assert notes == [(0, 64, 2, 3), (0, 62, 2, 70)]
    assert bad == 4  # n60 d4 cut off, the junk itself, the bare sepxx, the n65 cut off by END
    data, bad = text_to_midi("complete garbage \x00 ~~", SPEC)
    assert data.startswith(b"MThd") and bad == 4  # four stray tokens


note_lists = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 127), st.integers(0, 300), st.integers(0, 140)),
                      max_size=40)


@settings(max_examples=60, deadline=None)
@given(note_lists)
def test_property_roundtrip_on_random_notes(notes):
    tokens, again = roundtrip(notes)
    assert again == tokens
    assert validate(tokens, SPEC) is None
    assert tokens_to_notes(tokens, SPEC) == (canonical(notes, SPEC), Header(bpm=121.0), 0)  # the bucket's BPM


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(SPEC.vocab()[:60] + SPEC.vocab()[-30:] +
                                ["d1", "d300", "v5", "zz", "", "n", "style:", "meter:7/4", START, END, SEP]),
                max_size=60))
def test_property_decoder_accepts_anything_and_is_idempotent(tokens):
    notes, header, _ = tokens_to_notes(tokens, SPEC)
    text = tokens_to_text(notes_to_tokens(notes, SPEC, header))
    back, header_back, dropped = midi_to_notes(text_to_midi(text, SPEC)[0], SPEC)
    assert dropped == Counter()  # canonical notes survive MIDI untouched
    assert tokens_to_text(notes_to_tokens(back, SPEC, replace(header_back, style=header.style))) == text


def test_music21_corpus_pieces_roundtrip():
    from music21 import corpus
    for name in ["bach/bwv66.6", "palestrina/Agnus_01", "monteverdi/madrigal.3.1.mxl"]:
        path = corpus.getWork(name)
        pieces = parse_score(path)
        notes, header, dropped = score_to_notes(pieces[0][1], SPEC)
        assert len(notes) > 20, name
        tokens = notes_to_tokens(notes, SPEC, header)
        assert validate(tokens, SPEC) is None
        back, header_back, _ = midi_to_notes(text_to_midi(tokens_to_text(tokens), SPEC)[0], SPEC)
        again = notes_to_tokens(back, SPEC, header_back)
        assert again[4:] == tokens[4:] and again[:3] == tokens[:3]  # a meter:other is written as no time signature
        assert tokens[3] in (again[3], "meter:other"), name


def test_abc_with_many_tunes_gives_one_piece_per_tune(tmp_path):
    abc = tmp_path / "two.abc"
    abc.write_text("X:1\nT:One\nM:4/4\nL:1/8\nK:C\nCDEF GABc|cBAG FEDC|\n\n"
                   "X:2\nT:Two\nM:3/4\nL:1/4\nK:G\nGAB|dBG|A3|\n")
    pieces = parse_score(abc)
    assert [s for s, _ in pieces] == ["_tune001", "_tune002"]
    counts = [len(score_to_notes(score, SPEC)[0]) for _, score in pieces]
    assert counts == [16, 7]
    assert [score_to_notes(score, SPEC)[1].meter for _, score in pieces] == ["4/4", "3/4"]
