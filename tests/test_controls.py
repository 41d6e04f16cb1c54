"""The piece header (style, tempo, meter, parts) and the sampling controls, each enforced by the mask."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import midi_file, on, off, run, track, vlq
from controls import Controls, key_pitch_classes, key_triad
from encoding_decoding import (DRUMS, END, START, Header, Spec, Tokenizer, bar_steps, beat_steps, canonical, finish,
                               notes_to_tokens, tokens_to_notes, tokens_to_text, validate)
from mask import GrammarMask, estimated_triads, mask_rows, rule_breaks
from midi_io import midi_to_notes, notes_to_midi, parse_score, score_to_notes, text_to_midi
from model import sample_logits

TOK = Tokenizer(Spec())
SPEC = TOK.spec


def meta(kind, data):
    return vlq(0) + bytes([0xFF, kind, len(data)]) + data


def test_midi_header_roundtrip_90_bpm_in_3_4():
    tempo = meta(0x51, round(60_000_000 / 90).to_bytes(3, "big"))
    meter = meta(0x58, bytes([3, 2, 24, 8]))  # 3/4
    data = midi_file(track(tempo, meter, *[on(60 + k) + off(60 + k, delta=480) for k in range(9)]))
    notes, header, _ = midi_to_notes(data, SPEC)
    assert (header.bpm, header.meter) == (pytest.approx(90), "3/4")
    tokens = notes_to_tokens(notes, SPEC, Header("bach", header.bpm, header.meter))
    assert tokens[:6] == ["START", "style:bach", "tempo:90", "meter:3/4", "inst:0", "bar:3"]
    assert validate(tokens, SPEC) is None
    back, header_back, _ = midi_to_notes(text_to_midi(tokens_to_text(tokens), SPEC)[0], SPEC)
    assert back == notes and (header_back.bpm, header_back.meter) == (pytest.approx(90, abs=0.01), "3/4")
    # --bpm overrides the header's tempo when writing
    assert midi_to_notes(text_to_midi(tokens_to_text(tokens), SPEC, bpm=140)[0], SPEC)[1].bpm == pytest.approx(140, abs=0.01)


def test_midi_without_tempo_or_meter_gets_the_defaults():
    notes, header, _ = midi_to_notes(midi_file(track(on(60) + off(60, delta=480))), SPEC)
    assert (header.bpm, header.meter, header.parts) == (120, "4/4", (0,))


def test_score_with_a_metronome_mark_and_a_pickup(tmp_path):
    abc = tmp_path / "tune.abc"
    abc.write_text("X:1\nT:Waltz\nM:3/4\nL:1/4\nQ:1/4=72\nK:G\nG|ABc|d2B|A3|G2z|\n")
    [(_, score)] = parse_score(abc)
    notes, header, _ = score_to_notes(score, SPEC)
    assert (header.bpm, header.meter) == (72, "3/4")
    assert SPEC.header_tokens(header)[1:] == ["tempo:75", "meter:3/4", "inst:0"]  # 72 BPM lies in the bucket of 75
    assert notes[0].start == 8  # the pickup beat ends the first bar: bar lines fall where the tune has them
    abc.write_text("X:1\nT:Jig\nM:6/8\nL:1/8\nK:D\nDFA dAF|GBd gdB|\n")  # a 6/8 tune without a tempo
    header = score_to_notes(parse_score(abc)[0][1], SPEC)[1]
    assert SPEC.header_tokens(header)[1:] == [SPEC.tempo_token(120), "meter:6/8", "inst:0"]


def test_header_vocabulary():
    assert SPEC.tempo_token(10) == "tempo:31" and SPEC.tempo_token(1000) == "tempo:286"  # clamped to the range
    assert len(set(SPEC.tempo_bpms())) == SPEC.tempo_buckets
    assert "meter:7/8" in TOK.stoi and "meter:5/4" in TOK.stoi and bar_steps("6/8", 4) == 12
    assert SPEC.max_bar_steps() == 64 and "pos:63" in TOK.stoi and "pos:64" not in TOK.stoi
    assert key_pitch_classes("D minor") == (0, 2, 4, 5, 7, 9, 10) and key_pitch_classes("F#") == (1, 3, 5, 6, 8, 10, 11)
    with pytest.raises(ValueError, match="unknown mode"):
        key_pitch_classes("C bogus")


BARS = torch.tensor([t.startswith(("bar:", "pos:")) for t in TOK.itos])


def random_walk(mask, n, seed, steps=4000, end_bias=0.0, bar_bias=0.0):
    """Sample from random logits under the mask until every row has ended (or `steps` run out); bar lines and
    onsets are favoured by `bar_bias`, so that a walk does not fill one onset with every pitch of every part."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.full((n, 1), TOK.stoi[START])
    for _ in range(steps):
        logits = torch.randn(n, TOK.vocab_size, generator=gen) * 3
        logits[:, TOK.stoi[END]] += end_bias
        logits[:, BARS] += bar_bias
        nxt = sample_logits(logits.masked_fill(~mask(idx), float("-inf")), 1.0, None, None, gen)
        idx = torch.cat([idx, nxt[:, None]], dim=1)
        if (nxt == TOK.stoi[END]).all():
            break
    return [TOK.decode(row) for row in idx.tolist()]


def countdown(tokens):
    return [t.partition(":")[2] for t in tokens if t.startswith("bar:")]


def test_forced_header_tokens():
    mask = GrammarMask(TOK, "cpu", controls=Controls(style="palestrina", tempo=90, meter="3/4",
                                                     instruments=(40, 40, 42, DRUMS)))
    for tokens in random_walk(mask, 8, 0, steps=20):
        assert tokens[1:9] == ["style:palestrina", "tempo:90", "meter:3/4", "inst:40", "inst:40", "inst:42",
                               "inst:drums", tokens[8]] and tokens[8].startswith("bar:")
    for tokens in random_walk(GrammarMask(TOK, "cpu", controls=Controls(parts=3)), 8, 0, steps=30):
        assert [t[:4] for t in tokens[4:8]] == ["inst"] * 3 + ["bar:"]
    free = {tuple(t[1:4]) for t in random_walk(GrammarMask(TOK, "cpu"), 16, 1, steps=4)}
    assert len(free) > 1  # what is not forced, the model samples


def check_sample(tokens, bars=None):
    """A sample ends, is valid and canonical, counts its bars down to the end, and nothing sounds past it."""
    assert tokens[-1] == END
    tokens = finish(tokens)
    assert validate(tokens, SPEC) is None
    notes, header, bad = tokens_to_notes(tokens, SPEC)
    assert bad == 0 and notes_to_tokens(notes, SPEC, header) == tokens  # canonical: decoding drops nothing
    count = countdown(tokens)
    n = len(count)
    assert count[-64:] == [str(k) for k in range(min(n, 64), 0, -1)] and set(count[:-64]) <= {"more"}
    assert bars is None or n == bars
    lines = header.bar_lines(SPEC.sample_freq, n)
    assert lines[-2] < max(x.end for x in notes) <= lines[-1]  # something sounds in the last bar, nothing after it
    return notes, header


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31), bars=st.integers(1, 4), meter=st.sampled_from([None, "3/4", "6/8", "2/2"]),
       end_bias=st.floats(-3, 6))
def test_bars_are_a_plan_on_random_logits(seed, bars, meter, end_bias):
    mask = GrammarMask(TOK, "cpu", controls=Controls(bars=bars, meter=meter))
    for tokens in random_walk(mask, 6, seed, end_bias=end_bias, bar_bias=4):
        notes, header = check_sample(tokens, bars)
        assert meter is None or header.meter == meter
        assert not header.changes  # a planned length holds its meter


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**31), bar_bias=st.floats(3, 8))
def test_a_free_length_is_counted_down_to_its_end(seed, bar_bias):
    for tokens in random_walk(GrammarMask(TOK, "cpu"), 3, seed, bar_bias=bar_bias, steps=2500):
        if tokens[-1] == END:
            check_sample(tokens)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31), seconds=st.floats(0.5, 12), bpm=st.sampled_from([None, 60.0, 150.0]))
def test_seconds_become_the_bars_they_last(seed, seconds, bpm):
    controls = Controls(seconds=seconds, bpm=bpm)
    for tokens in random_walk(GrammarMask(TOK, "cpu", controls=controls), 6, seed, bar_bias=4):
        notes, header = check_sample(tokens)
        bar = bar_steps(header.meter, SPEC.sample_freq)
        assert len(countdown(tokens)) == controls.bars_at(header.bpm, bar, SPEC.sample_freq)
        written = bpm or header.bpm  # the tempo the MIDI file plays at
        bar_seconds = bar * 60 / written / SPEC.sample_freq
        assert abs(len(countdown(tokens)) * bar_seconds - seconds) <= bar_seconds / 2 + 1e-9 or (
            len(countdown(tokens)) == 1 and seconds < bar_seconds)  # the nearest whole number of bars, at least one


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31), key=st.sampled_from(["D minor", "C major", "F# dorian", "Bb blues"]),
       low=st.integers(30, 70), width=st.integers(7, 30), bars=st.sampled_from([None, 2]))
def test_key_and_pitch_range_are_never_violated_in_pitched_parts(seed, key, low, width, bars):
    controls = Controls(scale=key_pitch_classes(key), pitch_range=(low, low + width), bars=bars,
                        instruments=(0, DRUMS))
    for tokens in random_walk(GrammarMask(TOK, "cpu", controls), 6, seed, steps=300, end_bias=-2, bar_bias=2):
        notes = tokens_to_notes(finish(tokens), SPEC)[0]
        assert all(n.pitch % 12 in controls.scale and low <= n.pitch <= low + width for n in notes if n.part == 0)
        assert validate(finish(tokens), SPEC) is None


def test_rows_of_one_batch_keep_their_own_state():
    """Two prefixes in different states at once: each row's mask follows its own grammar state and clock."""
    mask = GrammarMask(TOK, "cpu", controls=Controls(bars=1))
    rows = ["START style:bach tempo:121 meter:4/4 inst:0 inst:0 bar:1 pos:0 n60 d4 v80 p1 n48 d16 v80 pos:12".split(),
            "START style:bach tempo:121 meter:3/4 inst:0 inst:0 bar:1 pos:2 n70 d1 v80 n65 d1 v60 p1 n50".split()]
    allowed = mask(torch.tensor([TOK.encode(r) for r in rows]))
    assert allowed[0, TOK.stoi["n50"]] and not allowed[0, TOK.stoi["d1"]] and allowed[0, TOK.stoi["p0"]]
    assert not allowed[0, TOK.stoi["p1"]]  # the part already: no part token
    assert not allowed[0, TOK.stoi["n48"]]  # part 1's n48 sounds to step 16
    assert allowed[1, TOK.stoi["d10"]] and not allowed[1, TOK.stoi["d11"]]  # may last to the bar's end, not past
    assert not allowed[1, TOK.stoi[END]]


def test_the_last_bar_ends_once_something_sounds_in_it():
    mask = GrammarMask(TOK, "cpu", controls=Controls(bars=2))
    row = "START style:bach tempo:121 meter:4/4 inst:0 bar:2 pos:0 n60 d8 v80".split()
    allowed = mask(torch.tensor([TOK.encode(row)]))[0]
    assert allowed[TOK.stoi["bar:1"]] and not allowed[TOK.stoi["bar:2"]] and not allowed[TOK.stoi[END]]
    mask = GrammarMask(TOK, "cpu", controls=Controls(bars=2))
    allowed = mask(torch.tensor([TOK.encode(row + ["bar:1"])]))[0]
    assert not allowed[TOK.stoi[END]] and allowed[TOK.stoi["pos:0"]]  # the last bar is empty yet
    mask = GrammarMask(TOK, "cpu", controls=Controls(bars=2))
    allowed = mask(torch.tensor([TOK.encode(row + ["bar:1", "pos:4", "n62", "d2"])]))[0]
    assert allowed[TOK.stoi[END]] and not any(allowed[TOK.stoi[f"bar:{k}"]] for k in range(1, 65))


def test_samples_come_out_in_canonical_form():
    """Within an onset parts rise and pitches fall, and a key is not struck again in its part while it sounds."""
    head = "START style:bach tempo:121 meter:4/4 inst:0 inst:0 bar:4 pos:0"
    mask = GrammarMask(TOK, "cpu")
    allowed = mask(torch.tensor([TOK.encode(f"{head} n60 d8 v80 n50 d2".split())]))[0]
    assert not allowed[TOK.stoi["n60"]] and not allowed[TOK.stoi["n72"]] and allowed[TOK.stoi["n49"]]
    assert allowed[TOK.stoi["p1"]] and not allowed[TOK.stoi["p0"]]
    mask = GrammarMask(TOK, "cpu")
    allowed = mask(torch.tensor([TOK.encode(f"{head} n60 d8 v80 p1 n60 d2 pos:4".split())]))[0]
    assert allowed[TOK.stoi["n60"]] and allowed[TOK.stoi["p0"]]  # part 1's 60 ended at step 2 (part 0's sounds to 8)
    mask = GrammarMask(TOK, "cpu")
    allowed = mask(torch.tensor([TOK.encode(f"{head} n60 d8 v80 p1 n60 d2 pos:4 p0".split())]))[0]
    assert not allowed[TOK.stoi["n60"]] and allowed[TOK.stoi["n61"]]
    mask = GrammarMask(TOK, "cpu")
    allowed = mask(torch.tensor([TOK.encode(f"{head} n60 d8 v80 p1 n60 d2 pos:4 n62 d1 v81".split())]))[0]
    assert not allowed[TOK.stoi["pos:4"]] and not allowed[TOK.stoi["pos:0"]] and allowed[TOK.stoi["pos:5"]]
    assert not allowed[TOK.stoi["v81"]]  # no velocity that a part has already


@pytest.mark.parametrize("args, message", [
    (["--style", "jazz"], "unknown style 'jazz'; this run knows: bach, baroque"),
    (["--meter", "7/5"], "unknown meter '7/5'; this run knows: 4/4, 3/4"),
    (["--key", "H minor"], "'H' is not a pitch class"),
    (["--pitch_range", "90,40"], "argument --pitch_range: wants two values LOW,HIGH with LOW <= HIGH"),
    (["--pitch_range", "0,10"], "--pitch_range wants LOW,HIGH with 21 <= LOW <= HIGH <= 108"),
    (["--bars", "0"], "argument --bars: wants a number >= 1 and <= 1000, got '0'"),
    (["--seconds", "nan"], "argument --seconds: wants a finite number"),
    (["--bars", "4", "--seconds", "10"], "give --bars or --seconds, not both"),
    (["--parts", "17"], "argument --parts: wants a number >= 1 and <= 16, got '17'"),
    (["--instruments", "violin,kazoo"], "--instruments: unknown instrument 'kazoo'"),
    (["--parts", "3", "--instruments", "violin,viola"], "--parts 3 but --instruments names 2"),
])
def test_control_errors_are_one_clear_line(trained, tmp_path, args, message):
    r = run("sample.py", "--out_dir", trained, "--output_dir", tmp_path, *args)
    assert r.returncode != 0 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_list_styles(trained):
    r = run("sample.py", "--out_dir", trained, "--list_styles")
    assert r.returncode == 0 and "styles: bach baroque classical fiddle" in r.stdout and "meters: 4/4 3/4" in r.stdout


def test_sample_script_obeys_every_control_on_the_written_midi(trained, tmp_path):
    r = run("sample.py", "--out_dir", trained, "--num_samples", 3, "--style", "fiddle", "--meter", "6/8",
            "--tempo", 98, "--bars", 2, "--key", "D minor", "--pitch_range", "50,80", "--instruments",
            "violin,cello", "--output_dir", tmp_path)
    assert r.returncode == 0, r.stderr
    mids = sorted(tmp_path.glob("tiny_fiddle_seed1337_*.mid"))
    assert len(mids) == 3
    for mid in mids:
        assert mid.with_suffix(".txt").read_text().split()[1:7] == ["style:fiddle", "tempo:100", "meter:6/8",
                                                                     "inst:40", "inst:42", "bar:2"]
        notes, header, _ = midi_to_notes(mid.read_bytes(), SPEC)
        assert (round(header.bpm), header.meter) == (98, "6/8") and set(header.parts) <= {40, 42}  # (its token: 100)
        assert 12 < max(n.end for n in notes) <= 2 * 12
        assert all(p % 12 in key_pitch_classes("D minor") and 50 <= p <= 80 for _, p, _, _, _ in notes)
    r = run("sample.py", "--out_dir", trained, "--num_samples", 2, "--seconds", 3, "--bpm", 90, "--meter", "3/4",
            "--output_dir", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    for mid in (tmp_path / "s").glob("*.mid"):
        notes, header, _ = midi_to_notes(mid.read_bytes(), SPEC)
        assert header.bpm == pytest.approx(90, abs=0.01) and 12 < max(n.end for n in notes) <= 24  # 3 s: 2 bars


def test_prompt_longer_than_the_target_is_one_line(trained, tmp_path):
    prompt = tmp_path / "p.mid"
    prompt.write_bytes(notes_to_midi([(4 * k, 60 + k % 12, 4, 80) for k in range(40)], SPEC))
    r = run("sample.py", "--out_dir", trained, "--prompt", prompt, "--prompt_bars", 4, "--bars", 2)
    assert r.returncode != 0 and "already reach the --bars/--seconds target" in r.stderr


def test_a_run_whose_tokenizer_predates_the_header_says_to_retrain(trained, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for f in ("best.pt", "checkpoint.pt"):
        (old / f).write_bytes((trained / f).read_bytes())
    d = json.loads((trained / "tokenizer.json").read_text())
    (old / "tokenizer.json").write_text(json.dumps({**d, "version": 1}))
    r = run("sample.py", "--out_dir", old, "--output_dir", tmp_path)
    assert r.returncode != 0 and "predates the piece header" in r.stderr and "retrain" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_prompt_keeps_its_parts_meter_and_bars(trained, tmp_path):
    prompt = tmp_path / "waltz.mid"
    notes = [(4 * k, 60 + k % 12, 4, 80, 0) for k in range(30)] + [(12 * k, 43, 12, 70, 1) for k in range(10)]
    prompt.write_bytes(notes_to_midi(notes, SPEC, Header(bpm=90, meter="3/4", parts=(73, 42))))
    r = run("sample.py", "--out_dir", trained, "--num_samples", 1, "--max_new_tokens", 40, "--prompt", prompt,
            "--prompt_bars", 2, "--output_dir", tmp_path)
    assert r.returncode == 0, r.stderr
    tokens = (tmp_path / "tiny_seed1337_0.txt").read_text().split()
    assert tokens[2:6] == ["tempo:90", "meter:3/4", "inst:73", "inst:42"] and tokens[6].startswith("bar:")
    # 2 bars of 3/4: the prompt's notes as they were, with the bar lines the sample counts down
    given = notes_to_tokens(canonical([n for n in notes if n[0] < 24], SPEC), SPEC,
                            Header(meter="3/4", parts=(73, 42)))[6:-1]
    assert [t for t in tokens[6:6 + len(given)] if not t.startswith("bar:")] == [
        t for t in given if not t.startswith("bar:")]
    assert midi_to_notes((tmp_path / "tiny_seed1337_0.mid").read_bytes(), SPEC)[1].meter == "3/4"


def test_a_forced_meter_lays_a_prompts_bars_anew(trained, tmp_path):
    prompt = tmp_path / "waltz.mid"
    notes = [(4 * k, 60 + k % 12, 4, 80, 0) for k in range(30)]
    prompt.write_bytes(notes_to_midi(notes, SPEC, Header(bpm=90, meter="3/4")))
    r = run("sample.py", "--out_dir", trained, "--num_samples", 1, "--prompt", prompt, "--prompt_bars", 2,
            "--meter", "2/4", "--bars", 4, "--output_dir", tmp_path)
    assert r.returncode == 0, r.stderr
    tokens = (tmp_path / "tiny_seed1337_0.txt").read_text().split()
    assert tokens[3] == "meter:2/4" and countdown(tokens) == ["4", "3", "2", "1"]
    got = tokens_to_notes(tokens, SPEC)[0]
    assert [n[:3] for n in got[:4]] == [n[:3] for n in notes[:4]]  # two bars of 2/4: the prompt's first 4 notes


def voice_mask(row, bars=2, triad=None, rules=("rests", "parallels", "crossing", "ending")):
    """What a voice-leading mask (of `rules`) allows after the tokens of `row` (a two-part piece of `bars` in 4/4)."""
    head = f"START style:bach tempo:121 meter:4/4 inst:52 inst:52 bar:{bars}".split()
    mask = GrammarMask(TOK, "cpu", controls=Controls(voice_leading=True, triad=triad, voice_leading_rules=rules))
    return mask(torch.tensor([TOK.encode(head + row.split())]))[0]


def test_voice_leading_lets_no_part_rest():
    # the first onset: every part starts there; the soprano alone cannot leave it
    allowed = voice_mask("pos:0 n72 d4 v80")
    assert allowed[TOK.stoi["p1"]] and not allowed[TOK.stoi["pos:4"]] and not allowed[TOK.stoi["bar:1"]]
    # the next onset comes before a part falls silent: the soprano ends at step 4, the bass at 8
    allowed = voice_mask("pos:0 n72 d4 v80 p1 n60 d8 v80")
    assert allowed[TOK.stoi["pos:2"]] and allowed[TOK.stoi["pos:4"]] and not allowed[TOK.stoi["pos:6"]]
    assert not allowed[TOK.stoi["bar:1"]] and not allowed[TOK.stoi[END]]
    # at step 4 the soprano must sound again: its note comes first (the bass's implicit part would pass it over)
    allowed = voice_mask("pos:0 n72 d4 v80 p1 n60 d8 v80 pos:4")
    assert allowed[TOK.stoi["p0"]] and not any(allowed[TOK.stoi[f"n{k}"]] for k in range(21, 109))
    # without the rules, a part may rest
    mask = GrammarMask(TOK, "cpu")
    head = "START style:bach tempo:121 meter:4/4 inst:52 inst:52 bar:2 pos:0 n72 d4 v80".split()
    assert mask(torch.tensor([TOK.encode(head)]))[0, TOK.stoi["pos:8"]]


def test_voice_leading_forbids_parallel_fifths_and_octaves():
    # an octave (C5 over C4), the soprano rises a step: the bass may not rise to the octave below it again
    allowed = voice_mask("pos:0 n72 d4 v80 p1 n60 d4 v80 pos:4 p0 n74 d4 p1")
    assert not allowed[TOK.stoi["n62"]]  # parallel octaves
    assert allowed[TOK.stoi["n59"]] and allowed[TOK.stoi["n67"]] and allowed[TOK.stoi["n60"]]  # contrary, oblique
    # a fifth (G4 over C4), both rise: no fifth again; a fourth is no parallel fifth
    allowed = voice_mask("pos:0 n67 d4 v80 p1 n60 d4 v80 pos:4 p0 n69 d4 p1")
    assert not allowed[TOK.stoi["n62"]] and allowed[TOK.stoi["n64"]]
    allowed = voice_mask("pos:0 n65 d4 v80 p1 n60 d4 v80 pos:4 p0 n67 d4 p1")  # a fourth
    assert allowed[TOK.stoi["n62"]]



def test_no_parallels_between_beats_through_a_passing_note():
    """From beat to beat, as a teacher counts them (measures.parallels): a fifth (C5 over F4) whose soprano rises to
    E5 through a passing D5 may not become the fifth E5 over A4 on the next beat, nor where the soprano's E5 came on
    the half beat and holds; another interval, a contrary motion, or without the rule on parallels, it may. (The
    rule before saw only the passing note, a sixth over F4: 125 of the 163 parallels of 96 chorales whose durations
    were drawn at 1.5.)"""
    rules = ("parallels",)
    passing = voice_mask("pos:0 n72 d2 v80 p1 n65 d4 v80 pos:2 p0 n74 d2 pos:4 p0 n76 d4 p1", rules=rules)
    early = voice_mask("pos:0 n72 d2 v80 p1 n65 d4 v80 pos:2 p0 n76 d4 pos:4 p1", rules=rules)
    for allowed in (passing, early):
        assert not allowed[TOK.stoi["n69"]]                                       # parallel fifths
        assert allowed[TOK.stoi["n67"]] and allowed[TOK.stoi["n57"]] and allowed[TOK.stoi["n65"]]  # a sixth, contrary,
        # oblique
    assert voice_mask("pos:0 n72 d2 v80 p1 n65 d4 v80 pos:2 p0 n74 d2 pos:4 p0 n76 d4 p1",
                      rules=("crossing",))[TOK.stoi["n69"]]

def test_voice_leading_keeps_only_the_rules_asked_for():
    """--voice_leading_rules parallels (Palestrina's default): no parallels, but a part may rest and cross, and the
    last bar is free."""
    row = "pos:0 n72 d4 v80 p1 n60 d4 v80 pos:4 p0 n74 d4 p1"
    assert not voice_mask(row, rules=("parallels",))[TOK.stoi["n62"]]  # parallel octaves still
    assert voice_mask(row, rules=("rests", "crossing", "ending"))[TOK.stoi["n62"]]  # ... unless left out
    alone = voice_mask("pos:0 n72 d4 v80", rules=("parallels",))
    assert alone[TOK.stoi["pos:4"]] and alone[TOK.stoi["bar:1"]]  # the bass may rest, the soprano leave the onset
    assert voice_mask("pos:0 n60 d4 v80 p1", rules=("parallels",))[TOK.stoi["n64"]]  # the bass over the soprano
    assert not voice_mask("pos:0 n60 d4 v80 p1")[TOK.stoi["n64"]]
    last = "pos:0 n72 d4 v80 p1 n60 d4 v80 pos:4 p0 n72 d4"  # one bar: the last; D is no note of the C triad
    assert voice_mask(last, bars=1, triad=(0, 4, 7), rules=("parallels",))[TOK.stoi["n62"]]
    assert not voice_mask(last, bars=1, triad=(0, 4, 7))[TOK.stoi["n62"]]


def test_key_triads():
    assert key_triad("C") == (0, 4, 7) and key_triad("D minor") == (2, 5, 9) and key_triad("B locrian") == (11, 2, 5)
    def weights(tonic, steps, durations=(4, 1, 2, 1, 3, 1, 2)):  # the tonic and fifth held longest
        w = [0.0] * 12
        for k, d in zip(steps, durations):
            w[(tonic + k) % 12] = float(d)
        return w
    weights = [weights(7, (0, 2, 4, 5, 7, 9, 11)), [0.0] * 12, weights(2, (0, 2, 3, 5, 7, 8, 10))]
    got = estimated_triads(torch.tensor(weights, dtype=torch.float64)).tolist()
    assert got[0] == [7, 11, 2] and got[2] == [2, 5, 9] and got[1] == [0, 4, 7]  # (nothing yet: C major)
    held = estimated_triads(torch.tensor(weights, dtype=torch.float64), torch.tensor([1, -1, 0])).tolist()
    assert held[0] not in got and 1 in held[0] and held[1] == got[1] and held[2] == [5, 9, 0]  # a melody's last note


def test_voice_leading_ends_on_the_tonic():
    # in the last bar, C major's triad only, and the lowest part (the last named) on the tonic
    allowed = voice_mask("pos:0", bars=1, triad=(0, 4, 7))
    assert [k for k in range(60, 73) if allowed[TOK.stoi[f"n{k}"]]] == [60, 64, 67, 72]
    allowed = voice_mask("pos:0 n72 d16 v80 p1", bars=1, triad=(0, 4, 7))
    assert [k for k in range(36, 72) if allowed[TOK.stoi[f"n{k}"]]] == [36, 48, 60]
    # a single line has no bass: it ends on any note of the triad
    mask = GrammarMask(TOK, "cpu", controls=Controls(voice_leading=True, triad=(0, 4, 7)))
    allowed = mask(torch.tensor([TOK.encode("START style:folk tempo:121 meter:4/4 inst:0 bar:1 pos:0".split())]))[0]
    assert [k for k in range(60, 73) if allowed[TOK.stoi[f"n{k}"]]] == [60, 64, 67, 72]
    # before the last bar, no such rule
    assert voice_mask("pos:0", bars=2, triad=(0, 4, 7))[TOK.stoi["n62"]]
    # without --key, the key that the notes so far suggest: here G major (G, B, D and F#)
    allowed = voice_mask("pos:0 n67 d8 v80 p1 n55 d8 v80 pos:8 p0 n71 d4 p1 n50 d8 pos:12 p0 n66 d4 bar:1 pos:0")
    assert [k for k in range(60, 73) if allowed[TOK.stoi[f"n{k}"]]] == [62, 67, 71]


def test_the_bass_of_the_first_and_last_chords_sounds_under_the_other_parts():
    """Bach's defaults let parts cross; a tenor under the bass would turn the tonic chord over (a six-four)."""
    rules = ("parallels", "ending", "beginning", "cadence")
    controls = Controls(voice_leading=True, triad=(0, 4, 7), voice_leading_rules=rules)
    bass = lambda row, bars=1: [k for k in range(21, 72) if GrammarMask(TOK, "cpu", controls=controls)(torch.tensor(
        [TOK.encode(f"START style:bach tempo:121 meter:4/4 inst:52 inst:52 inst:52 bar:{bars} {row}".split())]))[
        0, TOK.stoi[f"n{k}"]]]
    # one bar, its first chord the last: C major's, on C under the tenor
    assert bass("pos:0 n72 d16 v80 p1 n55 d16 v80 p2") == [24, 36, 48]  # under the tenor's G3
    assert bass("pos:0 n72 d16 v80 p1 n43 d16 v80 p2") == [24, 36]      # under its G2
    assert bass("pos:0 n72 d16 v80 p1 n64 d16 v80 p2") == [24, 36, 48, 60]
    # the dominant before the last bar: on G under the tenor's D3
    row = "pos:0 n72 d12 v80 p1 n64 d12 v80 p2 n48 d12 v80 pos:12 p0 n71 d4 v80 p1 n50 d4 v80 p2"
    assert bass(row, bars=2) == [31, 43]


def test_the_final_chord_is_struck_once_and_held_to_the_end():
    """Bach strikes his last chord once (198 of 200 chorales); the defaults struck it again in 85 of 96."""
    controls = Controls(voice_leading=True, triad=(0, 4, 7), voice_leading_rules=("parallels", "ending"))
    allowed = lambda row, bars=1, inst="inst:52 inst:52 inst:52": GrammarMask(TOK, "cpu", controls=controls)(
        torch.tensor([TOK.encode(f"START style:bach tempo:121 meter:4/4 {inst} bar:{bars} {row}".split())]))[0]
    names = lambda a, kind: [t for t in TOK.itos if t.startswith(kind) and a[TOK.stoi[t]]]
    assert names(allowed("pos:0 n72"), "d") == ["d16"]  # to the end of the last bar
    assert names(allowed("pos:4 n72"), "d") == ["d12"]
    chord = "pos:0 n72 d16 v80 p1 n64 d16 v80 p2 n48 d16 v80"
    assert names(allowed(chord), "pos:") == [] and allowed(chord)[TOK.stoi[END]]  # all held: the piece ends
    held = "pos:0 n72 d16 v80 p1 n64 d16 v80 pos:4"  # the bass came later: the others hold, it alone strikes
    assert names(allowed(held), "p") == ["p2"]
    assert "d4" in names(allowed("pos:0 n72", bars=2), "d")  # before the last bar, free
    assert "d4" in names(allowed("pos:0 n72", inst="inst:73"), "d")  # a tune's last bar may arpeggiate its tonic


def test_a_phrase_closes_on_a_chord_held_every_fourth_bar():
    """Rule "phrases": in a piece of planned length, the last two beats of every fourth bar but in the last two bars
    (the cadence's) are one chord held to the bar line (Bach's chorales hold 2.7 chords a piece so; the defaults
    without the rule 0.5): no onset within them, a note struck there lasts to the bar line, one struck before ends by
    them or lasts to it too; and before the last bar no note lasts longer than a bar."""
    def allowed(row, rules=("parallels", "phrases"), form=None, inst="inst:52 inst:52", bars=8):
        controls = Controls(voice_leading=True, bars=bars, voice_leading_rules=rules, form=form)
        three = (f"bar:{bars} pos:0 n72 d16 v80 p1 n48 d16 v80 bar:{bars - 1} pos:0 n72 d12 p1 n48 d16 pos:12 p0 n71 "
                 f"d4 bar:{bars - 2} pos:0 n72 d16 p1 n48 d16")  # three bars, the second with a note on its last beat
        return GrammarMask(TOK, "cpu", controls=controls)(torch.tensor([TOK.encode(
            f"START style:bach tempo:121 meter:4/4 {inst} {three} {row}".split())]))[0]
    names = lambda a, kind: [t for t in TOK.itos if t.startswith(kind) and a[TOK.stoi[t]]]
    assert names(allowed("bar:5 pos:0 n72"), "d") == ["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d16"]
    assert names(allowed("bar:5 pos:0 n72 d8 p1 n48 d8"), "pos:") == ["pos:1", "pos:2", "pos:3", "pos:4", "pos:5",
                                                                     "pos:6", "pos:7", "pos:8"]
    assert names(allowed("bar:5 pos:0 n72 d8 p1 n48 d8 pos:8 p0 n71"), "d") == ["d8"]
    assert "pos:12" in names(allowed("bar:5 pos:0 n72 d8 p1 n48 d8", inst="inst:52 inst:52 inst:drums"), "pos:")
    assert "d12" in names(allowed("bar:5 pos:0 n72", rules=("parallels",)), "d")  # (not without the rule)
    after = "bar:5 pos:0 n72 d16 p1 n48 d16 bar:4 pos:0 n72"
    assert "d12" in names(allowed(after), "d")  # the next bar is free
    assert max(int(d[1:]) for d in names(allowed(after), "d")) == 16  # no note longer than a bar: a breath
    assert "d24" in names(allowed(after, rules=("parallels",)), "d")   # (not without the rule)
    assert "d12" in names(allowed("bar:2 pos:0 n72", bars=5), "d")  # the bar before the last: the cadence's
    assert names(allowed("bar:5 pos:0 n72", form="AAAA"), "d") == ["d12"]  # a bar the form repeats: its model's



def test_a_notes_duration_is_drawn_at_a_temperature_of_its_own():
    """--rhythm_temperature: where a note's duration is due (after its pitch), the mask's pool() divides the logits by
    the durations' temperature over the draw's, so that they are drawn at it; every other token as before. Drawn
    almost greedily (0.001) from a small model, each duration is the likeliest one the mask allows, teacher-forced;
    at the draw's own temperature (and at 0) the samples are the same as without it."""
    from controls import Request
    from mask import draw
    from model import GPT, GPTConfig
    head = "START style:bach tempo:121 meter:4/4 inst:52 bar:4 pos:0 n60".split()
    mask, logits = GrammarMask(TOK, "cpu", rhythm=2.0), torch.randn(1, TOK.vocab_size)
    mask(torch.tensor([TOK.encode(head)]))
    torch.testing.assert_close(mask.pool(logits), logits / 2)
    mask(torch.tensor([TOK.encode(head + ["d4"])]))
    torch.testing.assert_close(mask.pool(logits), logits)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=32, kv_lora_rank=16,
                          qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=16, n_shared_experts=1,
                          n_routed_experts=2, top_k_experts=1, expert_hidden=32, dropout=0.0), verbose=False).eval()
    request = Request(Controls(bars=2, parts=2))
    plain = draw(model, TOK, request, 3, 7, 0.9)
    assert draw(model, TOK, request, 3, 7, 0.9, rhythm_temperature=0.9) == plain == draw(
        model, TOK, request, 3, 7, 0.9, rhythm_temperature=0)
    sure = draw(model, TOK, request, 3, 7, 0.9, rhythm_temperature=1e-3)
    assert sure != plain
    checked = 0
    for row in sure:
        ids = TOK.encode(row[:row.index(END) if END in row else len(row)][:256])
        with torch.no_grad():
            scores = model(torch.tensor([ids]))[0][0]
        allowed = mask_rows(GrammarMask(TOK, "cpu", Controls(bars=2, parts=2)), ids, "cpu")
        for t in range(len(ids) - 1):
            if TOK.itos[ids[t + 1]][0] == "d":
                assert scores[t].masked_fill(~allowed[t], float("-inf")).argmax() == ids[t + 1]
                checked += 1
    assert checked >= 6


def test_every_part_strikes_the_final_chord():
    """Rule "ending", without "rests": the last bar opens with the final chord (pos:0 only) and every part strikes it
    there, the soprano first (drawn at Bach's rhythm_temperature, a soprano had rested through the last bar and an
    alto come in on its third beat); without the rule, free."""
    row, names = "pos:0 n72 d16 v80 p1 n60 d16 v80 bar:1", lambda a, kind: [t for t in TOK.itos if t.startswith(
        kind) and a[TOK.stoi[t]]]
    assert names(voice_mask(row, triad=(0, 4, 7), rules=("ending",)), "pos:") == ["pos:0"]
    assert "pos:4" in names(voice_mask(row, triad=(0, 4, 7), rules=("parallels",)), "pos:")
    # (the alto, p1, the part last named, strikes with a pitch alone: the soprano, p0, is named)
    assert names(voice_mask(row + " pos:0", triad=(0, 4, 7), rules=("ending",)), "") == ["p0"]
    assert voice_mask(row + " pos:0", triad=(0, 4, 7), rules=("parallels",))[TOK.stoi["n60"]]

def test_voice_leading_begins_on_the_tonic_where_the_key_is_known():
    rules = ("rests", "parallels", "crossing", "ending", "beginning")
    # --key C: the first onset is C major's triad, the lowest part (the last named) on the tonic
    allowed = voice_mask("pos:0", triad=(0, 4, 7), rules=rules)
    assert [k for k in range(60, 73) if allowed[TOK.stoi[f"n{k}"]]] == [60, 64, 67, 72]
    allowed = voice_mask("pos:0 n76 d4 v80 p1", triad=(0, 4, 7), rules=rules)
    assert [k for k in range(36, 72) if allowed[TOK.stoi[f"n{k}"]]] == [36, 48, 60]
    # after it, free; and without a key known before the first note, no such rule
    assert voice_mask("pos:0 n76 d4 v80 p1 n60 d4 v80 pos:4 p0", triad=(0, 4, 7), rules=rules)[TOK.stoi["n74"]]
    assert voice_mask("pos:0", rules=rules)[TOK.stoi["n62"]]
    assert voice_mask("pos:0", triad=(0, 4, 7))[TOK.stoi["n62"]]  # (nor without the rule)


def test_voice_leading_closes_on_the_dominant():
    """Rule "cadence": the last beat before the last bar is the dominant's triad or seventh chord (C major's: G B D
    F), its root in the lowest part and its leading tone (B) sounding (the part above the bass strikes it where none
    holds it); a note of another pitch ends by that beat; earlier, and without the rule, free."""
    rules = ("rests", "parallels", "crossing", "ending", "cadence")
    pitches = lambda allowed, lo, hi: [k for k in range(lo, hi) if allowed[TOK.stoi[f"n{k}"]]]
    row = "pos:0 n72 d12 v80 p1 n48 d12 v80 pos:12 p0"
    assert pitches(voice_mask(row, triad=(0, 4, 7), rules=rules), 60, 73) == [71]  # (two parts: the upper one)
    assert pitches(voice_mask(row + " n71 d4 v80 p1", triad=(0, 4, 7), rules=rules), 36, 61) == [43, 55]
    held = "pos:0 n71 d16 v80 p1 n48 d8 v80 pos:8 p1 n55 d4 pos:12 p1"  # B held: the bass's G again
    assert pitches(voice_mask(held, triad=(0, 4, 7), rules=rules), 36, 61) == [43, 55]
    assert voice_mask(row, triad=(0, 4, 7))[TOK.stoi["n72"]]  # (not without the rule)
    assert voice_mask(row, bars=3, triad=(0, 4, 7), rules=rules)[TOK.stoi["n72"]]  # (nor two bars before the last)
    at_8 = "pos:0 n72 d8 v80 p1 n48 d8 v80 pos:8 p0 "
    allowed = voice_mask(at_8 + "n72", triad=(0, 4, 7), rules=rules)  # C: to the beat at most
    assert allowed[TOK.stoi["d4"]] and not allowed[TOK.stoi["d8"]]
    assert voice_mask(at_8 + "n74", triad=(0, 4, 7), rules=rules)[TOK.stoi["d8"]]  # D: through it
    assert (beat_steps("4/4", 4), beat_steps("3/4", 4), beat_steps("6/8", 4), beat_steps("2/2", 4)) == (4, 4, 6, 8)
    # --key "D minor" holds the natural minor's notes: its dominant is A C E (G), none of them the leading tone C#
    head = "START style:bach tempo:121 meter:4/4 inst:52 inst:52 bar:2".split()
    controls = Controls(voice_leading=True, triad=key_triad("D minor"), scale=key_pitch_classes("D minor"),
                        voice_leading_rules=rules)
    allowed = GrammarMask(TOK, "cpu", controls=controls)(torch.tensor([TOK.encode(head + row.split())]))[0]
    assert pitches(allowed, 60, 73) == [60, 64, 67, 69, 72]


def test_voice_leading_closes_on_a_full_triad():
    """Rule "third": the last chord sounds its third (E in C major): where no part holds it or has struck it at this
    onset, the part above the bass strikes it; not where one has, nor with two parts, nor without the rule. So does
    the first chord, with the rule on the beginning."""
    rules = ("rests", "parallels", "crossing", "ending", "third")
    pitches = lambda allowed, lo, hi: [k for k in range(lo, hi) if allowed[TOK.stoi[f"n{k}"]]]
    def allowed(row, rules=rules, parts=3, bars=1):
        head = f"START style:bach tempo:121 meter:4/4 {'inst:52 ' * parts}bar:{bars}".split()
        controls = Controls(voice_leading=True, triad=(0, 4, 7), voice_leading_rules=rules)
        return GrammarMask(TOK, "cpu", controls=controls)(torch.tensor([TOK.encode(head + row.split())]))[0]
    assert pitches(allowed("pos:0 n72 d16 v80 p1"), 48, 73) == [52, 64]  # C on top: the middle part takes E
    assert pitches(allowed("pos:0 n72 d16 v80 p1", rules[:-1]), 48, 73) == [48, 52, 55, 60, 64, 67, 72]
    assert pitches(allowed("pos:0 n76 d16 v80 p1"), 48, 73) == [48, 52, 55, 60, 64, 67, 72]  # E on top: free
    assert pitches(allowed("pos:0 n72 d16 v80 p1 n64 d16 v80 p2"), 36, 65) == [36, 48, 60]  # (the bass: the root)
    four = "pos:0 n72 d16 v80 p1 n67 d16 v80 p2"  # C G: the tenor, above the bass, takes E
    assert pitches(allowed(four, parts=4), 48, 68) == [52, 64]
    assert pitches(allowed("pos:0 n72 d8 v80 p1", parts=2), 36, 73) == [36, 48, 60, 72]  # two parts: free
    opening = ("rests", "parallels", "crossing", "beginning", "third")  # the first of two bars: E again
    assert pitches(allowed("pos:0 n72 d4 v80 p1", opening, bars=2), 48, 73) == [52, 64]
    assert pitches(allowed("pos:0 n72 d4 v80 p1", opening[:-1], bars=2), 48, 73) == [48, 52, 55, 60, 64, 67, 72]
    assert len(pitches(allowed("pos:0 n72 d4 v80 p1 n64 d4 v80 p2 n48 d4 v80 pos:4 p0 n74 d4 p1", opening, bars=2),
                       48, 73)) > 2  # (the second onset: free)


def test_voice_leading_keeps_parts_from_crossing():
    # the lower part at or under the upper one's note (G4); the upper part's next note at or over the held C4
    allowed = voice_mask("pos:0 n67 d4 v80 p1")
    assert allowed[TOK.stoi["n67"]] and allowed[TOK.stoi["n55"]] and not allowed[TOK.stoi["n68"]]
    allowed = voice_mask("pos:0 n72 d4 v80 p1 n60 d8 v80 pos:4 p0")
    assert allowed[TOK.stoi["n60"]] and allowed[TOK.stoi["n74"]] and not allowed[TOK.stoi["n59"]]


def test_rule_breaks_steps_pieces_in_batches_as_the_sampler_steps_one():
    """Teacher-forced, what the rules forbid and where a piece breaks them: pieces of different lengths in one batch
    (padded) give what the mask gives stepped along each alone, and a parallel octave is found where it is."""
    head = "START style:bach tempo:121 meter:4/4 inst:52 inst:52".split()
    pieces = [head + "bar:2 pos:0 n72 d4 v80 p1 n60 d4 v80 pos:4 p0 n74 d4 p1 n62 d4 pos:8 p0 n76 d8 p1 n55 d8 "
                     "bar:1 pos:0 p0 n72 d16 p1 n48 d16 END".split(),  # parallel octaves at pos:4, a tonic end
              head + "bar:1 pos:0 n67 d16 v80 p1 n60 d16 v80 END".split(),
              head + "bar:2 pos:0 n67 d8 v80 p1 n60 d8 v80 pos:8 p0 n69 d8 p1 n62 d8 bar:1 pos:0 p0 n67 d16 "
                     "p1 n48 d16 END".split()]                         # parallel fifths at pos:8
    ids = [TOK.encode(p) for p in pieces]
    controls = Controls(voice_leading=True, triad=(0, 4, 7))
    got = rule_breaks(TOK, ids, controls, batch_tokens=2 * max(map(len, ids)))
    for piece, (at, packed, broken) in zip(ids, got):
        want = mask_rows(GrammarMask(TOK, "cpu"), piece, "cpu") & ~mask_rows(GrammarMask(TOK, "cpu", controls), piece,
                                                                             "cpu")  # row t-1: before token t
        where = torch.nonzero(want.any(1))[:, 0] + 1
        assert at.tolist() == where.tolist()
        forbidden = torch.from_numpy(np.unpackbits(packed, axis=1)[:, :TOK.vocab_size].astype(bool))
        assert torch.equal(forbidden, want[where - 1])
        assert broken.tolist() == [bool(want[t - 1, piece[t]]) for t in where.tolist()]
    breaks = lambda k: [pieces[k][t] for t, b in zip(got[k][0], got[k][2]) if b]
    assert breaks(0) == ["n62"] and breaks(1) == [] and breaks(2) == ["n62"]


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31), bars=st.integers(1, 3))
def test_voice_leading_keeps_every_part_sounding_on_random_logits(seed, bars):
    controls = Controls(bars=bars, instruments=(52, 52, 52), voice_leading=True, triad=(2, 6, 9))  # (drums may rest)
    for tokens in random_walk(GrammarMask(TOK, "cpu", controls), 4, seed, bar_bias=2):
        notes, header = check_sample(tokens, bars)
        last_bar = header.bar_lines(SPEC.sample_freq, bars)[-2]
        assert all(n.pitch % 12 in (2, 6, 9) and (n.part < 2 or n.pitch % 12 == 2)
                   for n in notes if n.start >= last_bar)
        assert all(n.end <= last_bar for n in notes if n.start < last_bar)  # the last chord is struck anew
        end = max(n.end for n in notes)
        for part in range(3):  # from the first onset to the end, each part always sounds
            mine = sorted((n.start, n.end) for n in notes if n.part == part)
            assert mine[0][0] == min(n.start for n in notes)
            reach = mine[0][1]
            for a, b in mine[1:]:
                assert a <= reach
                reach = max(reach, b)
        assert all(max(n.end for n in notes if n.part == part) for part in range(3)) and end


def test_a_planned_length_takes_the_chance_of_any_length():
    """With --bars 12, a model that would close the header with bar:9 closes it with bar:12, not with a 5th part."""
    mask = GrammarMask(TOK, "cpu", controls=Controls(bars=12))
    rows = ["START style:bach tempo:121 meter:4/4 inst:52 inst:52 inst:52 inst:52".split(),
            "START style:bach tempo:121 meter:4/4 inst:52 bar:12 pos:0 n60".split()]
    allowed = mask(torch.tensor([TOK.encode(r) for r in rows]))
    logits = torch.full((2, TOK.vocab_size), -10.0)
    logits[:, TOK.stoi["bar:9"]], logits[:, TOK.stoi["bar:8"]], logits[:, TOK.stoi["inst:52"]] = 3.0, 2.0, 0.0
    logits[:, TOK.stoi["d4"]] = 1.0
    pooled = mask.pool(logits).masked_fill(~allowed, float("-inf")).softmax(1)
    assert allowed[0, TOK.stoi["bar:12"]] and not allowed[0, TOK.stoi["bar:9"]]
    assert pooled[0, TOK.stoi["bar:12"]] > 0.9 and pooled[0, TOK.stoi["inst:52"]] < 0.1
    assert torch.equal(mask.pool(logits)[1], logits[1])  # past the header, logits are read as they are


def repeats(form, bars):
    """{bar: the bar it repeats} (from 0) that --form asks of a piece of `bars`: phrase i holds bars ceil(i*bars/m)
    up to phrase i+1's; the last bar is the cadence, written anew."""
    starts = [-(-i * bars // len(form)) for i in range(len(form) + 1)]
    out = {}
    for i, letter in enumerate(form):
        j = form.index(letter)
        for k in range(starts[i], starts[i + 1]):
            if j != i and k - starts[i] < starts[j + 1] - starts[j] and k < bars - 1:
                out[k] = starts[j] + k - starts[i]
    return out


FORMS = ["AABA", "AABB", "ABAB", "AAB", "ABCA", "BAYAB"]


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31), forms=st.one_of(st.sampled_from(FORMS),
                                                   st.lists(st.sampled_from(FORMS + [""]), min_size=2, max_size=3)),
       bars=st.integers(4, 9), rules=st.booleans())
def test_a_form_repeats_its_phrases_note_for_note(seed, forms, bars, rules):
    """One form, or a form per sample in turn (as --form auto draws them; "" none)."""
    assert repeats("AABA", 8) == {2: 0, 3: 1, 6: 0} and repeats("AAB", 7) == {3: 0, 4: 1} and repeats("A", 5) == {}
    controls = Controls(bars=bars, form=forms if isinstance(forms, str) else tuple(forms), instruments=(52, 52, 52),
                        voice_leading=rules, triad=(0, 4, 7))
    for row, tokens in enumerate(random_walk(GrammarMask(TOK, "cpu", controls), 3, seed, bar_bias=2)):
        form = controls.forms()[row % len(controls.forms())] or "A"
        notes, header = check_sample(tokens, bars)
        lines = header.bar_lines(SPEC.sample_freq, bars)
        bar = lambda b: [n._replace(start=n.start - lines[b]) for n in notes if lines[b] <= n.start < lines[b + 1]]
        for b, model in repeats(form, bars).items():
            its = bar(model)
            lead = its[0].start if its else 0  # before the model's first onset (a pickup), the bar is free
            mine = [n for n in bar(b) if n.start >= lead]
            assert all(n.start + n.dur <= lead for n in bar(b) if n.start < lead)
            assert [(n.start, n.pitch, n.part) for n in mine] == [(n.start, n.pitch, n.part) for n in its]
            # a duration as the model's, or cut where it would ring into the notes of a bar that repeats other music
            cuts = set(lines) | {n.start for n in notes}
            assert all(a.dur == m.dur or (a.dur < m.dur and a.start + lines[b] + a.dur in cuts)
                       for a, m in zip(mine, its))
        if rules:  # the cadence still holds
            assert all(n.pitch % 12 in (0, 4, 7) for n in notes if n.start >= lines[-2])


def test_a_new_letter_does_not_open_as_an_earlier_phrase_opened():
    """AB in 4 bars: B's first bar (bar 2) may not be bar 0 again; its last note, where the others are bar 0's,
    takes another pitch. Where B went elsewhere before, or with no form, that pitch is free; with AA it is the one."""
    opening = ("bar:4 pos:0 n67 d4 v90 pos:4 n69 d4 pos:8 n71 d8 bar:3 pos:0 n72 d16 "
               "bar:2 pos:0 {} d4 pos:4 n69 d4 pos:8")
    rows = [TOK.encode(f"START style:fiddle tempo:121 meter:4/4 inst:40 {opening.format(n)}".split())
            for n in ("n67", "n65")]
    for form, want in (("AB", [False, True]), (None, [True, True])):
        allowed = GrammarMask(TOK, "cpu", Controls(bars=4, form=form))(torch.tensor(rows))
        assert allowed[:, TOK.stoi["n71"]].tolist() == want, form
        assert allowed[:, TOK.stoi["n72"]].all() and allowed[:, TOK.stoi["n69"]].all()
    allowed = GrammarMask(TOK, "cpu", Controls(bars=4, form="AA"))(torch.tensor(rows[:1]))
    assert allowed[0, TOK.stoi["n71"]] and allowed[0].sum() == 1
    late = "START style:fiddle tempo:121 meter:4/4 inst:40 bar:3 pos:0 n67 d16 v90 bar:2 pos:0 n72 d16 bar:1 pos:0"
    allowed = GrammarMask(TOK, "cpu", Controls(bars=3, form="AB"))(torch.tensor([TOK.encode(late.split())]))
    assert allowed[0, TOK.stoi["n67"]]  # a phrase of one bar, the cadence, is free


def test_form_errors_are_one_line():
    assert Controls(form="AABA").errors(SPEC) == Controls(form=("AB", "")).errors(SPEC) == [
        "--form shares a planned length out among its phrases: give --bars or --seconds too"]
    assert Controls(form="").errors(SPEC) and not Controls(form=("", "AB"), bars=4).errors(SPEC)
    assert "wants one letter per phrase" in Controls(form="A-B", bars=8).errors(SPEC)[0]
    assert "more than --bars 3" in Controls(form="AABA", bars=3).errors(SPEC)[0]


def choir_faults(notes):
    """(notes outside their voice's range, leaps over an octave, alto or tenor over an octave under the voice above)
    of a four-part piece, and its notes."""
    import config
    ranged = leaps = spaced = 0
    for part, (lo, hi) in enumerate(config.choir_ranges):
        mine = [n for n in notes if n.part == part]
        ranged += sum(not lo <= n.pitch <= hi for n in mine)
        leaps += sum(abs(a.pitch - b.pitch) > 12 for a, b in zip(mine, mine[1:]))
    for n in notes:
        if n.part in (1, 2):  # against the highest note of the voice above, sounding at this onset
            above = [m.pitch for m in notes if m.part == n.part - 1 and m.start <= n.start < m.end]
            spaced += bool(above) and n.pitch < max(above) - 12
    return (ranged, leaps, spaced), len(notes)


@pytest.mark.parametrize("seed", [0, 1, 2])  # (fixed: the share of faults beside voice leading is a count)
def test_the_choir_rules_keep_four_voices_in_range_spaced_and_without_wide_leaps(seed):
    """--choir on random logits: every voice in its range (config.choir_ranges), the alto within an octave under the
    soprano and the tenor under the alto where those sound, no leap over an octave in a voice. Beside the rules of
    voice leading, which hold first, they give way where both leave nothing canonical (random logits pile chords into
    a part, which they fight): then a few notes in a hundred, against more than one a note without them."""
    four = dict(bars=2, meter="4/4", instruments=(52, 52, 52, 52), triad=(2, 6, 9))
    for tokens in random_walk(GrammarMask(TOK, "cpu", Controls(**four, choir=True)), 4, seed, bar_bias=2):
        assert choir_faults(check_sample(tokens, 2)[0])[0] == (0, 0, 0)
    share = {}
    for choir in (False, True):
        faults = notes = 0
        for tokens in random_walk(GrammarMask(TOK, "cpu", Controls(**four, choir=choir, voice_leading=True)), 4, seed,
                                  bar_bias=2):
            got, n = choir_faults(check_sample(tokens, 2)[0])
            faults, notes = faults + sum(got), notes + n
        share[choir] = faults / notes
    assert share[True] <= 0.12 and share[False] >= 0.8, share


def choir_allowed(lines, voice, rules):
    """What `voice` (0 soprano .. 3 bass) may sing next under --choir with `rules`, after the four voices' `lines`
    (soprano to bass, a note a beat each), the voices above it having sung theirs on the next beat."""
    head = "START style:bach tempo:121 meter:4/4 inst:52 inst:52 inst:52 inst:52 bar:2"
    note = lambda i, v: f"{f'p{v} ' if i or v else ''}n{lines[v][i]} d4{' v80' if i == v == 0 else ''}"
    k = len(lines[voice])
    row = [f"pos:{4 * i} " + " ".join(note(i, v) for v in range(4)) for i in range(k)]
    row.append(f"pos:{4 * k} " + " ".join([note(k, v) for v in range(voice)] + [f"p{voice}"]))
    mask = GrammarMask(TOK, "cpu", controls=Controls(choir=True, choir_rules=rules))
    return mask(torch.tensor([TOK.encode(f"{head} {' '.join(row)}".split())]))[0]


def test_the_choir_rule_on_repeats_keeps_a_voice_from_striking_one_pitch_a_fourth_time():
    """Choir.most_strikes: a voice may strike one pitch three times running, not a fourth; another pitch between
    starts the count again. Only with "repeat" among the choir's rules."""
    def allowed(altos, rules=("range", "spacing", "leap", "repeat")):
        """What the alto may sing after striking `altos` on the beats, the others moving (C major: I - V - I ...)."""
        return choir_allowed(((72, 74, 72, 71, 72), altos, (64,) * 5, (48, 55, 48, 55, 48)), 1, rules)

    assert not allowed((67, 67, 67))[TOK.stoi["n67"]] and allowed((67, 67, 67))[TOK.stoi["n65"]]
    assert allowed((67, 67, 67), rules=("range", "spacing", "leap"))[TOK.stoi["n67"]]
    assert allowed((67, 67))[TOK.stoi["n67"]] and allowed((67, 67, 69, 67))[TOK.stoi["n67"]]


def test_the_choir_rule_on_swings_keeps_a_voice_from_rocking_between_two_pitches():
    """Choir.most_returns: a voice may go back to the pitch before its last (a b a) where it did so once in its four
    notes before, not twice: C F C F, then not C again, nor after one note between (C F C D C F, then not C). Only
    with "swing" among the choir's rules."""
    def allowed(basses, rules=Controls().choir_rules):
        """What the bass may sing after `basses` on the beats, the upper voices moving (C major)."""
        return choir_allowed(((72, 74, 72, 71, 72, 74, 72, 71), (67, 65, 64, 62, 64, 65, 67, 65), (60,) * 8, basses),
                             3, rules)

    C, D, F = (TOK.stoi[f"n{p}"] for p in (48, 50, 53))
    assert not allowed((48, 53, 48, 53))[C] and allowed((48, 53, 48, 53))[D]
    assert allowed((48, 53, 48, 53))[F]  # striking F again goes back to nothing (and only a second time)
    assert allowed((48, 53, 48))[F]  # one return before it
    assert allowed((48, 53, 48, 53), rules=("range", "spacing", "leap", "repeat"))[C]
    assert not allowed((48, 53, 48, 50, 48, 53))[C]  # the rocking goes on after a note between
    assert allowed((48, 53, 48, 50, 52, 53, 52))[F]  # C F C D E F E: one return in the four before


def test_a_styles_defaults_fill_what_the_command_line_leaves_unset(monkeypatch):
    import config
    from controls import PER_STYLE, drawn_forms, style_settings
    monkeypatch.setitem(config.STYLE_DEFAULTS, "x", dict(voice_leading=True, temperature=0.5, forms={"AB": 3, "": 1}))
    assert style_settings("x", {"voice_leading": None, "temperature": 0.7}) == dict(
        voice_leading=True, voice_leading_rules=config.voice_leading_rules, choir=config.choir, form=config.form,
        temperature=0.7, rhythm_temperature=config.rhythm_temperature, top_p=config.top_p)
    assert style_settings(None, {}) == style_settings("not listed", {}) == {k: getattr(config, k) for k in PER_STYLE}
    monkeypatch.setitem(config.STYLE_DEFAULTS["x"], "with_given", dict(voice_leading_rules=("parallels",), top_p=0.5))
    assert style_settings("x", {"top_p": 0.6}, with_given=True) == dict(
        voice_leading=True, voice_leading_rules=("parallels",), choir=config.choir, form=config.form,
        temperature=0.5, rhythm_temperature=config.rhythm_temperature,
        top_p=0.6)  # under given material the row's with_given, and still the flags over it
    assert style_settings("x", {})["voice_leading_rules"] == config.voice_leading_rules
    forms = drawn_forms("x", 400, seed=1)
    assert set(forms) == {"AB", ""} and 0.68 < forms.count("AB") / 400 < 0.82 and forms == drawn_forms("x", 400, 1)
    assert drawn_forms("x", 5, 1, bars=1) is None and drawn_forms("y", 5, 1) is None  # "AB" needs 2 bars


def test_a_key_drawn_per_sample_holds_its_tonic_triad_and_resolves_its_chromatic_notes(monkeypatch):
    from dataclasses import replace
    import config
    from controls import drawn_forms, key_pitch_classes, key_setting
    assert key_setting("D minor", "bach", 3, 1) == (dict(scale=key_pitch_classes("D minor"), triad=(2, 5, 9),
                                                         in_key=False), ())  # a name: its scale
    monkeypatch.setitem(config.STYLE_DEFAULTS, "x", dict(forms={"AB": 3, "": 1}, keys={"G major": 3, "A minor": 1}))
    key, names = key_setting("auto", "x", 400, seed=1)
    assert key["scale"] is None and key["in_key"] and len(key["triad"]) == len(names) == 400
    assert set(zip(key["triad"], names)) == {((7, 11, 2), "G major"), ((9, 0, 4), "A minor")}
    assert 0.68 < names.count("G major") / 400 < 0.82 and key_setting("AUTO", "x", 400, 1) == (key, names)
    pairs = set(zip(names, drawn_forms("x", 400, 1)))  # a stream apart from the forms': any key with any form
    assert len(pairs) == 4
    for key, style, free in (("auto", "x", False), ("none", "x", True), (None, "x", True), ("auto", "folk", True),
                             ("auto", None, True)):
        assert key_setting(key, style, 4, 1, free) == (dict(scale=None, triad=None, in_key=False), ()), key
    with pytest.raises(ValueError):
        key_setting("H major", "x", 4, 1)
    # each row its own key, in turn: the first chord and the last bar on its tonic triad, the bass on the tonic
    controls = Controls(voice_leading=True, voice_leading_rules=("rests", "ending", "beginning"),
                        triad=((0, 4, 7), (7, 11, 2)))
    for bars in (2, 1):  # the first onset of two bars, then the first onset of the last bar
        head = f"START style:bach tempo:121 meter:4/4 inst:52 inst:52 bar:{bars} pos:0".split()
        allowed = GrammarMask(TOK, "cpu", controls=controls)(torch.tensor([TOK.encode(head)] * 3))
        got = [[k for k in range(60, 73) if row[TOK.stoi[f"n{k}"]]] for row in allowed]
        assert got == [[60, 64, 67, 72], [62, 67, 71], [60, 64, 67, 72]], bars
    row = "pos:0 n76 d4 v80 p1 n60 d4 v80 pos:4 p0".split()  # after the first onset, free
    head = "START style:bach tempo:121 meter:4/4 inst:52 inst:52 bar:2".split()
    assert GrammarMask(TOK, "cpu", controls=controls)(torch.tensor([TOK.encode(head + row)]))[0, TOK.stoi["n74"]]
    # in its key: a note outside it (F#4 in C major, not in G major) moves on by a semitone in its part, at the next
    # onset; and no more than one note in 30 is outside the key
    mask = lambda row: GrammarMask(TOK, "cpu", controls=replace(controls, voice_leading=False, in_key=True))(
        torch.tensor([TOK.encode(head + row.split())] * 2))
    pitches = lambda allowed: [[k for k in range(60, 73) if r[TOK.stoi[f"n{k}"]]] for r in allowed]
    g_major = [60, 62, 64, 66, 67, 69, 71, 72]
    assert pitches(mask("pos:0 n66 d4 v80 p1 n50 d4 v80 pos:4 p0")) == [[65, 67], g_major]  # (no room for another)
    assert mask("pos:0 n66 d4 v80 p1 n50 d4 v80 pos:4 p1")[:, TOK.stoi["n43"]].all()  # the other part: free
    bar = " ".join(f"pos:{k} n{64 + 3 * (k % 2)} d1" + " v80" * (k == 0) + " p1 n48 d1" + " v80" * (k == 0)
                   for k in range(16))  # 32 notes in both keys
    assert pitches(mask(bar + " bar:1 pos:0 p0")) == [list(range(60, 73))] * 2  # room for one outside
    assert pitches(mask(bar + " bar:1 pos:0 p0 n66 d4 p1 n48 d4 pos:4 p0")) == [[65, 67], list(range(60, 73))]
    # a minor key as Bach writes it: its raised sixth and seventh in it, its natural seventh (G in A minor) not
    a_minor = GrammarMask(TOK, "cpu", controls=Controls(triad=(9, 0, 4), in_key=True))
    assert pitches(a_minor(torch.tensor([TOK.encode(head + ["pos:0"])]))) == [[60, 62, 64, 65, 66, 68, 69, 71, 72]]


def test_a_chorale_in_a_natural_minor_key_is_pointed_to_the_harmonic_minor():
    from controls import minor_key_note
    assert '--key "F# harmonic minor" has it' in minor_key_note("F# minor", {"fiddle", "bach"})
    for key, styles in (("D harmonic minor", {"bach"}), ("D dorian", {"bach"}), ("D minor", {"fiddle", "folk"}),
                        (None, {"bach"}), ("D", {"bach"})):
        assert minor_key_note(key, styles) is None, (key, styles)


def test_a_harmonization_under_the_choir_is_for_four_voices():
    from dataclasses import replace
    from controls import choir_voices, harmonize, infill
    from encoding_decoding import Note
    melody, header = [Note(4 * k, 67, 4, 80) for k in range(8)], Header(parts=(0,))  # (a tune on a piano)
    sung = harmonize(melody, header, SPEC)[1]
    assert choir_voices(Controls(choir=True), sung).instruments == (52, 52, 52, 52)  # four voices of a choir
    for c in (Controls(), Controls(choir=True, parts=3), Controls(choir=True, instruments=(52, 52))):
        assert choir_voices(c, sung) == c  # no choir, or the parts asked for
    filled = infill(melody, replace(header, bars=2), SPEC, 1, 1)[1]
    assert choir_voices(Controls(choir=True), filled) == Controls(choir=True) == choir_voices(Controls(choir=True),
                                                                                             None)


def test_sample_takes_its_styles_row_where_no_flag_is_given(monkeypatch, tmp_path):
    import config
    from conftest import sample_here
    monkeypatch.setitem(config.STYLE_DEFAULTS, "bach", dict(voice_leading=True, choir=True, temperature=0.5,
                                                            top_p=0.9, forms={"AB": 1}, keys={"G major": 1}))
    texts = lambda d: [p.read_text() for p in sorted(d.glob("*.txt"))]
    common = ["--style", "bach", "--bars", 4, "--num_samples", 1, "--seed", 5]
    code, out, err = sample_here(*common, "--output_dir", tmp_path / "row")
    assert code == 0 and out.count(", form AB, key G major") == 1, err
    code, out, _ = sample_here(*common, "--voice_leading", "true", "--choir", "true", "--temperature", 0.5,
                               "--top_p", 0.9, "--form", "AB", "--output_dir", tmp_path / "flags")
    assert code == 0 and texts(tmp_path / "row") == texts(tmp_path / "flags")  # the row is those flags
    code, out, _ = sample_here(*common, "--form", "none", "--key", "none", "--temperature", 1.0,
                               "--output_dir", tmp_path / "b")
    assert code == 0 and "form" not in out and ", key" not in out and texts(tmp_path / "b") != texts(tmp_path / "row")
    code, out, _ = sample_here("--style", "bach", "--num_samples", 1, "--max_new_tokens", 64,
                               "--output_dir", tmp_path / "c")
    assert code == 0 and "form" not in out  # auto: no length asked, no form
