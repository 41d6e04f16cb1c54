"""first_silence_cleaner, simple_tokenizer, augment_all and prepare on small hand-made encodings."""
import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import config
from conftest import ROOT, body, run
from encoding_decoding import (AHEAD, Header, Spec, Tokenizer, notes_to_tokens, shift, strip_leading_silence,
                               text_to_tokens, tokens_to_notes, tokens_to_text, validate)

SPEC = Spec()


def write_corpus(root, n=30):
    """n small pieces, each with its own melody so every piece (and every copy of it) is told apart."""
    for i in range(n):
        notes = [(2 * k + 16 * (i % 3), 40 + (i + 3 * k) % 40, 2, 60 + k) for k in range(10 + i)]
        path = root / ("a" if i % 2 else "b") / f"piece{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tokens_to_text(notes_to_tokens(notes, SPEC, Header(style=("bach", "folk")[i % 2]))))


def test_strip_leading_silence():
    head = "START style:bach tempo:121 meter:3/4 inst:0"
    assert strip_leading_silence(f"{head} bar:4 bar:3 pos:4 n60 d4 v80 bar:2 pos:2 n62 d4 bar:1 END".split()) == \
        f"{head} bar:3 pos:4 n60 d4 v80 bar:2 pos:2 n62 d4 bar:1 END".split()
    clean = f"{head} bar:1 pos:3 n60 d4 v80 END".split()
    assert strip_leading_silence(clean) == clean


def test_cleaner_script_is_idempotent_and_has_a_dry_run(tmp_path):
    write_corpus(tmp_path, 9)  # pieces 1, 2, 4, 5, 7, 8 start late
    assert run("first_silence_cleaner.py", "--dirs", tmp_path, "--dry-run").stdout.strip() == "6 of 9 files would change"
    assert run("first_silence_cleaner.py", "--dirs", tmp_path).stdout.strip() == "6 of 9 files changed"
    assert run("first_silence_cleaner.py", "--dirs", tmp_path).stdout.strip() == "0 of 9 files changed"
    assert all(p.read_text().split()[6] == "pos:0" for p in tmp_path.rglob("*.txt"))


def test_tokenizer_roundtrip_and_unknown_token():
    tok = Tokenizer(SPEC)
    tokens = "START inst:drums bar:1 pos:3 p1 n60 d4 v80 END".split()
    assert tok.decode(tok.encode(tokens)) == tokens
    with pytest.raises(ValueError, match="unknown token 'd999'"):
        tok.encode(["START", "d999"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_tokenizer_json_is_byte_identical_and_matches_the_committed_one(tmp_path):
    write_corpus(tmp_path / "text", 4)
    for name in ("one.json", "two.json"):
        r = run("simple_tokenizer.py", "--dirs", tmp_path / "text", "--output", tmp_path / name)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    tok = Tokenizer.load(tmp_path / "one.json")
    assert tok.spec.styles == ("bach", "folk")  # collected from the headers
    assert tok.itos == Spec(styles=("bach", "folk")).vocab() and tok.itos[-2:] == ["style:bach", "style:folk"]
    r = run("simple_tokenizer.py", "--output", tmp_path / "default.json")  # no encodings: the corpus styles
    assert (tmp_path / "default.json").read_bytes() == (ROOT / "tokenizers/simple_tokenizer.json").read_bytes()
    assert Tokenizer.load(tmp_path / "default.json").vocab_size == len(SPEC.vocab())


def test_tokenizer_script_lists_tokens_outside_the_vocabulary(tmp_path):
    (tmp_path / "x.txt").write_text("START style:bach tempo:121 meter:4/4 inst:0 bar:1 pos:0 n60 d400 v80 END\n")
    r = run("simple_tokenizer.py", "--dirs", tmp_path, "--output", tmp_path / "tok.json")
    assert r.returncode == 1 and f"d400\t{tmp_path / 'x.txt'}" in r.stderr
    assert not (tmp_path / "tok.json").exists()


def test_shift():
    head = "START style:bach tempo:121 meter:4/4 inst:0 inst:drums bar:1 pos:0"
    tokens = f"{head} n100 d4 v120 n21 d4 v5 p1 n36 d1 v90 END".split()
    assert shift(tokens, SPEC, pitch=2, velocity=10) == f"{head} n102 d4 v127 n23 d4 v15 p1 n36 d1 v100 END".split()
    assert shift(tokens, SPEC, velocity=-10) == f"{head} n100 d4 v110 n21 d4 v1 p1 n36 d1 v80 END".split()
    assert shift(tokens, SPEC, pitch=-1) is None  # n21 would fall off the piano
    assert shift(tokens, SPEC, pitch=9) is None
    assert shift(f"{head} n60 d4 v120 n55 d4 v125 END".split(), SPEC, velocity=10) == \
        f"{head} n60 d4 v127 n55 d4 END".split()  # clamped alike: the second velocity is the part's already
    drums = tokens_to_notes(shift(tokens, SPEC, pitch=2), SPEC)[0]
    assert [n.pitch for n in drums if n.part == 1] == [36]  # drums never move


def test_augment_names_skips_and_resumes(tmp_path):
    write_corpus(tmp_path / "text", 3)
    args = ["--input_dirs", tmp_path / "text", "--output_dir", tmp_path / "aug", "--aug_pitch_shifts=-1,0,2",
            "--aug_velocity_shifts=0,-10", "--aug_tempo_shifts=0,1"]
    r = run("augment_all.py", *args)
    assert r.returncode == 0, r.stderr
    names = sorted(p.relative_to(tmp_path / "aug").as_posix() for p in (tmp_path / "aug").rglob("*.txt"))
    assert names[:5] == ["a/piece1__p+0_v+0_t+1.txt", "a/piece1__p+0_v-10.txt", "a/piece1__p+0_v-10_t+1.txt",
                         "a/piece1__p+2_v+0.txt", "a/piece1__p+2_v+0_t+1.txt"]
    assert len(names) == 33 and "33 variants written" in r.stdout  # 3 pitches x 2 velocities x 2 tempos - 1, 3 pieces
    text = (tmp_path / "aug/a/piece1__p+2_v-10_t+1.txt").read_text()
    assert validate(text_to_tokens(text), SPEC) is None
    assert text.split()[2] == SPEC.tempo_token(120, shift=1) != SPEC.tempo_token(120)  # one bucket faster
    again = run("augment_all.py", *args)
    assert "0 variants written, 33 already there" in again.stdout


def test_augment_variants_writes_a_fixed_choice_per_piece(tmp_path):
    write_corpus(tmp_path / "text", 4)
    args = ["--input_dirs", tmp_path / "text", "--output_dir", tmp_path / "aug", "--aug_variants", 3]
    r = run("augment_all.py", *args)
    assert r.returncode == 0, r.stderr
    names = {}
    for p in (tmp_path / "aug").rglob("*.txt"):
        names.setdefault(p.name.split("__")[0], set()).add(p.name)
    assert len(names) == 4 and all(len(v) == 3 for v in names.values()) and "12 variants written" in r.stdout
    assert len({frozenset(n.split("__")[1] for n in v) for v in names.values()}) > 1  # not the same three for all
    shutil.rmtree(tmp_path / "aug")
    again = run("augment_all.py", *args)  # the choice is fixed by the names: the same files again
    assert {p.name for p in (tmp_path / "aug").rglob("*.txt")} == set().union(*names.values())
    assert "0 variants written, 12 already there" in run("augment_all.py", *args).stdout and again.returncode == 0


def prepare(tmp_path, *extra):
    return run("prepare.py", "--main_data_path", tmp_path / "text", "--augmented_data_path", tmp_path / "aug",
               "--output_base_dir", tmp_path / "bin", "--tokenizer_paths", ROOT / "tokenizers/simple_tokenizer.json",
               *extra)


def pieces_of(path):
    ids = np.fromfile(path, dtype=np.uint16).tolist()
    starts = [i for i, t in enumerate(ids) if t == 0] + [len(ids)]
    return [tuple(ids[a:b]) for a, b in zip(starts, starts[1:])]


def test_prepare_splits_by_piece_without_leakage_and_counts_match(tmp_path):
    write_corpus(tmp_path / "text", 40)
    assert run("augment_all.py", "--input_dirs", tmp_path / "text", "--output_dir", tmp_path / "aug").returncode == 0
    r = prepare(tmp_path, "--augmented_percentage", 30, "--val_fraction", 0.1, "--given_share", 0.25)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "bin/meta.json").read_text())
    tok = Tokenizer(SPEC)
    train, val = pieces_of(tmp_path / "bin/train.bin"), pieces_of(tmp_path / "bin/val.bin")
    short = [name for name in ("train", "val") if meta[name]["tokens"] <= config.block_size + 1]  # said at once
    assert short == ["val"] and [name for name in ("train", "val") if f"note: {name}.bin's" in r.stdout] == short, r.stdout
    assert meta["train"]["tokens"] == sum(map(len, train)) and meta["val"]["tokens"] == sum(map(len, val))
    assert meta["train"]["pieces"] == len(train) and meta["val"]["pieces"] == len(val) == len(meta["val_pieces"])
    assert all(validate(tok.decode(p), SPEC) is None for p in train + val)
    # every validation piece is an original, and no copy of it (shifted or not) reaches train.bin
    encode = lambda path: tuple(tok.encode(text_to_tokens(path.read_text())))
    val_family = {encode(p) for pid in meta["val_pieces"] for p in (tmp_path / "aug").glob(f"{pid}__*.txt")}
    val_family |= {encode(tmp_path / "text" / f"{pid}.txt") for pid in meta["val_pieces"]}
    assert set(val) <= val_family and not set(train) & val_family
    # a seeded share of the training pieces carries given material; without its blocks each is a piece as it was
    given = [p for p in train if tok.stoi[AHEAD] in p]
    assert len(given) == meta["train"]["given_pieces"] and 0.1 < len(given) / len(train) < 0.45
    sources = {encode(p) for folder in ("text", "aug") for p in (tmp_path / folder).rglob("*.txt")}
    assert all(tuple(tok.encode(body(tok.decode(p)))) in sources - val_family for p in train)
    # the augmented share is close to the asked 30 % of the training tokens, and meta.json says where the copies are
    assert 0.25 < meta["train"]["augmented_tokens"] / meta["train"]["tokens"] < 0.35
    copies = set(meta["train"]["augmented_at"])
    assert len(copies) == meta["train"]["augmented_pieces"] > 0
    originals = {encode(p) for p in (tmp_path / "text").rglob("*.txt")}
    assert all((tuple(tok.encode(body(tok.decode(p)))) in originals) == (i not in copies) for i, p in enumerate(train))
    # the same inputs give the same bytes
    first = (tmp_path / "bin/train.bin").read_bytes()
    assert prepare(tmp_path, "--augmented_percentage", 30, "--val_fraction", 0.1, "--given_share", 0.25).returncode == 0
    assert (tmp_path / "bin/train.bin").read_bytes() == first


def test_prepare_rejects_broken_pieces_and_bad_arguments(tmp_path):
    write_corpus(tmp_path / "text", 20)
    (tmp_path / "text/broken.txt").write_text("START style:bach tempo:121 meter:4/4 inst:0 bar:1 pos:0 n60 END\n")
    (tmp_path / "aug").mkdir()
    r = prepare(tmp_path, "--val_fraction", 0.3)
    assert r.returncode == 0 and f"rejected {tmp_path / 'text/broken.txt'}: token 8:" in r.stdout, r.stderr
    assert "argument --val_fraction: wants a number > 0 and < 1, got '0'" in prepare(tmp_path, "--val_fraction", 0).stderr
    r = prepare(tmp_path, "--tokenizer_paths", tmp_path / "missing.json")
    assert r.returncode != 0 and "missing.json: no such tokenizer file" in r.stderr
    assert "no such folder" in run("prepare.py", "--main_data_path", tmp_path / "nope").stderr
    assert "wants one of melody, parts, bars, got 'tune'" in prepare(tmp_path, "--given_kinds", "tune").stderr
    r = prepare(tmp_path, "--given_share", 0.5, "--given_kinds", "")
    assert r.returncode != 0 and "--given_kinds needs one of melody, parts, bars" in r.stderr


def test_an_encoding_of_the_first_edition_stops_every_step_with_one_line(tmp_path):
    """Encodings made before parts and bar lines: the cleaner, the tokenizer, augmentation and prepare each stop
    with one line that says to re-encode; a dataset prepared before stops train.py the same way."""
    old = tmp_path / "text" / "old.txt"
    old.parent.mkdir()
    old.write_text("START style:bach tempo:121 meter:4/4 n60 d4 v80 sepxx d4 n62 d4 v80 END\n")
    (tmp_path / "text" / "older.txt").write_text("START style:bach tempo:121 meter:4/4 n61 d4 v80 END\n")
    for script, *args in [("first_silence_cleaner.py", "--dirs", tmp_path / "text"),
                          ("simple_tokenizer.py", "--dirs", tmp_path / "text", "--output", tmp_path / "t.json"),
                          ("augment_all.py", "--input_dirs", tmp_path / "text", "--output_dir", tmp_path / "aug"),
                          ("prepare.py", "--main_data_path", tmp_path / "text", "--output_base_dir", tmp_path / "bin",
                           "--tokenizer_paths", ROOT / "tokenizers/simple_tokenizer.json")]:
        r = run(script, *args)
        assert r.returncode != 0 and "first edition" in r.stderr and "re-encode" in r.stderr, (script, r.stderr)
        assert "Traceback" not in r.stderr and (script == "augment_all.py" or len(r.stderr.strip().splitlines()) == 1)
    assert old.read_text().startswith("START style:bach tempo:121 meter:4/4 n60")  # left as it was


def test_a_dataset_of_the_first_edition_stops_training_with_one_line(tmp_path):
    write_corpus(tmp_path / "text", 12)
    (tmp_path / "aug").mkdir()
    assert prepare(tmp_path, "--val_fraction", 0.3).returncode == 0
    meta = json.loads((tmp_path / "bin/meta.json").read_text())
    (tmp_path / "bin/meta.json").write_text(json.dumps({**meta, "version": 1}))
    r = run("train.py", f"--data_dir={tmp_path / 'bin'}", f"--out_dir={tmp_path / 'run'}", "--max_iters=1")
    assert r.returncode != 0 and "re-encode" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 64), st.integers(40, 90), st.integers(1, 8), st.integers(1, 127),
                          st.integers(0, 2)), max_size=30),
       st.integers(-5, 6), st.sampled_from([-10, 0, 10]), st.sampled_from([-1, 0, 1]))
def test_shift_on_tokens_is_the_shift_of_the_notes(notes, pitch, velocity, tempo):
    """The one-pass shift gives the encoding of the shifted notes: drums unmoved, velocities clamped."""
    from encoding_decoding import DRUMS, canonical
    from midi_io import tidy_parts
    from collections import Counter
    notes, parts = tidy_parts(canonical(notes, SPEC), (0, DRUMS, 40), SPEC, Counter())
    header = Header(parts=parts)
    moved = [n._replace(pitch=n.pitch + (pitch if parts[n.part] != DRUMS else 0),
                        vel=min(max(n.vel + velocity, 1), 127)) for n in notes]
    want = notes_to_tokens(moved, SPEC, Header(parts=parts, bpm=SPEC.bucket_bpm(header.bpm, tempo)))
    assert shift(notes_to_tokens(notes, SPEC, header), SPEC, pitch, velocity, tempo) == want
