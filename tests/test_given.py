"""Given material: blocks shown ahead in the grammar, the mask that writes given notes where they sound, and
sample.py's --melody, --infill and --add_part."""
import json
import random
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings, strategies as st

import config
from conftest import ROOT, body, midi_file, off, on, run, sample_here, track
from controls import Controls, add_part, given_repeats, harmonize, infill, top_line
from encoding_decoding import (AHEAD, DRUMS, END, START, Header, Note, Spec, Tokenizer, canonical, finish,
                               given_variant, kind, notes_to_tokens, tokens_to_notes, validate)
from mask import GrammarMask, mask_rows
from midi_io import midi_to_notes, notes_to_midi
from model import sample_logits

SPEC = Spec()
TOK = Tokenizer(SPEC)
HEADER = Header(style="bach", bpm=96, meter="4/4", parts=(52, 52, 52, 52))


def chorale(bars=6, seed=0):
    """Four voices in quarters and halves, a rest here and there, in canonical form."""
    rng, notes = random.Random(seed), []
    for part, (lo, hi) in enumerate(((67, 79), (60, 72), (53, 65), (41, 55))):
        t = 0
        while t < 16 * bars:
            dur = rng.choice((4, 4, 8, 2))
            if rng.random() > 0.1:
                notes.append(Note(t, rng.randint(lo, hi), min(dur, 16 * bars - t), 70 + 10 * part, part))
            t += dur
    return canonical(notes, SPEC)


def hold(header, bars):
    return Controls(style=header.style, tempo=header.bpm, meter=header.meter, bars=bars, instruments=header.parts)


def test_blocks_stand_before_bar_lines_and_decode_away():
    notes = [Note(0, 72, 4, 80, 0), Note(0, 60, 8, 80, 1), Note(20, 74, 4, 80, 0), Note(36, 76, 8, 80, 0)]
    header = Header(parts=(52, 52))
    tokens = notes_to_tokens(notes, SPEC, header, given=[n for n in notes if n.part == 0])
    assert " ".join(tokens[6:]) == ("ahead pos:0 n72 d4 ahead pos:4 n74 d4 bar:3 pos:0 n72 d4 v80 p1 n60 d8 v80 "
                                    "ahead pos:4 n76 d8 bar:2 pos:4 p0 n74 d4 bar:1 pos:4 n76 d8 END")
    assert validate(tokens, SPEC) is None
    assert tokens_to_notes(tokens, SPEC)[0] == notes


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 9))
def test_property_a_given_variant_is_the_same_piece(seed, bars):
    notes = chorale(bars, seed)
    plain = notes_to_tokens(notes, SPEC, HEADER)
    variant = given_variant(plain, SPEC, random.Random(seed))
    assert validate(variant, SPEC) is None and variant.count(AHEAD) == bars
    assert tokens_to_notes(variant, SPEC)[:2] == tokens_to_notes(plain, SPEC)[:2]
    assert body(variant) == plain  # the piece as it was, its blocks aside


def test_given_kinds_choose_what_a_variant_gives():
    """Only the melody given (prepare.py --given_kinds melody): the variant is the piece with its top part shown
    ahead, whatever the draw; a one-part piece, which only a gap fits, stays plain (None) unless bars may be given."""
    notes = chorale(4, 3)
    top = [n for n in notes if n.part == 0]
    for seed in range(5):
        variant = given_variant(notes_to_tokens(notes, SPEC, HEADER), SPEC, random.Random(seed), ("melody",))
        assert variant == notes_to_tokens(notes, SPEC, HEADER, given=top)
    line = notes_to_tokens(top, SPEC, Header(style="bach", bpm=96, meter="4/4", parts=(52,)))
    assert given_variant(line, SPEC, random.Random(0), ("melody", "parts")) is None
    assert given_variant(line, SPEC, random.Random(0), ("melody", "bars")).count(AHEAD) == 4


def walk(mask, n, seed, prompt=(), steps=3000):
    """Sample from random logits under the mask until every row has ended."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.tensor([[TOK.stoi[START]] + TOK.encode(list(prompt))] * n)
    bars = torch.tensor([t.startswith(("bar:", "pos:")) for t in TOK.itos])
    for _ in range(steps):
        logits = torch.randn(n, TOK.vocab_size, generator=gen) * 3 + 3 * bars
        nxt = sample_logits(logits.masked_fill(~mask(idx), float("-inf")), 1.0, None, None, gen)
        idx = torch.cat([idx, nxt[:, None]], dim=1)
        if (nxt == TOK.stoi[END]).all():
            break
    return [finish(TOK.decode(row)) for row in idx.tolist()]


@pytest.mark.parametrize("ahead", [True, False])
def test_a_melody_is_kept_note_for_note_on_random_logits(ahead):
    melody = [n for n in chorale(5, 1) if n.part == 0]
    prompt, material, bars = harmonize(melody, HEADER, SPEC, ahead)
    mask = GrammarMask(TOK, "cpu", Controls(style="bach", bars=bars, meter="4/4"), material=material)
    for tokens in walk(mask, 6, 2, prompt):
        assert validate(tokens, SPEC) is None and tokens.count(AHEAD) == (bars if ahead else 0)
        notes, header, _ = tokens_to_notes(tokens, SPEC)
        assert [n for n in notes if n.part == 0] == melody and len(header.parts) >= 2 and header.bars == bars
        # the melody is the top voice at every one of its notes (drums aside)
        pitched = [n for n in notes if n.part > 0 and header.parts[n.part] != DRUMS]
        assert not any(o.pitch > m.pitch and o.start < m.end and m.start < o.end for m in melody for o in pitched)


def phrase(pitches, at):
    """A bar of melody from step `at`: quarters, a half note where a pitch is None's predecessor (held on)."""
    notes = []
    for k, p in enumerate(pitches):
        if p is None:
            notes[-1] = notes[-1]._replace(dur=notes[-1].dur + 4)
        else:
            notes.append(Note(at + 4 * k, p, 4, 80, 0))
    return notes


def test_given_repeats_are_the_runs_of_bars_the_given_notes_repeat():
    """Bars 4-6 repeat bars 0-2 (a chorale's Stollen sung again): their model bars, where the run is at least as
    long as asked; not the last bar, a run that a note is tied into, nor the bar a note rings out of."""
    x = [[67, 69, 71, 72], [74, None, 72, 71], [69, 67, 66, 67]]
    bars = lambda rows: [n for b, row in enumerate(rows) for n in phrase(row, 16 * b)]
    lines = list(range(0, 16 * 9, 16))  # 8 bars
    melody = bars(x + [[71, 72, 74, 76]] + x + [[67, None, None, None]])
    assert given_repeats(melody, lines, 3) == given_repeats(melody, lines, 2) == ((4, 0), (5, 1), (6, 2))
    assert given_repeats(melody, lines, 4) == given_repeats(melody, lines, 0) == ()
    # the last bar is the cadence: a run that reaches it stops before it
    assert given_repeats(bars(x + [[71, 72, 74, 76]] + x), lines[:-1], 2) == ((4, 0), (5, 1))
    # bars 4-7 repeat bars 0-3 (bar 1 opens on a rest), but bar 4's last note is tied over bar 5's rest: no run
    # starts on it (its notes are bar 1's, its sound is not); a note rung out of bar 6: the run ends before it
    y = [[67, 69, 71, 72], [None, 74, 72, 71], [69, 67, 66, 67], [71, 72, 74, 76]]
    tied = [n for b, row in enumerate(y + y) for n in phrase(row[row[0] is None:], 16 * b + 4 * (row[0] is None))]
    tied = [n._replace(dur=8) if n.start == 76 else n for n in tied] + [Note(128, 67, 16, 80, 0)]
    assert given_repeats(tied, lines + [144], 2) == ((6, 2), (7, 3))  # (else bars 5-7 from bar 1)
    assert given_repeats([n._replace(dur=4) for n in tied], lines + [144], 2) == ((4, 0), (5, 1), (6, 2), (7, 3))
    rung = [n._replace(dur=8) if n.start == 108 else n for n in melody if n.start != 112]
    assert given_repeats(rung, lines, 2) == ((4, 0), (5, 1)) and given_repeats(rung, lines, 3) == ()


def test_where_a_melody_repeats_its_bars_the_parts_under_it_repeat_theirs():
    """A chorale's Stollen sung twice (a pickup, bars 1-3, a close and the next pickup in bar 4, bars 5-7 again), then
    a bar whose last note is tied into the last: under the melody's repeats (form auto) every part of bars 5-7 sings
    what it sang in bars 1-3, no note rings into the run or past it, and the rules of part writing and the melody
    still hold; on random logits without them the parts go elsewhere."""
    x = [[67, 69, 71, 72], [74, None, 72, 71], [69, 67, 66, 67]]
    stollen = [n for b, row in enumerate(x) for n in phrase(row, 16 * (b + 1))]
    melody = ([Note(12, 67, 4, 80, 0)] + stollen + phrase([71, None, 69, 67], 64)
              + [n._replace(start=n.start + 64) for n in stollen] + phrase([72, 71, 69, 71], 128))
    melody[-1] = melody[-1]._replace(dur=8)
    melody += [Note(148, 69, 4, 80, 0), Note(152, 67, 8, 80, 0)]
    prompt, material, bars = harmonize(melody, HEADER, SPEC, ahead=True, repeats=3)  # (shown ahead, as it can
    # deadlock: a block must wait for the bar's repeated notes)
    assert bars == 10 and material.repeats == ((5, 1), (6, 2), (7, 3))
    controls = Controls(style="bach", bars=bars, meter="4/4", instruments=(52,) * 4, voice_leading=True, choir=True)
    lines = HEADER.bar_lines(SPEC.sample_freq, bars)
    # a bar's notes, those ringing past its run's end (bar 4 for bars 1-3, bar 8 for 5-7) cut there as a repeat cuts
    # (and their velocities aside: a repeat, as a form's, names none but the melody's)
    bar = lambda notes, b: [(n.start - lines[b], n.part, n.pitch, min(n.end - lines[b], 16 * (4 - b % 4)))
                            for n in notes if lines[b] <= n.start < lines[b + 1]]
    for repeats in (material.repeats, ()):
        same = []
        for tokens in walk(GrammarMask(TOK, "cpu", controls, material=replace(material, repeats=repeats)), 3, 3,
                           prompt):
            assert validate(tokens, SPEC) is None
            notes, header, _ = tokens_to_notes(tokens, SPEC)
            assert [n for n in notes if n.part == 0] == melody and header.bars == bars
            assert not any(o.pitch > m.pitch and o.start < m.end and m.start < o.end
                           for m in melody for o in notes if o.part > 0)
            same.append(all(bar(notes, b) == bar(notes, model) for b, model in material.repeats))
            if repeats:  # no note sounds across the run's first or last bar line
                assert not any(n.start < lines[at] < n.end for n in notes for at in (5, 8))
        assert all(same) if repeats else not any(same)


def test_a_voice_led_harmonization_ends_on_a_tonic_triad_holding_the_melodys_last_note():
    """--voice_leading without --key: the last bar is one chord, the tonic triad of the key that the piece (the given
    melody and the sampled parts) suggests among those whose triad holds the melody's last note, the root in the
    bass."""
    pitches = [67, 69, 71, 72, 74, 72, 71, 69, 67, 66, 64, 66, 67, 71, 74, 71]  # G major, then B held
    melody = [Note(4 * k, p, 4, 80, 0) for k, p in enumerate(pitches)] + [Note(64, 71, 16, 80, 0)]
    prompt, material, bars = harmonize(melody, HEADER, SPEC, ahead=False)
    controls = Controls(style="bach", bars=bars, meter="4/4", instruments=(52,) * 4, voice_leading=True)
    for tokens in walk(GrammarMask(TOK, "cpu", controls, material=material), 4, 5, prompt):
        notes = tokens_to_notes(tokens, SPEC)[0]
        assert [n for n in notes if n.part == 0] == melody
        assert all(n.end <= 64 for n in notes if n.start < 64)  # struck anew
        last = {n.pitch % 12 for n in notes if n.start >= 64}
        bass = {n.pitch % 12 for n in notes if n.start >= 64 and n.part == 3}
        assert len(bass) == 1
        root = bass.pop()
        assert any(last <= triad and 11 in triad for triad in ({root, (root + 3) % 12, (root + 7) % 12},
                                                                {root, (root + 4) % 12, (root + 7) % 12}))


def test_a_voice_led_harmonization_closes_on_the_dominant_where_the_melody_allows():
    """Rule "cadence": the last beat before the last bar is the dominant's chord (G major's: D F# A C), its root in
    the bass, where the melody's note there is one of its notes (A); where it is not (B), the parts go free."""
    def last_beats(last_but_one):
        pitches = [67, 69, 71, 72, 74, 72, 71, 69, 67, 66, 64, 66, 67, 71, 74, last_but_one]
        melody = [Note(4 * k, p, 4, 80, 0) for k, p in enumerate(pitches)] + [Note(64, 67, 16, 80, 0)]
        prompt, material, bars = harmonize(melody, HEADER, SPEC, ahead=False)
        controls = Controls(style="bach", bars=bars, meter="4/4", instruments=(52,) * 4, voice_leading=True,
                            triad=(7, 11, 2), voice_leading_rules=("rests", "parallels", "ending", "cadence"))
        for tokens in walk(GrammarMask(TOK, "cpu", controls, material=material), 4, 7, prompt):
            notes = tokens_to_notes(tokens, SPEC)[0]
            assert [n for n in notes if n.part == 0] == melody
            beat = [n for n in notes if n.start < 64 and n.end > 60]
            yield {n.pitch % 12 for n in beat}, {n.pitch % 12 for n in beat if n.part == 3}
    for chord, bass in last_beats(69):
        assert chord <= {2, 6, 9, 0} and bass == {2}, (chord, bass)
    assert any(not chord <= {2, 6, 9, 0} for chord, _ in last_beats(71))


def test_a_melody_closing_on_its_third_beat_gets_its_cadence_there():
    """A chorale's melody often closes on the last bar's third beat (B A | G): the final chord is struck with its last
    note (or its first where it strikes it again), the dominant in the beat before it, and the last bar's first beat
    is free (it was held to the tonic triad, under the melody's 3 2 1: I I I, no cadence; 40 harmonizations of
    validation chorales reached their last chord from the dominant in 8 %, Bach's own in 75 %)."""
    pitches = [67, 69, 71, 72, 74, 72, 71, 69, 67, 66, 64, 66]
    melody = [Note(4 * k, p, 4, 80, 0) for k, p in enumerate(pitches)]
    melody += [Note(48, 71, 4, 80, 0), Note(52, 69, 4, 80, 0), Note(56, 67, 8, 80, 0)]
    prompt, material, bars = harmonize(melody, HEADER, SPEC, ahead=False)
    controls = Controls(style="bach", bars=bars, meter="4/4", instruments=(52,) * 4, voice_leading=True,
                        triad=(7, 11, 2), voice_leading_rules=("rests", "parallels", "ending", "cadence"))
    opened = []
    for tokens in walk(GrammarMask(TOK, "cpu", controls, material=material), 4, 8, prompt):
        notes = tokens_to_notes(tokens, SPEC)[0]
        assert [n for n in notes if n.part == 0] == melody
        at = lambda t: {(n.pitch % 12, n.part == 3) for n in notes if n.start <= t < n.end}
        assert {pc for pc, _ in at(56)} <= {7, 11, 2} and {pc for pc, bass in at(56) if bass} == {7}
        assert all(n.end <= 56 for n in notes if n.start < 56)  # struck anew
        assert {pc for pc, _ in at(52)} <= {2, 6, 9, 0} and {pc for pc, bass in at(52) if bass} == {2}
        opened.append({pc for pc, _ in at(48)})
    assert any(not chord <= {7, 11, 2} for chord in opened)  # the last bar's first beat: the model's
    # the melody's G held into that beat and left for F# in it (1 7 | 1, a suspension): the parts' dominant under it
    melody[-3:] = [Note(48, 67, 6, 80, 0), Note(54, 66, 2, 80, 0), Note(56, 67, 8, 80, 0)]
    prompt, material, bars = harmonize(melody, HEADER, SPEC, ahead=False)
    for tokens in walk(GrammarMask(TOK, "cpu", controls, material=material), 4, 9, prompt):
        notes = tokens_to_notes(tokens, SPEC)[0]
        written = {(n.pitch % 12, n.part == 3) for n in notes if n.part > 0 and n.start < 56 and n.end > 52}
        assert {pc for pc, _ in written} <= {2, 6, 9, 0} and {pc for pc, bass in written if bass} == {2}, written
    # the melody's G struck again (A G | G): the close begins with its first G, the dominant in the beat before it
    melody[-3:] = [Note(48, 69, 4, 80, 0), Note(52, 67, 4, 80, 0), Note(56, 67, 8, 80, 0)]
    prompt, material, bars = harmonize(melody, HEADER, SPEC, ahead=False)
    for tokens in walk(GrammarMask(TOK, "cpu", controls, material=material), 4, 10, prompt):
        notes = tokens_to_notes(tokens, SPEC)[0]
        written = lambda a, b: {(n.pitch % 12, n.part == 3) for n in notes if n.part > 0 and n.start < b and n.end > a}
        assert {pc for pc, _ in written(48, 52)} <= {2, 6, 9, 0} and {pc for pc, b in written(48, 52) if b} == {2}
        assert {pc for pc, _ in written(52, 64)} <= {7, 11, 2} and {pc for pc, b in written(52, 64) if b} == {7}
    # its G anticipated by a quaver (A A G | G): the dominant holds under the anticipation, the close is the last G
    # (Bach's, in all 30 of his chorales whose melody closes so)
    melody[-3:] = [Note(48, 69, 4, 80, 0), Note(52, 69, 2, 80, 0), Note(54, 67, 2, 80, 0), Note(56, 67, 8, 80, 0)]
    prompt, material, bars = harmonize(melody, HEADER, SPEC, ahead=False)
    for tokens in walk(GrammarMask(TOK, "cpu", controls, material=material), 3, 11, prompt):
        notes = tokens_to_notes(tokens, SPEC)[0]
        written = lambda a, b: {(n.pitch % 12, n.part == 3) for n in notes if n.part > 0 and n.start < b and n.end > a}
        assert {pc for pc, _ in written(52, 56)} <= {2, 6, 9, 0} and {pc for pc, b in written(52, 56) if b} == {2}
        assert {pc for pc, _ in written(56, 64)} <= {7, 11, 2} and all(n.end <= 56 for n in notes if n.start < 56)


@pytest.mark.parametrize("ahead", [False, True])
def test_a_voice_led_harmonization_opens_on_the_tonic_triad(ahead):
    """Rule "beginning": the first onset is the tonic triad of the key the melody suggests, the root in the bass, or
    its relative key's where only that triad holds the melody's first note (the shipped model, heard only that
    first note, opened BWV 139.6's E major soprano on a C major chord); the rules without it leave the model's."""
    def first_chords(pitches, rules):
        melody = [Note(4 * k, p, 4, 80, 0) for k, p in enumerate(pitches)]
        prompt, material, bars = harmonize(melody, HEADER, SPEC, ahead)
        controls = Controls(style="bach", bars=bars, meter="4/4", instruments=(52,) * 4, voice_leading=True,
                            voice_leading_rules=rules, choir=True)  # (a voice in its range: room for the root)
        for tokens in walk(GrammarMask(TOK, "cpu", controls, material=material), 5, 6, prompt):
            notes = tokens_to_notes(tokens, SPEC)[0]
            assert [n for n in notes if n.part == 0] == melody
            yield ({n.pitch % 12 for n in notes if n.start == 0},
                   {n.pitch % 12 for n in notes if n.start == 0 and n.part == 3})  # (the bass: the last part)
    g_major = [71, 72, 74, 72, 71, 69, 67, 66, 64, 66, 67, 71, 74, 71, 69, 67]  # opens on B, the third
    e_minor = [74, 71, 67, 66, 64, 66, 67, 71, 72, 71, 69, 67, 66, 64, 63, 64]  # read in E minor, opens on D
    for pitches, triad in ((g_major, {7, 11, 2}), (e_minor, {7, 11, 2})):
        for chord, bass in first_chords(pitches, config.voice_leading_rules):
            assert chord <= triad and bass == {7}, (chord, bass)
    if not ahead:  # (the control, once)
        assert any(not chord <= {7, 11, 2} for chord, _ in first_chords(g_major, ("rests", "ending")))


def test_an_infill_keeps_every_other_note_and_its_seams():
    notes = chorale(8, 3)
    prompt, material, bars = infill(notes, HEADER, SPEC, 3, 5)
    lo, hi = 32, 80
    mask = GrammarMask(TOK, "cpu", hold(HEADER, bars), material=material)
    for tokens in walk(mask, 6, 4, prompt):
        assert validate(tokens, SPEC) is None
        got = tokens_to_notes(tokens, SPEC)[0]
        assert [n for n in got if not lo <= n.start < hi] == [n for n in notes if not lo <= n.start < hi]
        assert all(n.end <= hi for n in got if lo <= n.start < hi)  # nothing new rings into the given bars
        for a in got:  # no key struck again while it sounds in its part, at either seam
            assert not any(b.part == a.part and b.pitch == a.pitch and a.start < b.start < a.end for b in got)


def test_what_the_mask_leaves_no_choice_is_read_at_once_and_draws_what_reading_each_token_draws():
    """An infill on the shipped model: after the gap every token is given, one per step under the mask, and the model
    read each as it came. Now a run of tokens the mask leaves no choice is taken without the model and read in one
    pass when a choice comes, and the draw is the same as a loop's that runs the whole model again at every token."""
    from controls import Request
    from mask import draw
    from runs import load_run
    model, tok, _ = load_run(ROOT / "models/corpus", "cpu")
    prompt, material, bars = infill(chorale(3, 1), HEADER, SPEC, 2, 2)
    request = Request(hold(HEADER, bars), tuple(prompt), material)
    reads = []
    hook = model.register_forward_hook(lambda module, args, out: reads.append(args[0].size(1)))
    got = draw(model, tok, request, 1, seed=3, max_new=400)[0]
    hook.remove()
    mask = GrammarMask(tok, "cpu", request.controls, [None] * (1 + len(prompt)), material)
    forced = [tok.stoi[t] for t in prompt]
    idx, generator, choices = torch.tensor([[tok.stoi[START], *forced]]), torch.Generator().manual_seed(3), 0
    torch.manual_seed(3)
    while idx[0, -1] != tok.stoi[END]:
        allowed = mask(idx)
        choices += int(allowed.sum() > 1)
        with torch.no_grad():
            logits = mask.pool(model(idx)[0][:, -1].float()).masked_fill(~allowed, float("-inf"))
        idx = torch.cat([idx, sample_logits(logits, 1.0, None, None, generator)[:, None]], 1)
    assert got[:got.index(END) + 1] == tok.decode(idx[0].tolist())
    drawn = idx.size(1) - 1 - len(prompt)  # (118 tokens: 64 chosen, then the last bar, given, and END)
    assert len(reads) == 1 + choices and reads[1] >= len(prompt)  # START; the prompt, read when the first choice comes
    assert sum(reads) <= idx.size(1) - 40 and choices < drawn - 40  # the last bar's notes: never read, nor needed


def test_an_added_part_leaves_the_given_parts_alone():
    notes = [n for n in chorale(4, 5) if n.part < 3]
    header = Header(style="bach", bpm=96, meter="4/4", parts=(52, 52, 52))
    prompt, material, bars = add_part(notes, header, SPEC)
    mask = GrammarMask(TOK, "cpu", Controls(bars=bars, meter="4/4", instruments=(52, 52, 52, 32), pitch_range=(40, 64)),
                       material=material)
    for tokens in walk(mask, 6, 6, prompt):
        got, head, _ = tokens_to_notes(tokens, SPEC)
        assert head.parts == (52, 52, 52, 32) and [n for n in got if n.part < 3] == notes
        assert all(40 <= n.pitch <= 64 for n in got if n.part == 3)


def test_an_added_bass_roots_the_first_and_last_chords():
    """--add_part bass under voice leading: the bass's first and last notes are the tonic's root, as the lowest of a
    harmonization's written parts are (before, an added part was the only one written, so no rule knew it for the
    bass: it could open and close on the third or fifth); the key's triad holds the given parts' last chord, so parts
    that close on another triad get its root (the top note alone left BWV 244.15's close on D major under a B)."""
    upper = [(76, 72, 67), (74, 71, 67), (72, 69, 64), (71, 67, 62), (72, 67, 64), (74, 71, 65), (72, 67, 64),
             (71, 67, 62), (72, 67, 64)]  # I V vi V I V7 I V I, a chord a beat and the last held: C major
    bass = [48, 43, 45, 43, 48, 43, 48, 43, 48]
    notes = canonical([Note(4 * k, p, 4 if k < 8 else 16, 80, v) for k, chord in enumerate(upper)
                       for v, p in enumerate(chord + (bass[k],))], SPEC)
    given = [n for n in notes if n.part < 3]
    tokens = notes_to_tokens(notes, SPEC, HEADER, given=given)
    bass_at = [i for i in range(1, len(tokens)) if tokens[i - 1] == "p3"]
    first, last = bass_at[0], bass_at[-1]  # the bass's first and last pitches
    for is_bass, rooted in ((True, True), (False, False)):
        prompt, material, bars = add_part(given, replace(HEADER, parts=HEADER.parts[:3]), SPEC, ahead=False,
                                          bass=is_bass)
        controls = Controls(bars=bars, meter="4/4", instruments=HEADER.parts, voice_leading=True)
        rows = mask_rows(GrammarMask(TOK, "cpu", controls, material=material), TOK.encode(tokens), "cpu")
        for i in (first, last):
            pcs = {int(t[1:]) % 12 for t, ok in zip(TOK.itos, rows[i - 1]) if ok and kind(t) == "n"}
            assert (pcs == {0}) == rooted and pcs <= {0, 4, 7}, (tokens[i], pcs)
    # parts that close on E major's triad (a half cadence in A minor): the bass closes on E, where the top note (B)
    # alone would leave the key that the piece's notes suggest among those whose triad holds it (G major: G under E)
    upper[-1], bass[-1] = (71, 68, 64), 40
    notes = canonical([Note(4 * k, p, 4 if k < 8 else 16, 80, v) for k, chord in enumerate(upper)
                       for v, p in enumerate(chord + (bass[k],))], SPEC)
    given = [n for n in notes if n.part < 3]
    tokens = notes_to_tokens(notes, SPEC, HEADER, given=given)
    prompt, material, bars = add_part(given, replace(HEADER, parts=HEADER.parts[:3]), SPEC, ahead=False, bass=True)
    controls = Controls(bars=bars, meter="4/4", instruments=HEADER.parts, voice_leading=True)
    rows = mask_rows(GrammarMask(TOK, "cpu", controls, material=material), TOK.encode(tokens), "cpu")
    last = [i for i in range(1, len(tokens)) if tokens[i - 1] == "p3"][-1]
    assert {int(t[1:]) % 12 for t, ok in zip(TOK.itos, rows[last - 1]) if ok and kind(t) == "n"} == {4}


def test_a_drum_part_given_is_no_pitch_to_voice_leading():
    """A drum's note number names a sound: a piece's drums count neither for the key that voice leading estimates nor
    for the last chord it holds (before, a closing triangle, note 81, was heard as an A over a C major close, and the
    added bass closed on F or A)."""
    upper = [(76, 72, 67), (74, 71, 67), (72, 67, 64), (74, 71, 65), (72, 67, 64)]  # I V I V7 I: C major
    notes = [Note(4 * k, p, 4 if k < 4 else 16, 80, v) for k, chord in enumerate(upper) for v, p in enumerate(chord)]
    notes += [Note(4 * k, 42, 2, 80, 3) for k in range(4)] + [Note(16, 81, 16, 80, 3), Note(16, 49, 16, 80, 3)]
    header = Header(style="bach", bpm=96, meter="4/4", parts=(52, 52, 52, DRUMS))
    given = canonical(notes, SPEC)
    bass = canonical(given + [Note(4 * k, p, 4 if k < 4 else 16, 80, 4) for k, p in enumerate((48, 43, 48, 43, 48))],
                     SPEC)
    tokens = notes_to_tokens(bass, SPEC, replace(header, parts=header.parts + (52,)), given=given)
    last = [i for i in range(1, len(tokens)) if tokens[i - 1] == "p4"][-1]  # the bass's last pitch
    prompt, material, bars = add_part(given, header, SPEC, ahead=False, bass=True)
    controls = Controls(bars=bars, meter="4/4", instruments=header.parts + (52,), voice_leading=True)
    rows = mask_rows(GrammarMask(TOK, "cpu", controls, material=material), TOK.encode(tokens), "cpu")
    assert {int(t[1:]) % 12 for t, ok in zip(TOK.itos, rows[last - 1]) if ok and kind(t) == "n"} == {0}


@pytest.mark.parametrize("task", ["melody", "infill", "add_part"])
def test_the_mask_allows_every_token_of_a_real_piece_with_given_material(task):
    """Teacher forcing: the encoding a given variant writes is what the mask draws, token for token, after the
    prompt (which sampling forces)."""
    notes = chorale(7, 7)
    header = HEADER
    if task == "melody":  # (a harmonization's parts stay under the melody: those that cross it are left out)
        given = [n for n in notes if n.part == 0]
        notes = [n for n in notes if not any(m.pitch < n.pitch and m.start < n.end and n.start < m.end for m in given)]
        prompt, material, bars = harmonize(given, header, SPEC)
    elif task == "infill":
        prompt, material, bars = infill(notes, header, SPEC, 2, 4)
        given = [n for n in notes if n.start >= 64]
    else:
        given = [n for n in notes if n.part < 3]
        prompt, material, bars = add_part(given, Header(style="bach", bpm=96, meter="4/4", parts=header.parts[:3]),
                                          SPEC)
    tokens = notes_to_tokens(notes, SPEC, header, given=given)
    assert tokens[1:1 + len(prompt)] == prompt
    rows = mask_rows(GrammarMask(TOK, "cpu", hold(header, bars), material=material), TOK.encode(tokens), "cpu")
    allowed = rows[torch.arange(len(tokens) - 1), torch.tensor(TOK.encode(tokens[1:]))][len(prompt):]  # after it
    assert allowed.all(), [tokens[i + 1] for i in torch.nonzero(~allowed)[:, 0].tolist()]


def test_top_line_of_a_melody_with_chords():
    line, changed = top_line([Note(0, 60, 8, 80), Note(0, 64, 8, 80), Note(4, 67, 4, 80), Note(8, 65, 4, 80)])
    assert changed and line == [Note(0, 64, 4, 80), Note(4, 67, 4, 80), Note(8, 65, 4, 80)]
    assert top_line([Note(0, 60, 4, 80, 2)]) == ([Note(0, 60, 4, 80, 0)], False)


# --- sample.py


def write(path, notes, header=HEADER):
    path.write_bytes(notes_to_midi(notes, SPEC, header))
    return path


def test_harmonize_infill_and_add_part_write_real_midi(trained, tmp_path):
    notes = chorale(4, 8)
    melody = write(tmp_path / "tune.1.mid", [n for n in notes if n.part == 0], Header(bpm=96, parts=(73,)))
    code, _, err = sample_here("--out_dir", trained, "--melody", melody, "--num_samples", 2, "--parts", 3,
                               "--output_dir", tmp_path / "h")
    assert code == 0, err
    written = sorted((tmp_path / "h").glob("tiny_harmonized_tune.1_seed1337_[0-9].mid"))  # (a dot in the name)
    assert [m.name[-5:] for m in written] == ["0.mid", "1.mid"]
    for mid in written:
        got, header, _ = midi_to_notes(mid.read_bytes(), SPEC)
        assert [n[:3] for n in got if n.part == 0] == [n[:3] for n in notes if n.part == 0]  # pitch, onset, length
        assert len(header.parts) == 3 and round(header.bpm) == 96
    # beside them, the melody as it was kept, to hear what was given
    got, header, _ = midi_to_notes((tmp_path / "h/tiny_harmonized_tune.1_seed1337_melody.mid").read_bytes(), SPEC)
    assert got == [n for n in notes if n.part == 0] and header.parts == (73,) and round(header.bpm) == 96
    from midi_io import notes_to_score, write_musicxml
    score = tmp_path / "tune.musicxml"  # a score's first part is a melody too
    write_musicxml(notes_to_score([n for n in notes if n.part == 0], SPEC, Header(bpm=96, meter="3/4")), score)
    code, _, err = sample_here("--out_dir", trained, "--melody", score, "--num_samples", 1,
                               "--output_dir", tmp_path / "x")
    assert code == 0, err
    got, header, _ = midi_to_notes((tmp_path / "x/tiny_harmonized_tune_seed1337_0.mid").read_bytes(), SPEC)
    assert [n[:3] for n in got if n.part == 0] == [n[:3] for n in notes if n.part == 0] and header.meter == "3/4"
    piece = write(tmp_path / "piece.mid", notes)
    code, _, err = sample_here("--out_dir", trained, "--prompt", piece, "--infill", "2-3", "--num_samples", 2,
                               "--output_dir", tmp_path / "i")
    assert code == 0, err
    for mid in (tmp_path / "i").glob("tiny_infill_piece_seed1337_*.mid"):
        got = midi_to_notes(mid.read_bytes(), SPEC)[0]
        assert [n for n in got if not 16 <= n.start < 48] == [n for n in notes if not 16 <= n.start < 48]
    three = write(tmp_path / "three.mid", [n for n in notes if n.part < 3], Header(bpm=96, parts=(52, 52, 52)))
    code, _, err = sample_here("--out_dir", trained, "--prompt", three, "--add_part", "bass",
                               "--num_samples", 1, "--output_dir", tmp_path / "a")
    assert code == 0, err
    got, header, _ = midi_to_notes((tmp_path / "a" / "tiny_added_three_seed1337_0.mid").read_bytes(), SPEC)
    assert header.parts == (52, 52, 52, 52) and [n for n in got if n.part < 3] == [n for n in notes if n.part < 3]
    assert all(40 <= n.pitch <= 64 for n in got if n.part == 3)


def test_the_parts_written_begin_with_the_given_ones(trained, tmp_path):
    """A melody with a pickup is harmonized from its pickup on, and a part added enters with the given ones: no
    introduction before them (the shipped model wrote one under 8 of 10 chorale sopranos with a pickup, where 398
    of Bach's 413 chorales have none)."""
    late = [n._replace(start=n.start + 12) for n in chorale(4, 5)]  # everything from the fourth beat on
    melody = write(tmp_path / "pickup.mid", [n for n in late if n.part == 0], Header(parts=(73,)))
    three = write(tmp_path / "three.mid", [n for n in late if n.part < 3], Header(parts=(52, 52, 52)))
    for args in (["--melody", melody, "--parts", 4], ["--prompt", three, "--add_part", "bass"]):
        out = tmp_path / args[0]
        code, _, err = sample_here("--out_dir", trained, *args, "--num_samples", 4, "--output_dir", out)
        assert code == 0, err
        for mid in out.glob("*_seed*_[0-9].mid"):
            assert min(n.start for n in midi_to_notes(mid.read_bytes(), SPEC)[0]) == 12, (args, mid.name)


def test_an_infill_takes_the_samples_style_not_the_files(trained, tmp_path):
    """The infill's header is the sample's: its style (--style), tempo (--tempo), meter and parts, as the rules
    that hold for it are that style's. (Its header was the file's, read in the run's first style: an infill under
    --style fiddle was written, and conditioned, as bach.)"""
    from encoding_decoding import text_to_tokens
    piece = write(tmp_path / "piece.mid", chorale(4, 8))
    code, _, err = sample_here("--out_dir", trained, "--prompt", piece, "--infill", "2-3", "--style", "fiddle",
                               "--tempo", 75, "--output_dir", tmp_path)
    assert code == 0, err
    tokens = text_to_tokens((tmp_path / "tiny_fiddle_infill_piece_seed1337_0.txt").read_text())
    assert tokens[1:5] == ["style:fiddle", "tempo:75", "meter:4/4", "inst:52"], tokens[:6]


def test_given_material_errors_are_one_clear_line(trained, tmp_path):
    notes = chorale(3, 9)
    piece = write(tmp_path / "piece.mid", notes)
    empty = tmp_path / "empty.mid"
    empty.write_bytes(midi_file(track()))
    chords = tmp_path / "chords.mid"
    chords.write_bytes(midi_file(track(on(60), on(64), off(60, delta=480), off(64), on(67), off(67, delta=480))))
    old, broken, latin1 = tmp_path / "old.txt", tmp_path / "broken.txt", tmp_path / "latin1.txt"  # encodings
    old.write_text("START style:bach tempo:121 meter:4/4 n60 d4 v80 sepxx d4 n62 d4 v80 END\n")
    broken.write_text("START style:bach tempo:121 meter:4/4 inst:0 bar:1 pos:0 p0 d4 n60 v80 END\n")
    latin1.write_bytes("START style:bach tempo:121 meter:4/4 inst:0 bar:1 pos:0 n60 d4 v80 END # \xe9t\xe9\n"
                       .encode("latin-1"))
    r = run("sample.py", "--out_dir", trained, "--prompt", piece, "--infill", "3-5")  # as a user meets it
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert "--infill 3-5: bars outside the piece, which has bars 1 to 3" in r.stderr
    for args, message in [
            (["--prompt", piece, "--infill", "x"], "wants FIRST-LAST bars"),
            (["--prompt", piece, "--infill", "3-2"], "--infill 3-2: wants FIRST-LAST with FIRST <= LAST, e.g. 2-3"),
            (["--infill", "1-2"], "give it with --prompt"),
            (["--prompt_bars", 2], "--prompt_bars 2 counts the opening bars of a plain --prompt"),
            (["--prompt", piece, "--infill", "1-2", "--prompt_bars", 2], "give it with --prompt song.mid, or drop it"),
            (["--melody", empty], "no notes"),
            (["--melody", tmp_path / "missing.mid"], "cannot read it"),
            (["--melody", piece, "--bars", 4], "take their length from the piece"),
            (["--melody", piece, "--key", "C# major"], "outside --key/--scale/--pitch_range"),
            (["--prompt", piece, "--add_part", "kazoo"], "unknown instrument 'kazoo'"),
            (["--prompt", old, "--bars", 4], "an encoding of the grammar's first edition"),  # (read as notes before)
            (["--melody", broken], "not an encoding this code reads (token 8: 'd4' cannot follow state 'part' (expected n))"),
            (["--prompt", latin1, "--add_part", "bass"], "not UTF-8 text (byte 73")]:
        code, _, err = sample_here("--out_dir", trained, "--output_dir", tmp_path / "o", *args)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    code, out, err = sample_here("--out_dir", trained, "--melody", chords, "--num_samples", 1,
                                 "--output_dir", tmp_path / "c")
    assert code == 0 and "its top line is taken (2 notes)" in out, err


def test_a_run_trained_without_given_material_harmonizes_only_without_look_ahead(trained, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for f in ("best.pt", "checkpoint.pt", "config.json", "tokenizer.json"):
        (old / f).write_bytes((trained / f).read_bytes())
    config = json.loads((old / "config.json").read_text())
    config["data_meta"]["given_share"] = 0.0
    (old / "config.json").write_text(json.dumps(config))
    melody = write(tmp_path / "tune.mid", [n for n in chorale(2, 1) if n.part == 0], Header())
    code, _, err = sample_here("--out_dir", old, "--melody", melody, "--look_ahead", "true",
                               "--output_dir", tmp_path)
    assert code != 0 and "trained without given material" in err and len(err.strip().splitlines()) == 1
    code, out, err = sample_here("--out_dir", old, "--melody", melody, "--num_samples", 1,
                                 "--output_dir", tmp_path)
    assert code == 0 and "harmonized_tune_seed1337_0.mid" in out, err


def test_evaluate_harmonizes_and_fills_in_and_prices_the_given_material(trained):
    """evaluate.py's section on a tiny run: melodies and outside notes kept, bits per note for every case."""
    from types import SimpleNamespace
    import numpy as np
    import evaluate
    from runs import load_run
    model, tok, _ = load_run(trained, "cpu")
    pieces = [(chorale(4, k), HEADER) for k in range(2)]
    val = SimpleNamespace(val_decoded=pieces, val_styles=np.array(["bach", "bach"]))
    args = SimpleNamespace(out_dir=trained, given_pieces=1, given_samples=1, temperature=1.0, rhythm_temperature=0.0,
                           top_k=0, top_p=1.0,
                           seed=1)
    g = evaluate.given_material(args, model, tok, val, "cpu")
    drawn = {"at its onsets", "at its onsets, the style's defaults", "shown ahead"}  # (bach: Bach's rules)
    assert g["pieces"] == 1 and set(g["harmonized"]) == drawn | {"real"}
    assert all(g["harmonized"][k]["melody_kept"] == 1.0 for k in drawn)
    assert g["infill"]["all_other_notes_kept"] == 1.0 and g["infill"]["no_new_note_past_the_gap"] == 1.0
    assert len(g["bits_per_note"]) == 6 and all(0 < b < 30 for b in g["bits_per_note"].values())
    assert "| lower voices alone |" in "\n".join(evaluate.given_markdown(g))


def test_a_prompts_last_note_keeps_its_velocity():
    """A continuation's first token may not be a velocity: it would restate the prompt's last note."""
    notes = [Note(0, 60, 4, 80), Note(4, 62, 4, 80)]
    prompt = notes_to_tokens(notes, SPEC, Header(style="bach", parts=(0,)))[:-1]  # ... n62 d4: no v, unchanged
    idx = torch.tensor([TOK.encode(prompt)])
    velocities = torch.tensor([t.startswith("v") for t in TOK.itos])
    free = GrammarMask(TOK, "cpu", Controls(bars=2))(idx)[0]
    held = GrammarMask(TOK, "cpu", Controls(bars=2), slots=[None] * len(prompt))(idx)[0]
    assert free[velocities].any() and not held[velocities].any() and held.any()
