import argparse
import json
import shutil

import pytest

from conftest import midi_file, off, on, scale, track, run as run_script
import configurator
import encode_all


def run(*args):
    return run_script("encode_all.py", *args)


BAD = {
    "empty.mid": (b"", "empty file"),
    "random.mid": (bytes(range(7, 250, 3)) * 5, "not a MIDI file"),
    "text.mid": (b"Dear reader,\nthis is a letter, not a song.\n", "not a MIDI file"),
    "header.mid": (b"MThd is how a MIDI file starts, but this one is a letter.\n", "bad header length"),
    "truncated.mid": (midi_file(scale(8))[:-9], "truncated"),
    "badchunk.mid": (midi_file(scale(8)).replace(b"MTrk\x00\x00", b"MTrk\x7f\x00", 1), "bad chunk length"),
    "type2.mid": (midi_file(scale(8), scale(8), fmt=2), "type-2"),
    "smpte.mid": (midi_file(scale(8), division=0xE728), "SMPTE"),
    "absurd_delta.mid": (midi_file(track(*[on(60 + i) + off(60 + i, delta=0x0FFFFFFF) for i in range(9)])),
                         "max_piece_steps"),
}
SKIPPED = {
    "low.mid": (midi_file(scale(10, 5)), "no notes; dropped: pitch_out_of_range 10"),
    "silent.mid": (midi_file(track()), "no notes"),
    "short.mid": (midi_file(scale(3)), "too few notes (3 < min_notes=8)"),
}


def make_tree(root):
    (root / "in" / "sub").mkdir(parents=True, exist_ok=True)
    for name, (data, _) in {**BAD, **SKIPPED}.items():
        (root / "in" / name).write_bytes(data)
    (root / "in" / "song.mid").write_bytes(midi_file(scale(12, 60)))
    (root / "in" / "sub" / "song.MIDI").write_bytes(midi_file(scale(12, 62)))
    (root / "in" / "sub" / "copy.mid").write_bytes(midi_file(scale(12, 60)))  # same music as song.mid
    for i in range(6):
        (root / "in" / "sub" / f"piece{i}.mid").write_bytes(midi_file(track(), scale(10 + i, 40 + i)))
    return root / "in"


def outputs(text_dir):
    return {p.relative_to(text_dir).as_posix(): p.read_text() for p in sorted(text_dir.rglob("*.txt"))}


def test_every_bad_file_is_reported_and_the_batch_goes_on(tmp_path):
    src = make_tree(tmp_path)
    r = run("--midi_dirs", src, "--text_dir", tmp_path / "text", "--num_processes", 2)
    assert r.returncode == 0, r.stderr
    report = {e["source"].split("/in/")[1]: e for e in json.loads((tmp_path / "text/encode_report.json").read_text())["files"]}
    for name, (_, reason) in BAD.items():
        assert report[name]["status"] == "failed" and reason in report[name]["reason"], (name, report[name])
    for name, (_, reason) in SKIPPED.items():
        assert report[name]["status"] == "skipped" and report[name]["reason"] == reason, (name, report[name])
    assert report["sub/copy.mid"]["status"] == "duplicate" and "in/song.txt" in report["sub/copy.mid"]["reason"]
    assert set(outputs(tmp_path / "text")) == {"in/song.txt", "in/sub/song.txt"} | {f"in/sub/piece{i}.txt" for i in range(6)}
    assert "8 pieces encoded, 3 skipped, 9 failed, 1 duplicates" in r.stdout


def test_resume_after_a_kill_gives_the_same_outputs(tmp_path):
    src = make_tree(tmp_path)
    assert run("--midi_dirs", src, "--text_dir", tmp_path / "full").returncode == 0
    # A killed run: half the journal, a line cut short, a temp file, and outputs of only some files.
    part = tmp_path / "part"
    lines = (tmp_path / "full/.encode_journal.jsonl").read_text().splitlines()
    kept = [json.loads(line) for line in lines[: len(lines) // 2]]
    (part / "in").mkdir(parents=True)
    (part / ".encode_journal.jsonl").write_text("\n".join(lines[: len(lines) // 2]) + '\n{"key": "in/sub/pie')
    for entry in kept:
        for e in entry["value"]:
            if e["status"] == "encoded" and (tmp_path / "full" / e["output"]).exists():
                (part / e["output"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(tmp_path / "full" / e["output"], part / e["output"])
    (part / "in" / ".song.txt.abc.tmp").write_text("START n6")
    r = run("--midi_dirs", src, "--text_dir", part)
    assert r.returncode == 0 and "resuming: " in r.stdout
    assert outputs(part) == outputs(tmp_path / "full")
    report = lambda d: json.loads((d / "encode_report.json").read_text())
    assert report(part) == report(tmp_path / "full")


def test_a_folder_of_the_first_edition_is_encoded_anew(tmp_path):
    """A rerun of encode_all.py into a folder that an earlier version filled (journal entries without this
    edition, first-edition text) encodes every file again, in the second edition."""
    src = make_tree(tmp_path)
    assert run("--midi_dirs", src, "--text_dir", tmp_path / "out").returncode == 0
    journal = tmp_path / "out/.encode_journal.jsonl"
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    for row in rows:
        for e in row["value"]:
            e.pop("edition", None)
            if e["status"] == "encoded" and (tmp_path / "out" / e["output"]).exists():
                (tmp_path / "out" / e["output"]).write_text("START style:in tempo:121 meter:4/4 n60 d4 v80 END\n")
    journal.write_text("".join(json.dumps(row) + "\n" for row in rows))
    r = run("--midi_dirs", src, "--text_dir", tmp_path / "out")
    assert r.returncode == 0  # (the skipped files are not tried again: they would be skipped as before)
    assert all(" inst:" in p.read_text() for p in (tmp_path / "out").rglob("*.txt"))


def test_shards_merge_by_copying(tmp_path):
    src = make_tree(tmp_path)
    for k in (1, 2, 3):
        assert run("--midi_dirs", src, "--text_dir", tmp_path / "sharded", "--shard", f"{k}/3").returncode == 0
    assert run("--midi_dirs", src, "--text_dir", tmp_path / "whole").returncode == 0
    # duplicates are found within a shard only; song.mid and sub/copy.mid fall in different shards here
    assert set(outputs(tmp_path / "sharded")) - set(outputs(tmp_path / "whole")) <= {"in/sub/copy.txt"}
    reports = sorted(p.name for p in (tmp_path / "sharded").glob("encode_report*.json"))
    assert reports == [f"encode_report.shard{k}of3.json" for k in (1, 2, 3)]


@pytest.mark.parametrize("args, message", [
    (["--midi_dirs", "no/such/folder"], "no/such/folder: no such folder"),
    (["--midi_dirs", "{empty}"], "no input files"),
    ([], "nothing to encode"),
    (["--corpus", "music21", "--composers", "mozart", "nobody"], "unknown composer(s) nobody"),
    (["--midi_dirs", "{empty}", "--shard", "3/2"], "--shard wants K/N"),
    (["--midi_dirs", "{empty}", "--max_dur", "1.5"], "argument --max_dur: wants a whole number like 128, got '1.5'"),
])
def test_clear_one_line_errors(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    r = run(*[a.replace("{empty}", str(tmp_path / "empty")) for a in args], "--text_dir", tmp_path / "t")
    assert r.returncode != 0 and message in r.stderr, r.stderr


def test_corpus_sources_pick_composers_and_skip_analyses():
    sources = encode_all.corpus_sources(["bach"])
    assert len(sources) > 400 and all(out.startswith("music21/bach/") for _, out, _ in sources)
    assert not any(src.endswith(".rntxt") for src, _, _ in sources) and {s for _, _, s in sources} == {"bach"}
    names = [out for _, out, _ in encode_all.distinct(sources)]
    assert len(set(names)) == len(names)  # bwv277.krn beside bwv277.mxl


def test_corpus_piece_encodes(tmp_path):
    opts = configurator.cli(argparse.ArgumentParser(), ["sample_freq", "pitch_range",
                                 "velocity_range", "max_dur", "default_velocity", "keep_drums", "min_notes",
                                 "max_piece_steps", "default_bpm"], [])
    opts.text_dir = tmp_path
    src = next(s for s in encode_all.corpus_sources(["bach"]) if s[1].endswith("bwv66.6"))
    [entry] = encode_all.encode_one(opts, src)
    assert entry["status"] == "encoded" and (tmp_path / "music21/bach/bwv66.6.txt").read_text().startswith("START style:bach tempo:100 meter:4/4 inst:52 inst:52 inst:52 inst:52 bar:")  # ♩ = 100 in its score
