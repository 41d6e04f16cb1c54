"""Nothing lost, no tracebacks: mistakes, kills and bad files, each as a user would meet them."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from conftest import ENV, ROOT, midi_file, off, on, run, scale, track, train_args, vlq
from encoding_decoding import Spec, Tokenizer

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0  # permissions do not stop root


@pytest.fixture(scope="module")
def bad(tmp_path_factory, trained):
    """Broken inputs, built small: a truncated checkpoint, a corrupt tokenizer and meta, a text posing as MIDI."""
    root = tmp_path_factory.mktemp("bad")
    (root / "a_file").write_text("I am a file, not a folder\n")
    run_dir = root / "truncated_run"
    shutil.copytree(trained, run_dir)
    data = (trained / "checkpoint.pt").read_bytes()
    for name in ("checkpoint.pt", "best.pt"):
        (run_dir / name).write_bytes(data[:len(data) // 3])
    tok_run = root / "corrupt_tokenizer_run"
    shutil.copytree(trained, tok_run)
    (tok_run / "tokenizer.json").write_text('{"version": 2, "vocab_si')
    (root / "not.mid").write_text("this is a letter, not a song\n")
    old_run = root / "first_edition_run"  # a run of the grammar's first edition: its tokenizer is version 2
    shutil.copytree(trained, old_run)
    (old_run / "tokenizer.json").write_text('{"version": 2, "vocab_size": 705, "spec": {}, "itos": [], "stoi": {}}')
    meta_dir = root / "corrupt_meta"
    meta_dir.mkdir()
    (meta_dir / "meta.json").write_text('{"version": 1, "vocab')
    metrics_run = root / "corrupt_metrics_run"
    shutil.copytree(trained, metrics_run)
    lines = (metrics_run / "metrics.jsonl").read_text().splitlines()
    (metrics_run / "metrics.jsonl").write_text("\n".join(lines[:3] + ["{garbage"] + lines[3:]) + "\n")
    return root


CASES = [  # script, arguments ({run}, {data}, {bad} filled in), what the one line must say
    ("train.py", ["--batch_size=0"], "argument --batch_size: wants a number >= 1, got '0'"),
    ("train.py", ["--eval_interval=0"], "argument --eval_interval: wants a number >= 1"),
    ("train.py", ["--learning_rate=nan"], "argument --learning_rate: wants a finite number"),
    ("train.py", ["--n_head=0"], "argument --n_head: wants a number >= 1"),
    ("train.py", ["--gradient_accumulation_steps=0"], "argument --gradient_accumulation_steps: wants a number >= 1"),
    ("train.py", ["--dtype=float8"], "argument --dtype: wants one of auto, float32, bfloat16, float16"),
    ("train.py", ["--top_k_experts=3"], "need 1 <= top_k_experts <= n_routed_experts"),
    ("train.py", ["--min_lr=1"], "min_lr=1.0 is above learning_rate=0.003"),
    ("train.py", ["--warmup_iters=100", "--lr_decay_iters=10"], "warmup_iters=100 ends after lr_decay_iters=10"),
    ("train.py", ["--mix_data_dir={data}"], "mix_data_dir={data} is read only with mix_share > 0"),
    ("train.py", ["--block_size=4"], "block_size=4 is too short for {data}: every window begins with its piece's "
                                     "header"),  # (it crashed in get_batch: a header longer than the window)
    ("train.py", ["--out_dir={bad}/a_file"], "is a file, not a folder"),
    ("train.py", ["--init_from={bad}/truncated_run"], "not a readable checkpoint"),
    ("train.py", ["--data_dir={bad}/corrupt_meta"], "meta.json is not a whole meta file"),
    ("sample.py", ["--num_samples", "0"], "argument --num_samples: wants a number >= 1"),
    ("sample.py", ["--temperature", "-1"], "argument --temperature: wants a number >= 0"),
    ("sample.py", ["--top_k", "-5"], "argument --top_k: wants a number >= 0"),
    ("sample.py", ["--top_p", "1.5"], "argument --top_p: wants a number > 0 and <= 1"),
    ("sample.py", ["--output_dir", "{bad}/a_file"], "--output_dir {bad}/a_file is a file, not a folder"),
    ("sample.py", ["--checkpoint", "nope.pt"], "no nope.pt here"),
    ("sample.py", ["--bars", "4", "--max_new_tokens", "50"], "--max_new_tokens caps a piece of no planned length"),
    ("sample.py", ["--prompt", "{bad}/missing.mid"], "cannot read it"),
    ("sample.py", ["--prompt", "{bad}/not.mid"], "not a MIDI file"),
    ("sample.py", ["--out_dir", "{bad}/truncated_run"], "not a readable checkpoint"),
    ("sample.py", ["--out_dir", "{bad}/corrupt_tokenizer_run"], "not a tokenizer JSON"),
    ("sample.py", ["--out_dir", "{bad}/first_edition_run"], "sample a run of it with the code of the git tag "
                                                             "first-edition"),
    ("encode_all.py", ["--midi_dirs", "{bad}", "--num_processes", "-1"], "argument --num_processes: wants a number >= 0"),
    ("augment_all.py", ["--input_dirs", "{bad}", "--num_processes", "-1"], "argument --num_processes"),
    ("prepare.py", ["--tokenizer_paths", "{bad}/corrupt_tokenizer_run/tokenizer.json"], "not a tokenizer JSON"),
    ("plot.py", ["--midi", "{bad}/not.mid"], "cannot be read as MIDI (not a MIDI file"),
    ("plot.py", ["--midi", "{bad}"], "{bad}: a folder, not a MIDI file (give its files: {bad}/*.mid)"),
    ("prepare.py", ["--augmented_percentage", "40"], "--augmented_percentage 40.0 is a share of augment_all.py's "
                                                     "variants: give their folder too"),
    ("prepare.py", ["--augmented_data_path", "{data}/../text"], "--augmented_data_path {data}/../text is "
                                                                "--main_data_path"),  # (its copies of the originals)
    ("plot.py", ["--out_dir", "{bad}/corrupt_metrics_run"], "metrics.jsonl: line 4 is not a record"),
    ("evaluate.py", ["--num_samples", "0"], "argument --num_samples: wants a number >= 1"),
    ("evaluate.py", ["--out_dir", "{bad}/truncated_run"], "not a readable checkpoint"),
]
if not torch.cuda.is_available():
    CASES.append(("train.py", ["--device=cuda"], "--device=cuda but this machine has no CUDA GPU"))
    CASES.append(("sample.py", ["--device", "cuda"], "--device=cuda but this machine has no CUDA GPU"))


@pytest.mark.parametrize("script, args, message", CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in CASES])
def test_a_bad_value_is_one_line_and_a_nonzero_exit(script, args, message, bad, trained, data, tmp_path):
    fill = lambda a: a.replace("{bad}", str(bad)).replace("{run}", str(trained)).replace("{data}", str(data))
    base = {"train.py": train_args(data, tmp_path / "r"), "sample.py": ["--out_dir", trained, "--output_dir", tmp_path],
            "evaluate.py": ["--out_dir", trained, "--data_dir", data],
            "prepare.py": ["--main_data_path", data.parent / "text", "--output_base_dir", tmp_path / "bin"]}
    r = run(script, *base.get(script, []), *map(fill, args))
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert fill(message) in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line(trained, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    r = run("sample.py", "--out_dir", trained, "--output_dir", locked)
    assert r.returncode != 0 and "is not writable" in r.stderr


# --- lost work


def evals(run_dir):
    return [json.loads(line)["iter"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "val_loss" in line]


def test_a_scratch_run_never_overwrites_a_trained_one(data, trained, tmp_path):
    run_dir = tmp_path / "keep"
    shutil.copytree(trained, run_dir)
    before = {f: (run_dir / f).read_bytes() for f in ("best.pt", "checkpoint.pt", "metrics.jsonl")}
    r = run("train.py", *train_args(data, run_dir, "--max_iters=4"))
    assert r.returncode != 0 and "holds a trained run: use --init_from=resume to continue, or --overwrite" in r.stderr
    assert {f: (run_dir / f).read_bytes() for f in before} == before
    assert torch.load(run_dir / "best.pt", weights_only=True)["iter_num"] == 30
    assert any((run_dir / "tensorboard").iterdir())
    r = run("train.py", *train_args(data, run_dir, "--max_iters=4", "--eval_interval=2", "--overwrite"))
    assert r.returncode == 0, r.stderr
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["iter_num"] == 4 and evals(run_dir) == [0, 2, 4]


def test_resume_keeps_the_runs_settings_and_refuses_another_shape(data, trained, tmp_path):
    run_dir = tmp_path / "r"
    shutil.copytree(trained, run_dir)
    r = run("train.py", f"--out_dir={run_dir}", "--init_from=resume", "--n_embd=64")
    assert r.returncode != 0 and "--n_embd=64 differs from the checkpoint's n_embd=32" in r.stderr
    # no shape, data or schedule given: all of it comes from the run; a new max_iters is taken
    (run_dir / "metrics.jsonl").write_text((run_dir / "metrics.jsonl").read_text() + '{"iter": 31, "lo')  # cut short
    (run_dir / ".checkpoint.pt.pid99999999.x2y_z.tmp").write_bytes(b"\0" * 1000)  # left by a killed save
    r = run("train.py", f"--out_dir={run_dir}", "--init_from=resume", "--max_iters=34", "--eval_interval=2")
    assert r.returncode == 0, r.stderr
    assert evals(run_dir) == [0, 10, 20, 30, 32, 34]
    assert not list(run_dir.glob(".*.tmp"))


def test_resume_refuses_data_split_otherwise(data, trained, tmp_path):
    other = tmp_path / "bin"
    shutil.copytree(data, other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "val_fraction": 0.5}))  # as prepare.py --val_fraction 0.5
    run_dir = tmp_path / "r"
    shutil.copytree(trained, run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    r = run("train.py", f"--out_dir={run_dir}", f"--data_dir={other}", "--init_from=resume", "--max_iters=32")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert f"--data_dir {other} was split with val_fraction 0.5 and this run's data with 0.2: resumed" in r.stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_resume_refuses_data_of_another_tokenizer_of_the_same_size(data, trained, tmp_path):
    other = tmp_path / "bin"
    shutil.copytree(data, other)
    styles = tuple(f"s{k}" for k in range(len(Spec().styles)))  # as many styles, other names
    (other / "tokenizer.json").write_text(json.dumps(Tokenizer(Spec(styles=styles)).to_dict(), indent=1, sort_keys=True) + "\n")
    import hashlib
    meta = json.loads((other / "meta.json").read_text())
    meta["tokenizer"]["sha256"] = hashlib.sha256((other / "tokenizer.json").read_bytes()).hexdigest()
    (other / "meta.json").write_text(json.dumps(meta))
    run_dir = tmp_path / "r"
    shutil.copytree(trained, run_dir)
    before = (run_dir / "tokenizer.json").read_bytes()
    r = run("train.py", f"--out_dir={run_dir}", f"--data_dir={other}", "--init_from=resume", "--max_iters=32")
    assert r.returncode != 0 and "was prepared with another tokenizer than the run's" in r.stderr
    assert (run_dir / "tokenizer.json").read_bytes() == before


def prepare(root, *extra):
    return run("prepare.py", "--main_data_path", root / "text", "--output_base_dir", root / "bin",
               "--tokenizer_paths", ROOT / "tokenizers/simple_tokenizer.json", "--val_fraction", 0.2, *extra)


def test_a_failed_prepare_leaves_the_old_dataset_whole(data, tmp_path):
    shutil.copytree(data.parent / "text", tmp_path / "text")
    assert prepare(tmp_path).returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "bin").iterdir()}
    # a tokenizer that does not fit the encodings (other pitch range): every piece is rejected
    small = Tokenizer(Spec(pitch_range=(70, 80)))
    (tmp_path / "tok.json").write_text(json.dumps(small.to_dict()))
    r = prepare(tmp_path, "--tokenizer_paths", tmp_path / "tok.json", "--overwrite")
    assert r.returncode != 0 and "left as it was" in r.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "bin").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder or file, no lock


def test_a_killed_prepare_is_undone_by_the_next_run(data, tmp_path):
    shutil.copytree(data.parent / "text", tmp_path / "text")
    assert prepare(tmp_path).returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "bin").iterdir()}
    # killed between setting the old folder aside and renaming the new one in: the old one is put back
    os.replace(tmp_path / "bin", tmp_path / ".bin.pid99999999.old")
    (tmp_path / ".bin.pid99999998.tmp").mkdir()
    (tmp_path / ".bin.pid99999998.tmp" / "train.bin").write_bytes(b"")
    (tmp_path / f".bin.pid{os.getpid()}.tmp").mkdir()  # a live run's: left alone
    from batch import clean_stale
    assert len(clean_stale(tmp_path)) == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "bin").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [f".bin.pid{os.getpid()}.tmp"]


def test_prepare_says_when_the_augmented_share_cannot_be_met(data, tmp_path):
    shutil.copytree(data.parent / "text", tmp_path / "text")
    (tmp_path / "aug").mkdir()
    r = prepare(tmp_path, "--augmented_data_path", tmp_path / "aug")
    assert r.returncode == 0 and "0% of the training tokens are augmented, not the 30 % asked for" in r.stdout


# --- bad files


def test_text_that_is_not_utf8_is_reported_per_file(data, tmp_path):
    shutil.copytree(data.parent / "text", tmp_path / "text")
    (tmp_path / "text" / "latin1.txt").write_bytes("START style:bach caf\xe9".encode("latin-1"))
    (tmp_path / "text" / "empty.txt").write_text("")
    r = run("first_silence_cleaner.py", "--dirs", tmp_path / "text")
    assert r.returncode == 0 and "latin1.txt: not UTF-8 text" in r.stdout
    r = run("simple_tokenizer.py", "--dirs", tmp_path / "text", "--output", tmp_path / "tok.json")
    assert r.returncode == 1 and "not UTF-8 text" in r.stderr and "Traceback" not in r.stderr
    r = run("augment_all.py", "--input_dirs", tmp_path / "text", "--output_dir", tmp_path / "aug")
    assert r.returncode == 0 and "empty.txt: ValueError: empty encoding" in r.stdout
    assert not list((tmp_path / "aug").glob("empty__*")) and not list((tmp_path / "aug").glob("latin1__*"))
    r = prepare(tmp_path, "--augmented_data_path", tmp_path / "aug")
    assert r.returncode == 0, r.stderr
    assert "latin1.txt: not UTF-8 text" in r.stdout or "latin1" in json.dumps(
        json.loads((tmp_path / "bin/meta.json").read_text())["val_pieces"])


def meta_event(kind, data, declared=None):
    return vlq(0) + bytes([0xFF, kind]) + vlq(len(data) if declared is None else declared) + data


def encode(tmp_path, *extra):
    return run("encode_all.py", "--text_dir", tmp_path / "text", *extra)


def test_repaired_midi_and_missing_files_are_reported(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    notes = [on(60 + k) + off(60 + k, delta=480) for k in range(10)]
    # a text meta event that claims 200 bytes near the end of its track
    (src / "long_meta.mid").write_bytes(midi_file(track(*notes[:9], meta_event(0x01, b"hi", declared=200))))
    # a note-on with no status byte before it (running status with nothing to run on)
    (src / "running.mid").write_bytes(midi_file(track(vlq(0) + bytes([60, 90]), *notes)))
    # a velocity of 200 and a controller value of 168 (data bytes are 7-bit): read as 127, with a warning
    (src / "loud.mid").write_bytes(midi_file(track(vlq(0) + bytes([0xB0, 7, 168]), vlq(0) + bytes([0x90, 60, 200]),
                                                   off(60, delta=480), *notes)))
    (src / "clean.mid").write_bytes(midi_file(scale(10, 50)))
    (src / "dangling.mid").symlink_to(tmp_path / "nowhere.mid")
    r = encode(tmp_path, "--midi_dirs", src)
    assert r.returncode == 0, r.stderr
    report = {os.path.basename(e["source"]): e for e in json.loads((tmp_path / "text/encode_report.json").read_text())["files"]}
    for name, why in [("long_meta.mid", "Unexpected EOF in Meta Event"), ("running.mid", "Unexpected running status")]:
        assert report[name]["status"] == "failed" and f"damaged track events: {why}" in report[name]["reason"]
    assert report["loud.mid"]["warnings"] == {"data_bytes_over_127_read_as_127": 1}
    assert report["loud.mid"]["status"] == "encoded" and "read with repairs" in report["loud.mid"]["reason"]
    assert report["clean.mid"]["warnings"] == {} and report["clean.mid"]["reason"] == ""
    assert report["dangling.mid"]["status"] == "failed" and "does not exist" in report["dangling.mid"]["reason"]


@pytest.mark.skipif(ROOT_USER, reason="root lists any folder")
def test_an_unlistable_folder_is_reported(tmp_path):
    src = tmp_path / "in"
    (src / "locked").mkdir(parents=True)
    (src / "song.mid").write_bytes(midi_file(scale(10)))
    os.chmod(src / "locked", 0)
    try:
        encode(tmp_path, "--midi_dirs", src)
    finally:
        os.chmod(src / "locked", 0o755)
    assert "cannot list this folder" in (tmp_path / "text/encode_report.json").read_text()


def test_a_second_encode_run_keeps_the_first_runs_report(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.mid").write_bytes(midi_file(scale(10, 50 if name == "a" else 60)))
        (tmp_path / name / "broken.mid").write_bytes(b"")
        assert encode(tmp_path, "--midi_dirs", tmp_path / name).returncode == 0
    files = json.loads((tmp_path / "text/encode_report.json").read_text())["files"]
    assert sorted(os.path.relpath(e["source"], tmp_path) for e in files) == ["a/a.mid", "a/broken.mid", "b/b.mid",
                                                                            "b/broken.mid"]


def test_an_encode_run_where_every_file_failed_exits_nonzero(tmp_path):
    (tmp_path / "in").mkdir()
    for k in range(3):
        (tmp_path / "in" / f"bad{k}.mid").write_bytes(b"not a song")
    r = encode(tmp_path, "--midi_dirs", tmp_path / "in")
    assert r.returncode != 0 and "no file could be encoded (3 failed, 0 skipped)" in r.stderr


def many_midi_files(root, n=400):
    root.mkdir()
    for k in range(n):
        (root / f"s{k}.mid").write_bytes(midi_file(scale(12 + k % 40, 40 + k % 30)))
    return root


def start_encode(tmp_path):
    p = subprocess.Popen([sys.executable, str(ROOT / "encode_all.py"), "--midi_dirs", many_midi_files(tmp_path / "in"),
                          "--text_dir", tmp_path / "text", "--num_processes", "2"], cwd=ROOT, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # a shell ignores Ctrl-C in what it starts in the background (`make test &`): undo that,
                         # so that SIGINT reaches the script as it does at a terminal
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline, journal = time.time() + 60, tmp_path / "text/.encode_journal.jsonl"
    while time.time() < deadline and not (journal.exists() and journal.stat().st_size):  # a piece done, to resume
        time.sleep(0.05)
    assert p.poll() is None, "the encode finished before it could be stopped"
    return p, psutil.Process(p.pid).children()


def test_ctrl_c_on_encode_says_a_rerun_resumes(tmp_path):
    p, workers = start_encode(tmp_path)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130 and "run the same command again to resume" in err and "Traceback" not in err, err
    assert not psutil.wait_procs(workers, timeout=10)[1]
    r = encode(tmp_path, "--midi_dirs", tmp_path / "in")
    assert r.returncode == 0 and "resuming:" in r.stdout


def test_a_script_run_in_the_tests_process_stops_at_its_timeout(data, tmp_path):
    """conftest's run keeps subprocess.run's `timeout` although the script runs in pytest's process: a script that
    runs past it raises TimeoutExpired (a hang fails its test, not the suite), and the process is as before."""
    threads, alarm = torch.get_num_threads(), signal.getsignal(signal.SIGALRM)
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run("train.py", *train_args(data, tmp_path / "long", "--max_iters=1000000", "--eval_interval=1000000"),
            timeout=2)
    assert time.monotonic() - t0 < 30 and torch.get_num_threads() == threads
    assert signal.getsignal(signal.SIGALRM) == alarm and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    r = run("train.py", *train_args(data, tmp_path / "short", "--max_iters=2", "--eval_interval=2"), timeout=120)
    assert r.returncode == 0, r.stderr  # (and the next script runs as before)
