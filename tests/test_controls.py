"""The piece header (style, tempo, meter) and the sampling controls, each enforced by the mask."""
import json

import pytest
import torch
from hypothesis import example, given, settings, strategies as st

from conftest import midi_file, on, off, run, track, vlq
from controls import Controls, GrammarMask, key_pitch_classes
from encoding_decoding import (END, START, Header, Spec, Tokenizer, bar_steps, finish, midi_to_notes, notes_to_midi,
                               notes_to_tokens, parse_score, score_to_notes, text_to_midi, tokens_to_notes,
                               tokens_to_text, validate)
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
    assert tokens[:4] == ["START", "style:bach", "tempo:90", "meter:3/4"] and validate(tokens, SPEC) is None
    back, header_back, _ = midi_to_notes(text_to_midi(tokens_to_text(tokens), SPEC)[0], SPEC)
    assert back == notes and (header_back.bpm, header_back.meter) == (pytest.approx(90, abs=0.01), "3/4")
    # --bpm overrides the header's tempo when writing
    assert midi_to_notes(text_to_midi(tokens_to_text(tokens), SPEC, bpm=140)[0], SPEC)[1].bpm == pytest.approx(140, abs=0.01)


def test_midi_without_tempo_or_meter_gets_the_defaults():
    notes, header, _ = midi_to_notes(midi_file(track(on(60) + off(60, delta=480))), SPEC)
    assert (header.bpm, header.meter) == (120, "4/4")


def test_score_with_a_metronome_mark_and_a_pickup(tmp_path):
    abc = tmp_path / "tune.abc"
    abc.write_text("X:1\nT:Waltz\nM:3/4\nL:1/4\nQ:1/4=72\nK:G\nGAB|d2B|A3|G2z|\n")
    [(_, score)] = parse_score(abc)
    notes, header, _ = score_to_notes(score, SPEC)
    assert (header.bpm, header.meter) == (72, "3/4")
    assert SPEC.header_tokens(header)[1:] == ["tempo:75", "meter:3/4"]  # 72 BPM lies in the bucket of 75
    # a 6/8 tune without a tempo: the default's bucket
    abc.write_text("X:1\nT:Jig\nM:6/8\nL:1/8\nK:D\nDFA dAF|GBd gdB|\n")
    header = score_to_notes(parse_score(abc)[0][1], SPEC)[1]
    assert SPEC.header_tokens(header)[1:] == [SPEC.tempo_token(120), "meter:6/8"]


def test_header_vocabulary():
    assert SPEC.tempo_token(10) == "tempo:31" and SPEC.tempo_token(1000) == "tempo:286"  # clamped to the range
    assert len(set(SPEC.tempo_bpms())) == SPEC.tempo_buckets
    assert SPEC.meter_token("7/4") == "meter:other" and bar_steps("6/8", 4) == 12 and bar_steps("other", 4) == 16
    assert key_pitch_classes("D minor") == (0, 2, 4, 5, 7, 9, 10) and key_pitch_classes("F#") == (1, 3, 5, 6, 8, 10, 11)
    with pytest.raises(ValueError, match="unknown mode"):
        key_pitch_classes("C bogus")


def random_walk(mask, n, seed, steps=4000, end_bias=0.0):
    """Sample from random logits under the mask until every row has ended (or `steps` run out)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.full((n, 1), TOK.stoi[START])
    for _ in range(steps):
        logits = torch.randn(n, TOK.vocab_size, generator=gen) * 3
        logits[:, TOK.stoi[END]] += end_bias
        nxt = sample_logits(logits.masked_fill(~mask(idx), float("-inf")), 1.0, None, None, gen)
        idx = torch.cat([idx, nxt[:, None]], dim=1)
        if (nxt == TOK.stoi[END]).all():
            break
    return [TOK.decode(row) for row in idx.tolist()]


def test_forced_header_tokens():
    mask = GrammarMask(TOK, "cpu", controls=Controls(style="palestrina", tempo=90, meter="3/4"))
    for tokens in random_walk(mask, 8, 0, steps=20):
        assert tokens[1:4] == ["style:palestrina", "tempo:90", "meter:3/4"]
    free = {tuple(t[1:4]) for t in random_walk(GrammarMask(TOK, "cpu"), 16, 1, steps=4)}
    assert len(free) > 1  # what is not forced, the model samples


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), bars=st.integers(1, 4), meter=st.sampled_from([None, "3/4", "6/8", "2/2"]),
       end_bias=st.floats(-3, 6))
def test_bars_end_exactly_there_on_random_logits(seed, bars, meter, end_bias):
    mask = GrammarMask(TOK, "cpu", controls=Controls(bars=bars, meter=meter))
    for tokens in random_walk(mask, 6, seed, end_bias=end_bias):
        assert tokens[-1] == END and validate(finish(tokens), SPEC) is None
        notes, header, _ = tokens_to_notes(tokens, SPEC)
        assert max(s + d for s, _, d, _ in notes) == bars * bar_steps(header.meter, SPEC.sample_freq)
        assert meter is None or header.meter == meter
        assert notes_to_tokens(notes, SPEC, header) == finish(tokens)  # canonical: decoding drops nothing


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), seconds=st.floats(0.5, 6), bpm=st.sampled_from([None, 60.0, 150.0]))
@example(seed=1, seconds=0.5000000000000001, bpm=None)  # 2.5000000000000004 steps at 75 BPM: 2.5 in float32
def test_seconds_end_exactly_there_on_random_logits(seed, seconds, bpm):
    controls = Controls(seconds=seconds, bpm=bpm)
    for tokens in random_walk(GrammarMask(TOK, "cpu", controls=controls), 6, seed):
        assert tokens[-1] == END
        notes, header, _ = tokens_to_notes(tokens, SPEC)
        written = bpm or header.bpm  # the tempo the MIDI file plays at
        assert max(s + d for s, _, d, _ in notes) == controls.length_steps(16, written, SPEC.sample_freq)
        assert abs(max(s + d for s, _, d, _ in notes) * 60 / written / SPEC.sample_freq - seconds) \
            <= 60 / written / SPEC.sample_freq  # within one step


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), key=st.sampled_from(["D minor", "C major", "F# dorian", "Bb blues"]),
       low=st.integers(30, 70), width=st.integers(7, 30), bars=st.sampled_from([None, 2]))
def test_key_and_pitch_range_are_never_violated(seed, key, low, width, bars):
    controls = Controls(scale=key_pitch_classes(key), pitch_range=(low, low + width), bars=bars)
    for tokens in random_walk(GrammarMask(TOK, "cpu", 20, controls), 6, seed, steps=300, end_bias=-2):
        notes = tokens_to_notes(finish(tokens), SPEC)[0]
        assert notes and all(p % 12 in controls.scale and low <= p <= low + width for _, p, _, _ in notes)
        assert validate(finish(tokens), SPEC) is None


def test_rows_of_one_batch_keep_their_own_state():
    """Two prefixes in different states at once: each row's mask follows its own grammar state and clock."""
    mask = GrammarMask(TOK, "cpu", controls=Controls(bars=1))
    rows = ["START style:bach tempo:121 meter:4/4 n60 d4 v80 sepxx d4 sepxx d4 sepxx d4".split(),  # event, clock 12/16
            "START style:bach tempo:121 meter:3/4 sepxx d2 n70 d1 v80 n65 d1 v80 n59".split()]  # note_dur, clock 2/12
    allowed = mask(torch.tensor([TOK.encode(r) for r in rows]))
    assert allowed[0, TOK.stoi["n50"]] and not allowed[0, TOK.stoi["d1"]]
    assert not allowed[0, TOK.stoi["sepxx"]]  # a rest shorter than max_dur is followed by a note
    assert not allowed[0, TOK.stoi[END]]  # no note reaches step 16 yet
    assert allowed[1, TOK.stoi["d10"]] and not allowed[1, TOK.stoi["d11"]]  # may last to the bar's end, not past


def test_on_the_last_step_the_piece_ends_as_soon_as_it_may():
    mask = GrammarMask(TOK, "cpu", controls=Controls(bars=1))
    allowed = mask(torch.tensor([TOK.encode("START style:bach tempo:121 meter:4/4 sepxx d15 n60 d1 v80".split())]))[0]
    assert allowed.nonzero().flatten().tolist() == [TOK.stoi[END]]


def test_samples_come_out_in_canonical_form():
    """Notes that start together come highest first, and a key is not struck again while it sounds."""
    mask = GrammarMask(TOK, "cpu")
    allowed = mask(torch.tensor([TOK.encode("START style:bach tempo:121 meter:4/4 n60 d8 v80 n50 d2 v80".split())]))[0]
    assert not allowed[TOK.stoi["n60"]] and not allowed[TOK.stoi["n72"]] and allowed[TOK.stoi["n49"]]
    allowed = mask(torch.tensor([TOK.encode("START style:bach tempo:121 meter:4/4 n60 d8 v80 n50 d2 v80 sepxx d4".split())]))[0]
    assert not allowed[TOK.stoi["n60"]] and allowed[TOK.stoi["n50"]] and allowed[TOK.stoi["n72"]]  # 60 sounds to step 8


@pytest.mark.parametrize("args, message", [
    (["--style", "jazz"], "unknown style 'jazz'; this run knows: bach, baroque"),
    (["--meter", "7/4"], "unknown meter '7/4'; this run knows: 2/4, 3/4"),
    (["--key", "H minor"], "'H' is not a pitch class"),
    (["--pitch_range", "90,40"], "argument --pitch_range: wants two values LOW,HIGH with LOW <= HIGH"),
    (["--pitch_range", "0,10"], "--pitch_range wants LOW,HIGH with 21 <= LOW <= HIGH <= 108"),
    (["--bars", "0"], "argument --bars: wants a number >= 1 and <= 1000, got '0'"),
    (["--seconds", "nan"], "argument --seconds: wants a finite number"),
    (["--bars", "4", "--seconds", "10"], "give --bars or --seconds, not both"),
])
def test_control_errors_are_one_clear_line(trained, tmp_path, args, message):
    r = run("sample.py", "--out_dir", trained, "--output_dir", tmp_path, *args)
    assert r.returncode != 0 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_list_styles(trained):
    r = run("sample.py", "--out_dir", trained, "--list_styles")
    assert r.returncode == 0 and "styles: bach baroque classical fiddle" in r.stdout and "meters: 2/4 3/4" in r.stdout


def test_sample_script_obeys_every_control_on_the_written_midi(trained, tmp_path):
    r = run("sample.py", "--out_dir", trained, "--num_samples", 3, "--style", "fiddle", "--meter", "6/8",
            "--tempo", 100, "--bars", 2, "--key", "D minor", "--pitch_range", "50,80", "--output_dir", tmp_path)
    assert r.returncode == 0, r.stderr
    mids = sorted(tmp_path.glob("tiny_fiddle_seed1337_*.mid"))
    assert len(mids) == 3
    for mid in mids:
        assert mid.with_suffix(".txt").read_text().split()[1:4] == ["style:fiddle", "tempo:100", "meter:6/8"]
        notes, header, _ = midi_to_notes(mid.read_bytes(), SPEC)
        assert (round(header.bpm), header.meter) == (100, "6/8")
        assert max(s + d for s, _, d, _ in notes) == 2 * 12
        assert all(p % 12 in key_pitch_classes("D minor") and 50 <= p <= 80 for _, p, _, _ in notes)
    r = run("sample.py", "--out_dir", trained, "--num_samples", 2, "--seconds", 3, "--bpm", 90, "--output_dir",
            tmp_path / "s")
    assert r.returncode == 0, r.stderr
    for mid in (tmp_path / "s").glob("*.mid"):
        notes, header, _ = midi_to_notes(mid.read_bytes(), SPEC)
        assert header.bpm == pytest.approx(90, abs=0.01) and max(s + d for s, _, d, _ in notes) == 18  # 3 s at 90 BPM


def test_prompt_longer_than_the_target_is_one_line(trained, tmp_path):
    prompt = tmp_path / "p.mid"
    prompt.write_bytes(notes_to_midi([(4 * k, 60 + k % 12, 4, 80) for k in range(40)], SPEC))
    r = run("sample.py", "--out_dir", trained, "--prompt", prompt, "--prompt_bars", 4, "--bars", 2)
    assert r.returncode != 0 and "already last past the --bars/--seconds target" in r.stderr


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


def test_prompt_bars_count_in_the_prompts_own_meter(trained, tmp_path):
    prompt = tmp_path / "waltz.mid"
    prompt.write_bytes(notes_to_midi([(4 * k, 60 + k % 12, 4, 80) for k in range(30)], SPEC, Header(bpm=90, meter="3/4")))
    r = run("sample.py", "--out_dir", trained, "--num_samples", 1, "--max_new_tokens", 20, "--prompt", prompt,
            "--prompt_bars", 2, "--output_dir", tmp_path)
    assert r.returncode == 0, r.stderr
    tokens = (tmp_path / "tiny_seed1337_0.txt").read_text().split()
    assert tokens[2:4] == ["tempo:90", "meter:3/4"]
    # 2 bars of 3/4 = 24 steps: the 6 notes that start before it, then the model's own
    assert tokens[4:4 + 28] == "n60 d4 v80".split() + [t for k in range(1, 6) for t in ("sepxx", "d4", f"n{60 + k}", "d4", "v80")]
    assert midi_to_notes((tmp_path / "tiny_seed1337_0.mid").read_bytes(), SPEC)[1].meter == "3/4"
