import json
from collections import Counter

import numpy as np
import pytest

import config
from conftest import run
from encoding_decoding import Header, as_note
from measures import histogram, overlapping_area
from midi_io import read_music
from ngram import KneserNey, longest_runs


def test_evaluate_on_a_tiny_model_gives_finite_numbers(trained, data):
    r = run("evaluate.py", "--out_dir", trained, "--data_dir", data, "--num_samples", 4, "--max_new_tokens", 60,
            "--control_samples", 4, "--eval_bars", 2, "--eval_seconds", 3, "--style_samples", 6, "--main_style_pieces", 2,
            "--overwrite")  # (the other test's evaluation of the same run may be there)
    assert r.returncode == 0, r.stderr
    report = json.loads((trained / "eval.json").read_text())
    numbers = [v for d in report["likelihood"].values() for v in d.values()] + list(report["overlapping_area"].values())
    assert all(np.isfinite(numbers)) and report["grammar_valid_share"]["constrained"] == 1.0
    assert (trained / "eval.md").read_text().startswith("# Evaluation of tiny")
    assert (trained / "eval_histograms.png").read_bytes()[:4] == b"\x89PNG"
    control = report["control_adherence"]  # the mask guarantees these, whatever the model
    assert control["bars"]["share_ending_in_the_last_bar"] == 1.0 and control["seconds"]["share_within_one_bar"] == 1.0
    assert control["key_and_range"]["share_with_no_note_outside"] == 1.0
    assert set(report["per_style"]) == {"other"} and report["per_style"]["other"]["val_pieces"] == report["val_pieces"]
    assert report["main_styles"] == ["other"] and report["val_pieces"] >= 2  # --main_style_pieces 2
    # samples are drawn as sample.py draws them, and compared with pieces of their length
    assert report["sampling"] == {"temperature": config.temperature, "rhythm_temperature": config.rhythm_temperature,
                                  "top_k": config.top_k, "top_p": config.top_p}
    assert report["compared_tokens"] == 60
    for areas in (report["reference_overlapping_area"], report["per_style"]["other"]["reference_overlapping_area"]):
        assert set(areas) == set(report["overlapping_area"]) and all(0 <= v <= 1 for v in areas.values())
    memo = report["memorization"]  # beside the samples' runs, those of as many validation pieces, each 15 or more
    assert len(memo["reference_longest_token_run"]) == min(4, report["val_pieces"])
    assert min(memo["reference_longest_token_run"]) >= 15 and 0 <= memo["reference_share_at_or_above_threshold"] <= 1
    assert len(memo["reference_longest_note_run"]) == len(memo["reference_longest_token_run"])
    assert memo["share_within_a_third_of_reference"] == (memo["share_at_or_above_threshold"] <=
                                                         memo["reference_share_at_or_above_threshold"] / 3)
    # each main style against every training original of it (meta.json says which pieces are copies)
    assert report["originals_known"] and set(report["against_originals"]) == set(report["main_styles"])
    for d in report["against_originals"].values():
        assert d["samples"] == 6 and d["originals"] > 0 and d["val_pieces"] == report["val_pieces"]
        assert all(0 <= v <= 1 for v in [*d["overlapping_area"].values(), *d["reference_overlapping_area"].values()])
        assert 0 <= d["classifier_accuracy"] <= 1 and 0 <= d["classifier_accuracy_defaults"] <= 1
        assert "| classifier accuracy: alone / defaults |" in (trained / "eval.md").read_text()
    for d in report["listening"].values():  # the model alone and with the style's defaults, beside real pieces
        assert {"samples", "samples_defaults", "real"} <= set(d) and 0 <= d["samples_defaults"]["ends_on_tonic"] <= 1


def test_evaluate_survives_samples_shorter_than_the_memorization_window(trained, data):
    r = run("evaluate.py", "--out_dir", trained, "--data_dir", data, "--num_samples", 3, "--max_new_tokens", 8,
            "--control_samples", 2, "--overwrite")
    assert r.returncode == 0, r.stderr
    before = {name: (trained / name).read_bytes() for name in ("eval.json", "eval.md", "eval_histograms.png")}
    r = run("evaluate.py", "--out_dir", trained, "--data_dir", data, "--num_samples", 3)  # an earlier report is kept
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "give --overwrite to replace it" in r.stderr, r.stderr
    assert before == {name: (trained / name).read_bytes() for name in before}
    assert longest_runs([np.arange(14)], np.arange(100)) == [15]  # fewer tokens than k: no shared k-gram


def test_ngram_beats_unigram_on_a_structured_corpus():
    rng = np.random.default_rng(0)
    pieces = [[0] + [5 + (k % 4 if rng.random() > 0.1 else rng.integers(4)) for k in range(200)] for _ in range(20)]
    val = [[0] + [5 + (k % 4) for k in range(200)]]
    five, one = KneserNey(5, 10).fit(pieces), KneserNey(1, 10).fit(pieces)
    assert five.nats(val[0]) < 0.2 * one.nats(val[0])
    assert abs(sum(five.prob([0, 5, 6, 7], t) for t in range(10)) - 1) < 1e-9  # a distribution


class DictKneserNey:
    """The textbook form with Python dicts, to check the numpy one against."""

    def __init__(self, n, V, D=0.75):
        from collections import Counter
        self.n, self.V, self.D = n, V, D
        self.counts, self.ctx = [Counter() for _ in range(n + 1)], [{} for _ in range(n + 1)]

    def fit(self, pieces):
        for piece in pieces:
            seq = (-1,) * (self.n - 1) + tuple(piece)
            self.counts[self.n].update(seq[i:i + self.n] for i in range(len(seq) - self.n + 1))
        for k in range(self.n - 1, 0, -1):
            self.counts[k].update(g[1:] for g in self.counts[k + 1])
        for k in range(1, self.n + 1):
            for g, c in self.counts[k].items():
                t, d = self.ctx[k].get(g[:-1], (0, 0))
                self.ctx[k][g[:-1]] = (t + c, d + 1)
        return self

    def nats(self, piece):
        import math
        seq, total = [-1] * (self.n - 1) + list(piece), 0.0
        for i in range(self.n, len(seq)):
            p = 1 / self.V
            for k in range(1, self.n + 1):
                h = tuple(seq[i - k + 1:i]) if k > 1 else ()
                t, d = self.ctx[k].get(h, (0, 0))
                if t:
                    p = (max(self.counts[k].get(h + (seq[i],), 0) - self.D, 0) + self.D * d * p) / t
            total -= math.log(p)
        return total


def test_numpy_kneser_ney_equals_the_dict_one():
    rng = np.random.default_rng(3)
    pieces = [[0] + list(rng.integers(1, 12, rng.integers(5, 60))) for _ in range(30)]
    held_out = [[0] + list(rng.integers(1, 12, 40)) for _ in range(3)] + [pieces[0]]
    for n in (1, 3, 5):
        fast, slow = KneserNey(n, 12).fit(pieces), DictKneserNey(n, 12).fit(pieces)
        assert [fast.nats(p) for p in held_out] == pytest.approx([slow.nats(p) for p in held_out], rel=1e-9)


def test_overlapping_area_of_a_histogram_with_itself_is_one():
    notes = [(0, 60, 4, 80), (0, 64, 4, 80), (4, 67, 2, 80), (8, 72, 8, 80)]
    for name in ("pitch_class", "pitch", "duration", "inter_onset_interval", "notes_per_bar", "polyphony"):
        h = histogram([(notes, Header())], name, 4)
        assert abs(overlapping_area(h, h) - 1) < 1e-12
    assert overlapping_area(np.array([1.0, 0]), np.array([0, 1.0])) == 0


def test_notes_per_bar_are_counted_in_the_pieces_own_bars():
    """A waltz's bars hold 12 steps, a jig's 12, a march's 16, and a piece that changes meter has bars of both: a
    teacher counts the notes in each bar, not in every 16 steps (as this once did, whatever the meter)."""
    from measures import PIECE_STATS, STATS
    per_bar = lambda notes, header: list(STATS["notes_per_bar"][1](notes, header, 4))
    crotchets = [(4 * k, 60 + k % 5, 4, 80) for k in range(12)]  # 12 quarter notes
    assert per_bar(list(map(as_note, crotchets)), Header(meter="3/4")) == [3, 3, 3, 3]
    assert per_bar(list(map(as_note, crotchets)), Header(meter="4/4")) == [4, 4, 4]
    quavers = [(2 * k, 67, 2, 80) for k in range(12)]  # 12 eighth notes: two bars of 6/8
    assert per_bar(list(map(as_note, quavers)), Header(meter="6/8")) == [6, 6]
    changes = Header(meter="4/4", changes=((1, "3/4"),))  # one bar of 4/4, then 3/4
    assert per_bar(list(map(as_note, crotchets)), changes) == [4, 3, 3, 2]
    waltz = [(list(map(as_note, crotchets)), Header(meter="3/4"))]
    assert PIECE_STATS["piece_notes_per_bar"][1](*waltz[0], 4) == [3]
    assert histogram(waltz, "notes_per_bar", 4)[3] == 1
    from measures import closest_style, profile  # a piece is told by its own bars: this one is a waltz's
    styles = {"waltz": profile(waltz, 4), "march": profile([(crotchets, Header(meter="4/4"))], 4)}
    assert closest_style((crotchets, Header(meter="3/4")), ["march", "waltz"], styles, 4) == "waltz"
    assert closest_style((crotchets, Header(meter="4/4")), ["waltz", "march"], styles, 4) == "march"


def test_memorization_finds_a_planted_copy():
    rng = np.random.default_rng(1)
    train = rng.integers(0, 300, 5000)
    planted = np.concatenate([rng.integers(300, 400, 50), train[1000:1080], rng.integers(300, 400, 50)])
    fresh = rng.integers(300, 400, 200)
    assert longest_runs([planted, fresh], train) == [80, 15]


def test_decodes_cleanly_judges_the_raw_sample():
    from encoding_decoding import Spec
    from encoding_decoding import decodes_cleanly
    spec = Spec()
    head = "START style:bach tempo:121 meter:4/4 inst:0 bar:1 pos:0"
    assert decodes_cleanly(f"{head} n60 d4 v80 END n3".split(), spec)
    assert decodes_cleanly(f"{head} n60 d4 v80 n62".split(), spec)  # ran out of tokens mid-note
    assert not decodes_cleanly(f"{head} n60 v80 n62 d4 v80 END".split(), spec)
    assert not decodes_cleanly(f"{head} d4 END".split(), spec)
    assert not decodes_cleanly("START n60 d4 v80 END".split(), spec)  # no header


def test_validation_pieces_are_cut_like_samples(data):
    """A piece compared with samples of max_new tokens keeps at most its first max_new tokens after START, in whole
    groups, closed with END; a shorter piece stays whole."""
    from encoding_decoding import END, START, Tokenizer, first_tokens, validate
    from ngram import split_pieces
    tok = Tokenizer.load(data / "tokenizer.json")
    piece = split_pieces(np.fromfile(data / "val.bin", dtype=np.uint16).astype(np.int64), tok.stoi[START])[0]
    whole = tok.decode([int(i) for i in piece])
    for max_new in (10, 11, 12, 40, len(piece)):
        cut = first_tokens(piece, max_new, tok)
        assert cut[-1] == END and validate(cut, tok.spec) is None
        assert len(cut) - 1 <= max_new + 1 and cut[:-1] == whole[:len(cut) - 1]  # + END, which closes a cut
        assert len(cut) > max_new - 3  # only a partial group (n, d, v: under 3 tokens) is dropped
    assert first_tokens(piece, len(piece), tok) == whole


@pytest.mark.parametrize("keep", [0, 4])
def test_model_nats_scores_every_token_once(keep):
    """With uniform logits each token after START costs ln(vocab), whatever the windows and the header kept."""
    import torch
    from scoring import model_nats
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=16, kv_lora_rank=8,
                          qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=8, expert_hidden=16), verbose=False)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    pieces = [np.arange(n) % 20 for n in (5, 16, 17, 55)]
    assert np.allclose(model_nats(model.eval(), pieces, [keep] * len(pieces), "cpu", batch_size=3),
                       [(n - 1) * np.log(20) for n in (5, 16, 17, 55)])


def test_kernel_smoothing_lets_few_pieces_of_one_distribution_share_area():
    """Two sets of 30 pieces whose mean pitch is drawn from one distribution: 1-semitone bins share little area,
    the kernel density estimate much more, and two different distributions stay apart."""
    from measures import kernel_width
    rng = np.random.default_rng(0)
    pieces = lambda centre: [([(0, int(p), 4, 80)], Header()) for p in rng.normal(centre, 4, 30).round()]
    a, b, far = pieces(60), pieces(60), pieces(75)
    w = kernel_width(a, "piece_mean_pitch", 30, 4)
    assert 1 < w < 4 and kernel_width(a, "pitch", 30, 4) == 0
    mean_pitch = lambda ps, width=0.0: histogram(ps, "piece_mean_pitch", 4, width)
    assert overlapping_area(mean_pitch(a), mean_pitch(b)) < 0.7 < overlapping_area(mean_pitch(a, w), mean_pitch(b, w))
    assert overlapping_area(mean_pitch(a, w), mean_pitch(far, w)) < 0.3
    assert mean_pitch(a, w).sum() == pytest.approx(1)


def test_what_a_listener_hears_is_counted_as_a_teacher_counts():
    from encoding_decoding import Header
    from measures import beat_chords, ends_on_tonic, listen, parallels, repeated_bars
    # C major: I - V - I in four voices, a beat each, the bass alone on the fourth beat, and the same bar again.
    # I -> V: soprano and bass rise in octaves, tenor and bass in fifths; V -> I: soprano and bass fall in octaves
    chords = [(72, 64, 55, 48), (79, 71, 62, 55), (72, 67, 64, 48)]
    notes = [(4 * b + 16 * bar, p, 4, 80, v) for bar in range(2) for b, chord in enumerate(chords)
             for v, p in enumerate(chord)]
    notes += [(12 + 16 * bar, 60, 4, 80, 3) for bar in range(2)]  # the bass alone on the fourth beat
    assert beat_chords(notes, 4)[0] == [72, 64, 55, 48] and len(beat_chords(notes, 4)[3]) == 1
    assert parallels(beat_chords(notes, 4)[:3], 4) == (3, 2)
    assert ends_on_tonic(notes[:-1] + [(28, 60, 4, 80, 3), (28, 64, 4, 80, 0), (28, 67, 4, 80, 1)])
    assert not ends_on_tonic(notes[:8])  # ends on G B D: the dominant
    from measures import begins_on_tonic
    assert begins_on_tonic(notes) and not begins_on_tonic(notes[4:])  # from C E G C; from the dominant G B D G
    assert not begins_on_tonic([(0, 69, 8, 80, 0), (0, 60, 8, 80, 1)] + notes, (0, "major"))  # A over C: not a triad
    assert repeated_bars(notes, Header(), 4) == 0.5  # the second bar repeats the first
    r = listen([(notes, Header())], 4, 4)
    assert r["full_beats"] == 6 / 8 and r["repeated_bars"] == 0.5 and r["begins_on_tonic"] == 1
    # every note in C major; the soprano's G5 (79) above its range (to 78) on 2 of 6 four-note beats; the alto a
    # sixth under the soprano, the tenor a sixth under the alto: never an octave apart
    assert r["outside_key"] == 0 and r["minor"] == 0
    assert r["outside_range"] == 2 / 6 and r["wide_per_100_beats"] == 0
    # between the four-note beats, the soprano and bass leap by octaves (12: no more), the alto's G4 -> B4 ... never
    assert r["leaps_per_100_moves"] == 0
    assert r["frozen_parts"] == 0  # no part strikes its pitch again
    assert r["looped"] == 0  # two bars: no phrase of two bars to loop
    from measures import frozen_part
    line = lambda pitches: [(4 * b, p, 4, 80, 4) for b, p in enumerate(pitches)]  # a fifth part, a note a beat
    assert frozen_part(notes + line([55, 55, 55, 57, 57, 55, 55, 57, 57, 55]))  # G G G A A G G A A G: 5 of 9 repeat
    assert not frozen_part(notes + line([55, 55, 55, 57, 57, 55, 55, 57]))  # 4 of 7: too few notes to tell
    assert not frozen_part(notes + line([55, 55, 57, 57, 57, 55, 55, 57, 59, 55]))  # G G A A A G G A B G: 4 of 9
    assert r["ends_not_a_triad"] == 0  # it ends on the bass's C alone: fewer than three notes, not a dissonance
    from measures import comes_home
    assert r["comes_home"] == 0 and not comes_home(notes)  # from C major's triad to the bass's C alone: no triad
    home = notes[:-1] + [(28, 60, 4, 80, 3), (28, 63, 4, 80, 0), (28, 67, 4, 80, 1)]
    assert comes_home(home) and not comes_home(notes[4:-1] + home[-3:])  # C minor after C major; G B D ... C
    from measures import LAST_CHORDS, last_chord, triad_root
    assert (triad_root({0, 4, 7}), triad_root({9, 0, 4}), triad_root({7, 2}), triad_root({2, 5})) == (0, 9, 7, 2)
    assert triad_root({11, 2, 5}) is None and triad_root({0, 4, 8}) is None and triad_root({7, 11, 2, 5}) is None
    ends = {"tonic": (60, 64, 67), "dominant": (55, 59, 62, 67), "subdominant": (53, 60, 65, 69),
            "other triad": (50, 57, 62, 65), "fewer than 3 notes": (55, 62, 67), "not a triad": (55, 59, 62, 65)}
    assert set(ends) == set(LAST_CHORDS)
    for name, pitches in ends.items():  # two bars of I - V - I, then the last chord on the third bar's first beat
        end = [(32, p, 16, 80, v) for v, p in enumerate(sorted(pitches, reverse=True))]
        assert last_chord(notes[:-1] + end, (0, "major")) == name
        assert name != "tonic" or last_chord(notes[:-1] + end) == name  # by music21's key: C major
    from measures import CADENCES, cadence
    before = lambda *chords: [(4 * k, p, 4, 80, v) for k, c in enumerate(chords) for v, p in enumerate(c)]
    tonic = (72, 67, 64, 48)
    assert cadence(before((72, 64, 57, 53), (71, 67, 62, 55), tonic)) == "authentic"  # IV V I
    assert cadence(before((71, 65, 62, 50), tonic)) == "authentic"  # vii (B D F) I
    assert cadence(before((71, 65, 62, 55), tonic, tonic)) == "authentic"  # V7, then I struck twice
    assert cadence(before((72, 65, 60, 53), tonic)) == "plagal"  # IV I
    assert cadence(before((74, 69, 65, 50), tonic)) == "other"  # ii I
    assert cadence(before((72, 67, 62, 55), tonic)) == "other"  # V with the tonic over it, no leading tone
    assert cadence(before((71, 65, 62, 55), (71, 65, 62, 55))) is None  # it ends on V7: no triad
    assert {cadence(before(c, tonic)) for c in ((71, 67, 62, 55), (72, 65, 60, 53), (74, 69, 65, 50))} == set(CADENCES)
    assert listen([(before((71, 67, 62, 55), tonic), Header()), (before((74, 69, 65, 50), tonic), Header())], 4,
                  4)["authentic_cadence"] == 0.5
    from measures import close_has_third  # C E G, C E C (a minor third: A C A), not C G C G nor C C C C nor V7
    assert close_has_third(before(tonic)) and close_has_third(before((72, 64, 60, 48))) and close_has_third(
        before((69, 60, 57, 45)))
    assert not any(close_has_third(before(c)) for c in ((72, 67, 60, 48), (72, 60, 48, 36), (71, 65, 62, 55)))
    assert close_has_third(before((72, 67, 64, 48), (72, 67, 55, 48))) is False  # (the last onset's chord counts)
    heard = listen([(before(tonic), Header()), (before((72, 67, 60, 48)), Header())], 4, 4)
    assert heard["close_has_third"] == 0.5 and heard["opening_has_third"] == 0.5  # (one chord: first and last)
    from measures import close_struck_once  # V I, not V I I nor V I with a note of I struck again
    assert close_struck_once(before((71, 67, 62, 55), tonic)) and not close_struck_once(before((71, 67, 62, 55), tonic,
                                                                                            (72, 64, 60, 48)))
    held = [(0, p, 4, 80, v) for v, p in enumerate((71, 67, 62, 55))] + [(4, 72, 4, 80, 0)] + [
        (4, p, 8, 80, v) for v, p in enumerate((67, 64, 48), 1)]  # I held under the soprano, which moves to E in it
    assert close_struck_once(held) and not close_struck_once(held + [(8, 76, 4, 80, 0)])
    assert heard["close_struck_once"] == 1.0  # (one chord)
    from measures import opening_has_third
    assert opening_has_third(before((72, 64, 55, 48), (72, 67, 60, 48))) and not opening_has_third(
        before((72, 67, 60, 48), tonic))
    from measures import leaps
    assert leaps([[72, 64, 55, 48], [86, 64, 55, 48], [60], [72, 64, 55, 34]], 4) == (1, 4)  # 72 -> 86 (after [60]: none)
    # one piece's measures, a classifier's features: 6 of 8 onsets and beats with four notes sounding, 3 parallels in
    # 4 moves (two bars of I - V - I), half the bars repeated
    from measures import MEASURES, piece_measures
    m = dict(zip(MEASURES, piece_measures(notes, Header(), 4, 4)))
    assert m["onsets_with_all_voices"] == m["beats_with_all_voices"] == 6 / 8 and m["repeated_bars"] == 0.5
    assert m["parallels_per_100_moves"] == 100 * 6 / 4 and m["piece_pitch_range"] == 79 - 48 and m["mean_duration"] == 4
    assert (m["outside_key"], m["outside_range"], m["wide_per_100_beats"], m["looped"]) == (0, 2 / 6, 0, 0)
    # the soprano's C5 G5 C5 | C5 G5 C5 strikes C5 again across the bar line; the others never repeat a pitch: 1 of
    # 22 moves of a part (5 each in the upper three, 7 in the bass with its lone C4 on the fourth beat)
    from measures import repeated_notes
    assert repeated_notes(notes) == (1, 22) and m["repeated_notes"] == r["repeated_notes"] == 1 / 22
    # a chord in one part is its top note; parts are told apart by their numbers, not by pitch
    assert repeated_notes([(0, 60, 4, 80, 0), (0, 55, 4, 80, 0), (4, 60, 4, 80, 0), (0, 60, 4, 80, 1),
                           (4, 62, 4, 80, 1)]) == (1, 2)
    assert repeated_notes([(0, 60, 4, 80, 0), (0, 55, 4, 80, 0), (4, 60, 4, 80, 0), (0, 60, 4, 80, 1),
                           (4, 62, 4, 80, 1)], by_part=True) == {0: (1, 1), 1: (0, 1)}


def test_the_key_ranges_and_spacing_are_counted_as_a_teacher_counts():
    from measures import KEY_STEPS, out_of_range, outside_key, piece_key, wide_upper_voices
    a_minor = [(4 * k, p, 4, 80) for k, p in enumerate([57, 60, 64, 62, 60, 59, 56, 57, 45, 57])]  # G#: leading tone
    assert piece_key(a_minor) == (9, "minor") and outside_key(a_minor, (9, "minor")) == 0
    assert outside_key(a_minor, (0, "major")) == 1 / 10  # G# is no note of C major
    assert 8 in KEY_STEPS["minor"] and 11 in KEY_STEPS["minor"]  # the raised sixth and seventh belong to minor
    ranges = ((62, 78), (57, 71), (52, 67), (40, 60))
    assert out_of_range([[72, 64, 55, 48], [80, 64, 55, 48], [72, 64, 55], [72, 64, 50, 48]], ranges) == (2, 3)
    # soprano and alto 14 semitones apart, then alto and tenor 13; the bass may be far below
    assert wide_upper_voices([[76, 62, 55, 36], [72, 67, 54, 40], [72, 64, 60, 36]]) == (2, 3)


def test_a_part_going_back_to_its_pitch_before_last_is_counted():
    from encoding_decoding import Header
    from measures import listen, returning_notes
    line = lambda pitches, part=0: [(4 * b, p, 4, 80, part) for b, p in enumerate(pitches)]
    bass = line([48, 53, 48, 53, 48, 50, 48, 53], 1)  # C F C F C D C F: after the first two, all but D and F go back
    assert returning_notes(bass) == (4, 6)
    assert returning_notes(line([60, 62, 60, 60, 60, 64])) == (1, 4)  # one neighbour note; a repeat is no return
    assert returning_notes(line([60])) == (0, 0) and returning_notes([]) == (0, 0)
    soprano = line([72, 71, 72, 74, 76, 74, 72, 71, 72, 74])  # C B C D E D C B C D: C (twice) and D go back
    assert returning_notes(bass + soprano) == (4 + 3, 6 + 8)
    assert listen([(bass + soprano, Header())], 2, 4)["returning_notes"] == 7 / 14


def test_the_notes_off_a_piece_s_commonest_length_are_counted():
    from encoding_decoding import Header
    from measures import listen, other_lengths
    crotchets = [(4 * b, p, 4, 80, 0) for b, p in enumerate([72, 71, 72, 74, 76, 74, 72, 71])]
    quavers = [(28, 74, 2, 80, 0), (30, 76, 2, 80, 0)]  # the last crotchet as two quavers: 2 of 9 notes are not
    assert other_lengths(crotchets) == (0, 8) and other_lengths(crotchets[:7] + quavers) == (2, 9)
    assert other_lengths([]) == (0, 0)
    assert listen([(crotchets, Header()), (crotchets[:7] + quavers, Header())], 1, 4)["other_lengths"] == 2 / 17


def test_the_classifier_tells_apart_what_differs_and_not_what_does_not():
    from measures import logistic_accuracy
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (128, 6)), rng.normal(0, 1, (128, 6))
    assert 0.35 < logistic_accuracy(a, b) < 0.65  # two halves of the same music: chance
    assert logistic_accuracy(a, b + np.r_[1.5, 0, 0, 0, 0, 0]) > 0.7  # one measure apart
    b[:, 2] = a[:, 2] = 3.0  # a measure that never varies is no help and no harm
    assert logistic_accuracy(a, b + 10) == 1.0 and logistic_accuracy(a[:3], b) is None  # too few for five folds


def tune(phrases, pickup=True):
    """A one-part piece in 4/4 of 2-bar phrases, each a letter's own notes (a lower case letter: its upper case
    phrase with another last bar, a second ending), after a pickup bar whose last beat holds one note."""
    notes = [(12, 67, 4, 80, 0)] if pickup else []
    for i, letter in enumerate(phrases):
        start = 16 * (2 * i + pickup)
        base = 60 + ord(letter.upper()) % 12
        notes += [(start + 4 * b, base + b, 4, 80, 0) for b in range(4)]  # the first bar: the letter's own
        notes += [(start + 16, base + (7 if letter.isupper() else 5), 16, 80, 0)]  # the second (or a second ending)
    return notes


def test_a_pieces_form_is_read_from_its_repeated_phrases_as_the_form_rule_lays_them():
    from encoding_decoding import Header
    from measures import piece_form
    form = lambda phrases, pickup=True: piece_form(tune(phrases, pickup), Header(), 4)
    assert form("AABC") == form("AABC", pickup=False) == "AABC"
    assert form("AaBC") == "AABC"  # a second ending: the same phrase
    assert form("ABCD") == "" and form("AABB") == "AABB"
    assert form("ABAC") == "ABAC"  # the cut whose repeats cover the most bars (in halves, nothing repeats) ...
    assert form("AAAA") == "AAAA" and form("ABABCDCD") == "AABB" and form("ABAB") == "AA"  # ... the fewest phrases
    from measures import looped  # one phrase played four times or more, nothing else: a loop
    loops = lambda phrases: looped(tune(phrases), Header(), 4)
    assert loops("AAAA") and loops("AAAAAAAa") and not loops("AABB") and not loops("ABAB") and not loops("AAAB")


def test_keep_leaves_out_a_tune_that_loops_one_phrase_unless_real_ones_do():
    """A tune of one 2-bar phrase four times, ending on its tonic with nothing else amiss, is kept only where as
    many real tunes loop."""
    from encoding_decoding import Header
    from measures import kept_pieces
    # a 2-bar phrase from `start`: four crotchets, then a whole note (G, or the tonic: a second ending)
    phrase = lambda start, last, run=(60, 62, 64, 65): [(start + 4 * b, p, 4, 80, 0) for b, p in enumerate(run)] + [
        (start + 16, last, 16, 80, 0)]  # C D E F | G
    loop = phrase(0, 67) + phrase(32, 67) + phrase(64, 67) + phrase(96, 60)  # AAAA, the last bar the tonic
    b = (64, 65, 67, 69)  # E F G A | G
    aabb = phrase(0, 67) + phrase(32, 67) + phrase(64, 67, b) + phrase(96, 60, b)
    pieces, real = [(loop, Header()), (aabb, Header())], [(aabb, Header())]
    assert kept_pieces(pieces, real, 1, 4) == [1]
    assert kept_pieces(pieces, real + [(loop, Header())], 1, 4, percentile=100) == [0, 1]


def test_evaluate_prints_the_forms_of_real_pieces_and_tells_files_from_real_ones(tmp_path):
    from encoding_decoding import Header, Spec, notes_to_tokens, tokens_to_text
    for k, phrases in enumerate(["AABB", "AABB", "AaBB", "ABCD", "AABC"]):
        (tmp_path / f"real{k}.txt").write_text(tokens_to_text(notes_to_tokens(tune(phrases), Spec(),
                                                                              Header(style="fiddle"))))
    r = run("evaluate.py", "--forms", *sorted(tmp_path.glob("real*.txt")))
    assert r.returncode == 0, r.stderr
    assert "fiddle: 5 pieces, 3 forms" in r.stdout and "forms={'AABB': 60.0, '': 20.0, 'AABC': 20.0}" in r.stdout
    from measures import form_shares  # a form under `least` is left out, its share given to kept forms with repeats
    assert form_shares(Counter({"AABB": 3, "": 2}), least=0.3) == {"AABB": 60.0, "": 40.0}
    assert form_shares(Counter({"AABB": 3, "": 1, "AABC": 1}), least=0.3) == {"AABB": 80.0}  # with AABC's 20 %

    r = run("evaluate.py", "--listen", tmp_path / "real0.txt", tmp_path / "real3.txt", "--voices", 1,
            "--against", *sorted(tmp_path.glob("real*.txt")))
    assert r.returncode == 0, r.stderr
    assert "| files | 2 |" in r.stdout and "| real | 5 |" in r.stdout and "told apart from as many real" in r.stdout
    (tmp_path / "real0.mid").write_bytes(b"")  # as sample.py writes X.mid beside X.txt: the one piece, read once
    r2 = run("evaluate.py", "--listen", tmp_path / "real0.txt", tmp_path / "real3.txt", tmp_path / "gone.mid",
             "--voices", 1, "--against", tmp_path)  # a folder of them is walked; a missing file is named
    gone = f"skipped {tmp_path / 'gone.mid'}: no such file or folder\n"
    assert r2.returncode == 0 and r2.stdout.startswith(gone) and r2.stdout.removeprefix(gone) == r.stdout, r2.stdout
    (tmp_path / "empty").mkdir()
    r = run("evaluate.py", "--listen", tmp_path / "empty")
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "no MIDI file (.mid, .midi) or encoding" in r.stderr
    r = run("evaluate.py", "--against", tmp_path / "real0.txt")
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "give --listen FILES too" in r.stderr


def test_keep_copies_what_a_teacher_keeps_beside_the_real_pieces(tmp_path):
    """evaluate.py --keep: files ending on the tonic triad, each with at most the parallels, repeated notes (in all
    parts and in the part repeating most) and notes outside the key of 90 % of the real pieces, minor keys as common
    as among the real pieces; a folder that is there already is one line."""
    from encoding_decoding import Header, Spec, notes_to_tokens, tokens_to_text
    from measures import kept_pieces
    chord = lambda at, pitches, d=16: [(at, p, d, 80, v) for v, p in enumerate(pitches)]
    c_major = chord(0, (72, 67, 64, 48)) + chord(16, (74, 67, 65, 55)) + chord(32, (72, 67, 64, 48))
    a_minor = chord(0, (72, 69, 64, 45)) + chord(16, (71, 68, 64, 52)) + chord(32, (72, 69, 64, 45))
    fifths = chord(0, (74, 67, 62, 55)) + chord(16, (76, 69, 64, 57)) + chord(32, (72, 67, 64, 48))  # two parallels
    open_end = chord(0, (72, 67, 64, 48)) + chord(16, (74, 67, 65, 55))  # ends on the dominant
    # no parallels and a tonic ending, but every voice strikes its note again: 6 of 12 moves, each real piece 2 of 8
    still = chord(0, (72, 67, 64, 48), 8) + chord(8, (72, 67, 64, 48), 8) + chord(16, (74, 67, 65, 55)) + chord(
        32, (72, 67, 64, 48))
    # a C major cadence whose tenor and alto stray to F sharp and B flat on the way: 2 of 12 notes outside C major
    astray = chord(0, (72, 67, 64, 48)) + chord(16, (70, 66, 62, 50)) + chord(32, (72, 67, 64, 48))
    # ten chords that move and end on the tonic, but the alto strikes its G on every one: 9 of 36 repeats in all, as
    # the real ones (2 of 8), yet 9 of 9 in one part
    frozen = [n for i in range(9) for n in chord(16 * i, (74, 67, 65, 55) if i % 2 else (72, 67, 64, 48))] + chord(
        144, (72, 67, 64, 48))
    write = lambda name, notes: (tmp_path / name).write_text(tokens_to_text(notes_to_tokens(
        sorted(notes), Spec(), Header(style="bach", parts=(52, 52, 52, 52)))))
    for name, notes in [("real0.txt", c_major), ("real1.txt", a_minor), ("s_major0.txt", c_major),
                        ("s_major1.txt", c_major), ("s_major2.txt", c_major), ("s_minor.txt", a_minor),
                        ("s_fifths.txt", fifths), ("s_open.txt", open_end), ("s_still.txt", still),
                        ("s_astray.txt", astray), ("s_frozen.txt", frozen)]:
        write(name, notes)
    samples = sorted(tmp_path.glob("s_*.txt"))
    r = run("evaluate.py", "--listen", *samples, "--against", tmp_path / "real0.txt", tmp_path / "real1.txt",
            "--keep", tmp_path / "kept")
    assert r.returncode == 0, r.stderr
    kept = sorted(p.name for p in (tmp_path / "kept").iterdir())  # half minor, as the real ones: one major of three
    assert "s_minor.txt" in kept and len(kept) == 2 and kept[0].startswith("s_major"), kept
    assert "kept 2 of 9 files" in r.stdout and "| kept | 2 |" in r.stdout
    assert (tmp_path / "kept" / kept[0]).read_bytes() == (tmp_path / kept[0]).read_bytes()
    pieces = [read_music(p, Spec(), scores=False)[:2] for p in samples]
    real = [read_music(tmp_path / "real0.txt", Spec(), scores=False)[:2]]  # all major: the minor one left out
    assert [samples[i].name for i in kept_pieces(pieces, real, 4, 4)] == ["s_major0.txt", "s_major1.txt",
                                                                          "s_major2.txt"]
    # each piece against the real pieces' spread: with a real piece that stands as still, the 90th percentile of
    # their repeats (25 % and 50 %) is 47.5 %, still under it; the 100th is 50 %, and it is kept
    real.append(read_music(tmp_path / "s_still.txt", Spec(), scores=False)[:2])
    assert "s_still.txt" not in [samples[i].name for i in kept_pieces(pieces, real, 4, 4)]
    assert "s_still.txt" in [samples[i].name for i in kept_pieces(pieces, real, 4, 4, percentile=100)]
    # the same with the notes outside the key: real ones with none and 2 of 12 put the 90th percentile under 2 of 12
    real.append(read_music(tmp_path / "s_astray.txt", Spec(), scores=False)[:2])
    assert "s_astray.txt" not in [samples[i].name for i in kept_pieces(pieces, real, 4, 4)]
    assert "s_astray.txt" in [samples[i].name for i in kept_pieces(pieces, real, 4, 4, percentile=100)]
    # and the part that repeats most (of those with 8 notes or more): none among the real ones but the frozen alto
    real.append(read_music(tmp_path / "s_frozen.txt", Spec(), scores=False)[:2])
    assert "s_frozen.txt" not in [samples[i].name for i in kept_pieces(pieces, real, 4, 4)]
    assert "s_frozen.txt" in [samples[i].name for i in kept_pieces(pieces, real, 4, 4, percentile=100)]
    # and the notes going back to the pitch before their part's last: nine chords rocking between I and IV, every
    # voice a b a b ..., with no parallels, no repeated note and a tonic ending, kept only where a real piece rocks
    # as much
    rock = [n for i in range(9) for n in chord(16 * i, ((77, 69, 65, 53) if i % 2 else (79, 67, 64, 48)),
                                               32 if i == 8 else 16)]
    rocking = [(rock, Header(style="bach", parts=(52, 52, 52, 52)))]
    assert kept_pieces(rocking, real, 4, 4) == [] and kept_pieces(rocking, real + rocking, 4, 4, percentile=100) == [0]
    # and the rhythm: against a real piece whose first chord is struck twice at half the length (half its notes not
    # of its commonest length), the cadence in one length throughout is left out, unless a real piece is as plain
    plain = [(c_major, Header(style="bach", parts=(52, 52, 52, 52)))]
    varied = [read_music(tmp_path / "s_still.txt", Spec(), scores=False)[:2]]
    assert kept_pieces(plain, varied, 4, 4) == [] and kept_pieces(plain, varied + plain, 4, 4, percentile=100) == [0]
    r = run("evaluate.py", "--listen", *samples, "--against", tmp_path / "real0.txt", "--keep", tmp_path / "kept")
    assert r.returncode != 0 and "already there" in r.stderr and r.stderr.count("\n") == 1
    r = run("evaluate.py", "--listen", *samples, "--against", tmp_path / "real0.txt", "--keep",
            tmp_path / "real0.txt" / "kept")  # before the files are read
    assert r.returncode != 0 and "cannot be created" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = run("evaluate.py", "--listen", *samples, "--keep", tmp_path / "k2")
    assert r.returncode != 0 and "give --listen FILES --against REAL too" in r.stderr
    r = run("evaluate.py", "--listen", tmp_path / "s_open.txt", "--against", tmp_path / "real0.txt", "--keep",
            tmp_path / "none")  # nothing kept: an empty folder, and the table without a row for it
    assert r.returncode == 0 and "kept 0 of 1 files" in r.stdout and "| kept |" not in r.stdout, r.stderr
    assert list((tmp_path / "none").iterdir()) == []
    # with the voices' range bounded too: the cadence with its bass down at C2 (under the bass's usual 40 on 8 of 12
    # beats, spanning 38 semitones against 26), all else as the real one, is left out only then
    low = chord(0, (72, 67, 64, 36)) + chord(16, (74, 67, 65, 43)) + chord(32, (72, 67, 64, 36))
    write("s_low.txt", low)
    both = [(notes, Header(style="bach", parts=(52, 52, 52, 52))) for notes in (c_major, low)]
    assert kept_pieces(both, plain, 4, 4) == [0, 1] and kept_pieces(both, plain, 4, 4, ranges=True) == [0]
    assert kept_pieces(both, plain + both[1:], 4, 4, percentile=100, ranges=True) == [0, 1]
    # with the opening bounded: the same cadence set out from the subdominant (F A C, then I V I, still C major by
    # the key analysis) is left out only then, and only with more than one voice
    away = chord(0, (72, 69, 65, 53)) + [(at + 16, *rest) for at, *rest in c_major]
    write("s_away.txt", away)
    both = [(notes, Header(style="bach", parts=(52, 52, 52, 52))) for notes in (c_major, away)]
    assert kept_pieces(both, plain, 4, 4) == [0, 1] and kept_pieces(both, plain, 4, 4, opening=True) == [0]
    assert kept_pieces(both, plain, 1, 4, opening=True) == [0, 1]
    # each bound from the command line, and without --keep or with one voice, one line
    for flag, name, one_voice in (("--keep_range", "s_low.txt", "give --keep DEST and --voices 4 (not 1)"),
                                  ("--keep_opening", "s_away.txt", "more than one voice (--voices 1)")):
        r = run("evaluate.py", "--listen", tmp_path / "s_major0.txt", tmp_path / name, "--against",
                tmp_path / "real0.txt", "--keep", tmp_path / flag, flag, "true")
        assert r.returncode == 0 and "kept 1 of 2 files" in r.stdout, r.stderr
        assert [p.name for p in (tmp_path / flag).iterdir()] == ["s_major0.txt"]
        for bad, says in ((["--voices", "1", "--keep", tmp_path / "k3"], one_voice), ([], "give --keep DEST too")):
            r = run("evaluate.py", "--listen", tmp_path / name, "--against", tmp_path / "real0.txt", *bad, flag, "true")
            assert r.returncode != 0 and says in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_repeats_counts_the_bars_heard_before_and_writes_bars_again(trained, data, tmp_path):
    from scoring import repeat_bits
    from encoding_decoding import Header, Spec, header_end, notes_to_tokens
    from runs import load_run
    model, tok, _ = load_run(trained, "cpu")
    # twelve bars of four crotchets, each its own but the eighth, which is the third again
    tunes = [[60 + (k + i) % 12 for i in range(4)] for k in range(12)]
    tunes[7] = tunes[2]
    notes = [(16 * k + 4 * i, p, 4, 80, 0) for k, bar in enumerate(tunes) for i, p in enumerate(bar)]
    piece = notes_to_tokens(notes, Spec(), Header(parts=(0,)))
    out = repeat_bits(model, tok.itos, tok.encode(piece), header_end(piece), "cpu")
    assert out["repeated"][1] == 4 and out["others"][1] == 44  # the eighth bar's four notes, and the rest
    assert out["first written"][1] == out["written again"][1] == 16  # bars 2-5, then again as bars 6-9
    assert all(bits > 0 for bits, _ in out.values())
    short = notes[:9 * 4]  # nine bars: too few to write four again
    piece = notes_to_tokens(short, Spec(), Header(parts=(0,)))
    out = repeat_bits(model, tok.itos, tok.encode(piece), header_end(piece), "cpu")
    assert out["written again"] is None and out["first written"] is None and out["others"][1] == 32
    (tmp_path / "bad.txt").write_text("START nonsense")
    r = run("evaluate.py", "--out_dir", trained, "--repeats", *sorted((data.parent / "text").glob("*.txt"))[:4],
            tmp_path / "bad.txt")
    assert r.returncode == 0 and "| the others |" in r.stdout and f"skipped {tmp_path / 'bad.txt'}:" in r.stdout, \
        r.stderr


def test_styles_says_which_style_a_run_hears_in_each_piece(trained, data, tmp_path):
    """evaluate.py --styles: per style the pieces name, how many the run hears as each style (the likeliest under
    mask.style_logits, which weighs a piece given without --style) and the named style's margin over the likeliest
    other; with no piece, style_logits is the run's own first choice after START."""
    from collections import Counter
    import torch
    from encoding_decoding import START, Header
    from mask import style_logits
    from runs import load_run
    model, tok, _ = load_run(trained, "cpu")
    ids = [tok.stoi[f"style:{s}"] for s in tok.spec.styles]
    with torch.no_grad():
        first = model(torch.tensor([[tok.stoi[START]]]))[0][0, -1, ids].float()
    assert torch.allclose(style_logits(model, tok)[0], first)
    files = sorted((data.parent / "text").glob("*.txt"))[:4]
    pieces = [f.read_text().split() for f in files]
    heard = Counter(tok.spec.styles[int(style_logits(model, tok, p)[0].argmax())] for p in pieces)
    named = Counter(Header.of_tokens(p[:2]).style for p in pieces)
    (tmp_path / "bad.txt").write_text("START nonsense")
    r = run("evaluate.py", "--out_dir", trained, "--styles", *files, tmp_path / "bad.txt")
    assert r.returncode == 0 and f"skipped {tmp_path / 'bad.txt'}:" in r.stdout, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and " nats |" not in line]
    assert [row.split(" | ")[:2] for row in rows] == [[f"| {s}", str(n)] for s, n in sorted(named.items())]
    if len(named) == 1:  # (one style named: every piece's heard style counted in its row)
        assert rows[0].split(" | ")[2] == ", ".join(f"{s} {c}" for s, c in heard.most_common())


def test_cadence_scores_a_last_bar_in_each_view_and_says_so(trained, data, tmp_path):
    from scoring import cadence_bits
    from encoding_decoding import Header, Spec, header_end, notes_to_tokens
    from runs import load_run
    model, tok, _ = load_run(trained, "cpu")
    piece = (data.parent / "text" / "piece0.txt").read_text().split()  # longer than the tiny model's window (32)
    out = cadence_bits(model, tok.itos, tok.encode(piece), header_end(piece), "cpu")
    assert not out["fits"] and {"64 tokens", "a window", "whole", "others"} <= set(out)
    assert all(np.isfinite(v) and v > 0 for k, v in out.items() if k != "fits")
    short = notes_to_tokens([(0, 60, 4, 80, 0), (16, 62, 4, 80, 0)], Spec(), Header(parts=(0,)))  # two bars
    out = cadence_bits(model, tok.itos, tok.encode(short), header_end(short), "cpu")
    assert out["fits"] and out["whole"] == pytest.approx(out["a window"])  # a window holds it all: the same view
    (tmp_path / "bad.txt").write_text("START nonsense")
    r = run("evaluate.py", "--out_dir", trained, "--cadence", *sorted((data.parent / "text").glob("*.txt"))[:4],
            tmp_path / "bad.txt")
    assert r.returncode == 0 and "| all 4 |" in r.stdout and f"skipped {tmp_path / 'bad.txt'}:" in r.stdout, r.stderr
