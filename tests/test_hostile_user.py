"""The second round of a hostile but fair user: exports, loops, concurrent runs, full disks, crafted files. Each
case fails on the code before it was fixed."""
import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ENV, ROOT, make_bin, midi_file, off, on, run, run_apart, scale, track, train_args, vlq
from encoding_decoding import Spec, Tokenizer
from midi_io import midi_to_notes


def one_line(r, message):
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    dest = tmp_path_factory.mktemp("exported") / "shared"
    r = run("train.py", f"--out_dir={trained}", f"--export={dest}")
    assert r.returncode == 0, r.stderr
    return dest


# --- exports


def test_an_export_touches_nothing_it_did_not_write(trained, tmp_path):
    dest = tmp_path / "mine"
    (dest / ".git" / "objects").mkdir(parents=True)
    (dest / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (dest / ".gitattributes").write_text("*.pt filter=lfs\n")
    (dest / "MODEL.md").write_text("# my model\n")
    theirs = files_of(dest)
    for extra in ([], ["--overwrite"]):  # the second export replaces the first's files and nothing else
        r = run("train.py", f"--out_dir={trained}", f"--export={dest}", *extra)
        assert r.returncode == 0, r.stderr
        after = files_of(dest)
        assert {k: after[k] for k in theirs} == theirs
        assert set(after) - set(theirs) == {"model.pt", "config.json", "tokenizer.json", "metrics.jsonl"}
    r = run("sample.py", "--out_dir", dest, "--output_dir", tmp_path / "out", "--num_samples", 1,
            "--max_new_tokens", 16)
    assert r.returncode == 0, r.stderr


def test_an_export_refuses_a_training_run_folder(trained, tmp_path):
    other = tmp_path / "other_run"
    shutil.copytree(trained, other)
    before = files_of(other)
    r = run("train.py", f"--out_dir={trained}", f"--export={other}", "--overwrite")
    one_line(r, "holds a training run (best.pt, checkpoint.pt): export into another folder")
    assert files_of(other) == before


KILL_AT_SECOND_RENAME = (  # train.py, killed with -9 as it makes its second os.replace
    "import os, sys, signal\n"
    "import train\n"
    "real, calls = os.replace, []\n"
    "def replace(a, b):\n"
    "    calls.append(b)\n"
    "    if len(calls) == 2:\n"
    "        os.kill(os.getpid(), signal.SIGKILL)\n"
    "    real(a, b)\n"
    "os.replace = replace\n"
    "train.main(sys.argv[1:])\n")


def test_an_export_killed_between_its_renames_leaves_the_folder_in_place(trained, exported, tmp_path):
    dest = tmp_path / "shared"
    shutil.copytree(exported, dest)
    (dest / "MODEL.md").write_text("# notes\n")
    r = subprocess.run([sys.executable, "-c", KILL_AT_SECOND_RENAME, f"--out_dir={trained}", f"--export={dest}",
                        "--overwrite"], capture_output=True, text=True, cwd=ROOT, env=ENV)
    assert r.returncode == -signal.SIGKILL
    assert (dest / "model.pt").is_file() and (dest / "MODEL.md").read_text() == "# notes\n"
    assert not list(tmp_path.glob(".shared.pid*"))  # not set aside, hidden beside it
    r = run("sample.py", "--out_dir", dest, "--output_dir", tmp_path / "out", "--num_samples", 1,
            "--max_new_tokens", 16)
    assert r.returncode == 0, r.stderr
    r = run("train.py", f"--out_dir={trained}", f"--export={dest}", "--overwrite")  # the next export tidies up
    assert r.returncode == 0, r.stderr
    assert not [p.name for p in dest.iterdir() if p.name.endswith(".tmp")]


# --- loops


def test_a_link_back_up_is_walked_once(tmp_path):
    root = tmp_path / "corpus"
    make_bin(root, n=12, tokenizer=None)
    text = root / "text"
    (text / "loop").symlink_to("..")
    r = run("prepare.py", "--main_data_path", text, "--output_base_dir", tmp_path / "bin", "--val_fraction", 0.25,
            "--tokenizer_paths", ROOT / "tokenizers/simple_tokenizer.json")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "bin/meta.json").read_text())
    assert meta["train"]["pieces"] + meta["val"]["pieces"] == 12  # each piece once, on one side only
    assert all(not p.startswith("loop") for p in meta["val_pieces"])
    assert "a link back up to" in r.stderr and "(a loop)" in r.stderr


def test_two_links_back_up_do_not_hang_any_script(tmp_path):
    src = tmp_path / "midi"
    src.mkdir()
    for k in range(2):
        (src / f"s{k}.mid").write_bytes(midi_file(scale(12, 50 + k)))
    (src / "up").symlink_to("..")
    (src / "up_again").symlink_to("..")
    r = run("encode_all.py", "--midi_dirs", src, "--style", "bach", "--text_dir", tmp_path / "text", timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "text/encode_report.json").read_text())
    assert report["summary"]["encoded"] == 2 and "(a loop)" in json.dumps(report["files"])
    for name in ("up", "up_again"):
        (tmp_path / "text" / name).symlink_to("..")
    r = run("first_silence_cleaner.py", "--dirs", tmp_path / "text", timeout=60)
    assert r.returncode == 0 and "0 of 2 files" in r.stdout, r.stdout + r.stderr
    (tmp_path / "text/more").mkdir()
    shutil.copy(tmp_path / "text/midi/s0.txt", tmp_path / "text/more/s2.txt")
    r = run("prepare.py", "--main_data_path", tmp_path / "text", "--output_base_dir", tmp_path / "bin",
            "--tokenizer_paths", ROOT / "tokenizers/simple_tokenizer.json", timeout=60)
    assert r.returncode == 0, r.stderr


# --- one process per folder


def test_a_run_folder_is_held_by_one_training_at_a_time(data, tmp_path):
    run_dir = tmp_path / "r"
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"),
                              *map(str, train_args(data, run_dir, "--max_iters=100000", "--eval_interval=5"))],
                             cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (run_dir / "checkpoint.pt").exists():
            time.sleep(0.1)
        assert first.poll() is None, first.stderr.read()
        before = (run_dir / "metrics.jsonl").read_text()
        for extra in (["--init_from=resume"], ["--overwrite"]):
            r = run("train.py", *train_args(data, run_dir, "--max_iters=10", *extra))
            one_line(r, f"{run_dir} is in use by another training run (PID {first.pid})")
        assert (run_dir / "metrics.jsonl").read_text().startswith(before)
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=60)
    r = run("train.py", *train_args(data, run_dir, "--init_from=resume", f"--max_iters={evals_done(run_dir) + 2}"))
    assert r.returncode == 0, r.stderr  # the lock went with its holder


def test_a_batch_that_cannot_fit_is_refused_before_any_step(data, tmp_path):
    run_dir = tmp_path / "r"
    one_line(run("train.py", *train_args(data, run_dir, "--batch_size=100000000", "--max_iters=10"), timeout=120),
             "batch_size=100000000 windows of block_size=32 tokens need at least")
    assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "metrics.jsonl").exists()


def evals_done(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["iter_num"]


def test_a_dataset_folder_is_held_by_one_prepare_at_a_time(data, tmp_path):
    out = tmp_path / "bin"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, batch; batch.lock(sys.argv[1], 'prepare.py'); "
                               "print('held', flush=True); time.sleep(120)", str(out)],
                              cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = run("prepare.py", "--main_data_path", data.parent / "text", "--output_base_dir", out,
                "--tokenizer_paths", ROOT / "tokenizers/simple_tokenizer.json")
        one_line(r, f"{out} is in use by another prepare.py (PID {holder.pid})")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_prepare_never_replaces_a_folder_with_what_it_did_not_write(data, tmp_path):
    text = tmp_path / "text"
    shutil.copytree(data.parent / "text", text)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "letter.txt").write_text("mine")
    before = files_of(tmp_path)
    for out, message in [(text, f"--output_base_dir {text} is the input folder {text}: the dataset would replace it"),
                         (tmp_path, f"--output_base_dir {tmp_path} holds the input folder {text}"),
                         (tmp_path / "docs", "holds files prepare.py did not write (letter.txt)")]:
        one_line(run("prepare.py", "--main_data_path", text, "--output_base_dir", out,
                     "--tokenizer_paths", ROOT / "tokenizers/simple_tokenizer.json"), message)
        assert files_of(tmp_path) == before
    for _ in range(2):  # a dataset's own folder is replaced by the next one, as a rerun does
        assert run("prepare.py", "--main_data_path", text, "--output_base_dir", tmp_path / "bin",
                   "--tokenizer_paths", ROOT / "tokenizers/simple_tokenizer.json").returncode == 0


def test_prepare_replaces_a_dataset_of_other_settings_only_with_overwrite(data, tmp_path):
    """A rerun with the dataset's own folders and settings replaces it (new encodings are read in); another
    split, tokenizer or input folder is one line, the dataset kept, until --overwrite."""
    text, out, other = tmp_path / "text", tmp_path / "bin", tmp_path / "other.json"
    shutil.copytree(data.parent / "text", text)
    (tmp_path / "aug").mkdir()
    other.write_text(json.dumps(json.loads((data / "tokenizer.json").read_text()), indent=3))  # other bytes
    common = ["--main_data_path", text, "--output_base_dir", out, "--tokenizer_paths", data / "tokenizer.json"]
    assert run("prepare.py", *common).returncode == 0
    before = files_of(out)
    for extra, message in [(["--val_fraction", 0.3], "(val_fraction 0.05 there, 0.3 now)"),
                           (["--augmented_data_path", tmp_path / "aug"], "(inputs ../text there, ../text, ../aug now)"),
                           (["--tokenizer_paths", other], "(another tokenizer)")]:
        one_line(run("prepare.py", *common, *extra), f"{out} holds a dataset prepared with other settings " + message)
        assert files_of(out) == before
    r = run("prepare.py", *common, "--val_fraction", 0.3, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "meta.json").read_text())["val_fraction"] == 0.3
    shutil.copy(text / "piece0.txt", text / "piece_new.txt")
    r = run("prepare.py", *common, "--val_fraction", 0.3)  # the same settings, one more encoding: a rerun
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train"]["pieces"] + meta["val"]["pieces"] == 25
    for name in ("text", "bin"):  # the tree moved whole: the same folders, a rerun
        shutil.move(tmp_path / name, tmp_path / "moved" / name)
    r = run("prepare.py", "--main_data_path", tmp_path / "moved/text", "--output_base_dir", tmp_path / "moved/bin",
            "--tokenizer_paths", data / "tokenizer.json", "--val_fraction", 0.3)
    assert r.returncode == 0, r.stderr


# --- the vocabulary and the files of a run


def same_size_other_tokenizer(data, tmp_path, spec):
    """A copy of the dataset whose tokenizer has as many tokens as the run's, other ones."""
    other = tmp_path / "bin"
    shutil.copytree(data, other)
    (other / "tokenizer.json").write_text(json.dumps(Tokenizer(spec).to_dict(), indent=1, sort_keys=True) + "\n")
    meta = json.loads((other / "meta.json").read_text())
    meta["tokenizer"]["sha256"] = hashlib.sha256((other / "tokenizer.json").read_bytes()).hexdigest()
    (other / "meta.json").write_text(json.dumps(meta))
    return other


def test_fine_tuning_refuses_a_vocabulary_of_the_same_size_with_other_tokens(data, trained, tmp_path):
    jazz = tuple(sorted(["jazz"] + list(Spec().styles[1:])))  # bach gone, jazz in: as many styles
    other = same_size_other_tokenizer(data, tmp_path, Spec(styles=jazz))
    r = run("train.py", *train_args(other, tmp_path / "ft", f"--init_from={trained}", "--max_iters=2"))
    one_line(r, "vocab mismatch: token id")
    assert "simple_tokenizer.py --base" in r.stderr and not (tmp_path / "ft" / "checkpoint.pt").exists()
    shifted = same_size_other_tokenizer(data, tmp_path / "s", Spec(pitch_range=(22, 109)))  # same size, same styles
    r = run("train.py", *train_args(shifted, tmp_path / "ft2", f"--init_from={trained}", "--max_iters=2"))
    one_line(r, "was built with other settings than")


def flip(path, start, length=4096):
    data = bytearray(path.read_bytes())
    data[start:start + length] = bytes(b ^ 0xFF for b in data[start:start + length])
    path.write_bytes(bytes(data))


def test_damaged_weights_and_a_swapped_tokenizer_are_named(exported, tmp_path):
    dest = tmp_path / "shared"
    shutil.copytree(exported, dest)
    weights = torch.load(dest / "model.pt", weights_only=True)["model"]["tok_emb.weight"]
    raw = weights.contiguous().view(torch.uint8).numpy().tobytes()
    at = (dest / "model.pt").read_bytes().find(raw[:256])
    assert at > 0 and len(raw) >= 4096
    flip(dest / "model.pt", at)
    for script, args in (("sample.py", ["--out_dir", dest, "--output_dir", tmp_path]),
                         ("train.py", [f"--init_from={dest}", f"--out_dir={tmp_path / 'ft'}"])):
        r = run(script, *args)
        one_line(r, "model.pt: its weights do not match the checksum recorded when it was saved")
    shutil.copy(exported / "model.pt", dest / "model.pt")
    (dest / "tokenizer.json").write_text(json.dumps(Tokenizer(Spec(pitch_range=(22, 109))).to_dict()))
    r = run("sample.py", "--out_dir", dest, "--output_dir", tmp_path)
    one_line(r, "tokenizer.json is not the tokenizer")


def test_absurd_model_sizes_in_a_checkpoint_are_refused_before_allocation(trained, tmp_path):
    for n_embd, message in ((2**40, "n_embd=1099511627776: wants a number >= 8 and <= 65536"),
                            (32768, "its weights do not fit its model_args (blocks.0.")):
        ckpt = torch.load(trained / "best.pt", weights_only=True)
        ckpt["model_args"]["n_embd"] = n_embd
        ckpt.pop("sha256")
        folder = tmp_path / str(n_embd)
        folder.mkdir()
        shutil.copy(trained / "tokenizer.json", folder)
        torch.save(ckpt, folder / "best.pt")
        one_line(run("sample.py", "--out_dir", folder, "--output_dir", tmp_path), message)


def test_a_pickled_checkpoint_is_refused_without_advice_to_load_it_anyway(trained, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(trained, folder)
    ckpt = torch.load(trained / "best.pt", weights_only=True)
    ckpt["config"] = argparse.Namespace(lr=1)  # an object: a pickle payload
    torch.save(ckpt, folder / "best.pt")
    r = run("sample.py", "--out_dir", folder, "--output_dir", tmp_path)
    one_line(r, "holds pickled Python objects")
    assert "weights_only" not in r.stderr and "\x1b" not in r.stderr


@pytest.mark.parametrize("spec, field", [({"tempo_range": [0, 300]}, "tempo_range=(0, 300)"),
                                         ({"sample_freq": 0}, "sample_freq=0"),
                                         ({"tempo_range": [300, 300]}, "tempo_range=(300, 300): wants LOW < HIGH"),
                                         ({"tempo_range": [100, 100.0001], "tempo_buckets": 1000},
                                          "tempo_buckets=1000 over tempo_range=(100, 100.0001): wants buckets that "
                                          "stand for distinct whole BPMs (this range holds 1)")])
def test_a_tokenizer_with_a_bad_spec_is_one_line(trained, data, tmp_path, spec, field):
    tok = Tokenizer(Spec()).to_dict()
    tok["spec"].update(spec)
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    one_line(run("sample.py", "--out_dir", folder, "--output_dir", tmp_path), field)
    one_line(run("prepare.py", "--main_data_path", data.parent / "text", "--output_base_dir", tmp_path / "bin",
                 "--tokenizer_paths", folder / "tokenizer.json"), field)


# --- numbers out of range, checked before any work


@pytest.mark.parametrize("args, message", [
    (["--bpm", "0.001"], "argument --bpm: wants a number >= 4 and <= 1000, got '0.001'"),
    (["--bpm", "1e9"], "argument --bpm: wants a number >= 4 and <= 1000"),
    (["--tempo", "1e9"], "argument --tempo: wants a number >= 4 and <= 1000"),
    (["--seconds", "1e9"], "argument --seconds: wants a number > 0 and <= 3600"),
    (["--bars", "1000000000"], "argument --bars: wants a number >= 1 and <= 1000"),
    (["--max_new_tokens", "1000000000"], "argument --max_new_tokens: wants a number >= 1 and <= 1000000"),
])
def test_a_number_out_of_range_is_one_line(trained, tmp_path, args, message):
    one_line(run("sample.py", "--out_dir", trained, "--output_dir", tmp_path, *args, timeout=120), message)


SCRIPTS = ("encode_all", "first_silence_cleaner", "simple_tokenizer", "augment_all", "prepare", "train", "sample",
           "plot", "evaluate")


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_flag_no_script_knows_is_one_line(script, capsys):
    with pytest.raises(SystemExit) as stop:
        __import__(script).main(["--bogus=1"])
    lines = capsys.readouterr().err.strip().splitlines()  # --bogus, or a required argument missing, in one line
    assert stop.value.code == 2 and len(lines) == 1 and ("--bogus" in lines[0] or "required" in lines[0]), lines


@pytest.mark.parametrize("script, args, unknown", [
    ("plot", "--out_d x", "--out_d x"), ("sample", "--out_d x", "--out_d x"), ("evaluate", "--out_d x", "--out_d x"),
    ("first_silence_cleaner", "--dirs x --dry", "--dry")])
def test_no_script_takes_an_abbreviated_flag(script, args, unknown, capsys):
    with pytest.raises(SystemExit) as stop:
        __import__(script).main(args.split())
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and lines == [f"error: unrecognized arguments: {unknown} (see --help)"], lines


def test_evaluate_checks_its_key_before_the_work(trained, data):
    one_line(run("evaluate.py", "--out_dir", trained, "--data_dir", data, "--eval_key", "X minor", timeout=120),
             "--eval_key: 'X' is not a pitch class")


def test_a_mistake_in_config_py_is_one_line_before_the_work(trained, data, tmp_path, monkeypatch):
    """config.py is edited by hand: a value out of its bounds, or a row of STYLE_DEFAULTS that sets what no style
    can (a misspelt name, or with_scale, which went on 2026-12-06), was used as it stood, or silently ignored."""
    import config
    from configurator import KINDS, LIMITS, config_problem
    from controls import style_defaults_problem
    # a value of another kind than config.py's own (False written "false", a list for a tuple), as config.py is read
    assert config_problem() is None  # (a new value of config.py that is not a whole number: its kind in KINDS)
    assert all(k in KINDS or k in LIMITS for k, v in vars(config).items() if k.islower() and not k.startswith("_"))
    for name, value, message in (("choir", "false", "choir = 'false' in config.py wants True or False"),
                                 ("voice_leading_rules", ["parallels"], "['parallels'] in config.py wants a tuple"),
                                 ("n_layer", "3", "n_layer = '3' in config.py wants a whole number"),
                                 ("usual_ranges", ([62, 78],), "wants a tuple of (LOW, HIGH) pairs"),
                                 ("temperature", 1, None),  # (an int for a number)
                                 ("my_own_setting", "x", None)):  # (a user's own name: not config's to judge)
        with monkeypatch.context() as m:
            m.setattr(config, name, value, raising=False)
            assert message in config_problem() if message else config_problem() is None, name
    r = subprocess.run([sys.executable, "-c", "import config; config.voice_leading_rules = ['parallels']; import sample"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    one_line(r, "voice_leading_rules = ['parallels'] in config.py wants a tuple")  # (not Controls' dataclass error)
    assert style_defaults_problem(config.STYLE_DEFAULTS) is None
    for row, message in ((dict(with_scale=dict(voice_leading_rules=("parallels",))), "['with_scale'] is not a setting"),
                         (dict(temprature=0.8), "['temprature'] is not a setting per style"),
                         (dict(voice_leading_rules="parallels"), "['voice_leading_rules'] = 'parallels' wants a tuple"),
                         (dict(voice_leading_rules=("parallel",)), "wants one of rests, parallels, crossing"),
                         (dict(with_given=dict(top_p=0)), "['with_given']['top_p'] = 0 wants a number > 0 and <= 1"),
                         (dict(forms={"AB": "3"}), "['forms'] wants a dict of forms"),
                         (dict(keys=("G major",)), "['keys'] wants a dict of keys"),
                         (dict(keys={"H major": 1}), "['keys']: 'H' is not a pitch class")):
        assert message in style_defaults_problem({"bach": row}), row
    assert style_defaults_problem({"bach": dict(temperature=1, forms={"AB": 3, "": 1.5})}) is None  # 1 for 1.0
    monkeypatch.setitem(config.STYLE_DEFAULTS, "bach", {**config.STYLE_DEFAULTS["bach"], "temprature": 0.8})
    for script, args in (("sample.py", ["--out_dir", trained, "--output_dir", tmp_path / "out"]),
                         ("evaluate.py", ["--out_dir", trained, "--data_dir", data])):
        one_line(run(script, *args, timeout=120), "config.STYLE_DEFAULTS['bach']['temprature'] is not a setting")
    assert not (tmp_path / "out").exists()
    monkeypatch.setitem(config.STYLE_DEFAULTS, "bach", {k: v for k, v in config.STYLE_DEFAULTS["bach"].items()
                                                        if k != "temprature"})
    monkeypatch.setattr(config, "top_p", 1.5)
    one_line(run("sample.py", "--out_dir", trained, "--output_dir", tmp_path / "out", timeout=120),
             "top_p = 1.5 in config.py wants a number > 0 and <= 1")
    assert run("sample.py", "--out_dir", trained, "--output_dir", tmp_path / "out", "--top_p", 0.9, "--num_samples", 1,
               "--max_new_tokens", 8, timeout=120).returncode == 0  # the command line's value stands in for it


# --- plots


def test_plot_says_what_it_cannot_draw_and_draws_the_rest(trained, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    (folder / "metrics.jsonl").write_text("")
    one_line(run("plot.py", "--out_dir", folder), "nothing to plot")
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    rows[1].pop("lm_loss", None)  # a row of another version
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run("plot.py", "--out_dir", folder)
    assert r.returncode == 0 and (folder / "loss.png").is_file(), r.stderr
    (tmp_path / "bad.mid").write_text("not a song")
    (tmp_path / "good.mid").write_bytes(midi_file(scale(12)))
    r = run("plot.py", "--midi", tmp_path / "bad.mid", tmp_path / "good.mid", tmp_path / "missing.mid")
    assert r.returncode != 0 and "Traceback" not in r.stderr and (tmp_path / "good.png").is_file()
    assert "bad.mid: cannot be read as MIDI" in r.stderr and "missing.mid: no such file" in r.stderr


# --- prompts


def meter_event(numerator, log2_denominator):
    return vlq(0) + bytes([0xFF, 0x58, 4, numerator, log2_denominator, 24, 8])


def tempo_event(bpm):
    return vlq(0) + bytes([0xFF, 0x51, 3]) + round(60_000_000 / bpm).to_bytes(3, "big")


def test_a_prompt_in_seven_eight_keeps_its_meter_and_tempo(trained, tmp_path):
    notes = [on(60 + k % 5) + off(60 + k % 5, delta=240) for k in range(14)]  # two bars of 7/8 eighths
    (tmp_path / "p.mid").write_bytes(midi_file(track(tempo_event(300), meter_event(7, 3), *notes)))
    r = run("sample.py", "--out_dir", trained, "--output_dir", tmp_path / "out", "--prompt", tmp_path / "p.mid",
            "--prompt_bars", 1, "--bars", 3, "--num_samples", 2)
    assert r.returncode == 0, r.stderr
    assert "the MIDI keeps 300 BPM" in r.stdout
    for k in range(2):
        assert (tmp_path / f"out/tiny_seed1337_{k}.txt").read_text().split()[3] == "meter:7/8"
        notes, header, _ = midi_to_notes((tmp_path / f"out/tiny_seed1337_{k}.mid").read_bytes(), Spec())
        assert header.meter == "7/8" and round(header.bpm) == 300
        assert 2 * 14 < max(n.end for n in notes) <= 3 * 14  # three bars of 7/8, in sixteenths


def test_a_folder_given_as_a_piece_is_one_line(tmp_path):
    (tmp_path / "tune.mid").write_bytes(midi_file(track(on(60), off(60, delta=480))))  # a folder with a piece in it
    for given in (tmp_path, tmp_path.parent):
        one_line(run("sample.py", "--melody", given, "--output_dir", tmp_path / "o"),
                 f"--melody {given} is a folder: give one file")


def test_what_reading_a_given_piece_changed_is_said(tmp_path):
    (tmp_path / "low.mid").write_bytes(midi_file(track(on(0), off(0, delta=480), on(127), off(127, delta=480))))
    r = run("sample.py", "--prompt", tmp_path / "low.mid", "--output_dir", tmp_path / "o")
    one_line(r, f"error: --prompt {tmp_path / 'low.mid'}: no notes in it once read (2 notes outside the pitch range "
                f"21-108 dropped)")  # (it said "no notes in it" of a file with two)
    parts = [track(bytes([0, 0xC0 | k % 9, 8 * k % 128]), on(40 + k, ch=k % 9), off(40 + k, ch=k % 9, delta=1920))
             for k in range(20)]  # 20 parts of 16 instrument families: more than a piece holds
    (tmp_path / "many.mid").write_bytes(midi_file(*parts))
    r = run("sample.py", "--melody", tmp_path / "many.mid", "--style", "bach", "--num_samples", 1,
            "--output_dir", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert (f"note: --melody {tmp_path / 'many.mid'} is read with 4 parts merged into others of their instrument "
            f"family (a piece has at most 16)") in r.stdout
    assert "the melody given, 1 notes" in r.stdout  # its first part, one note (and 16 parts were read)


def test_sample_finds_the_shipped_model_from_any_folder(tmp_path):
    r = run_apart("sample.py", "--num_samples", 1, "--max_new_tokens", 8, "--output_dir", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "out").glob("corpus_seed1337_0.mid"))


def test_a_long_prompt_is_read_in_one_forward_pass(trained):
    from mask import GrammarMask
    from runs import load_run
    model, tok, _ = load_run(trained, "cpu")
    prompt = tok.encode(["bar:more", "pos:0", "n60", "d2", "v80"] + ["bar:more", "pos:0", "n60", "d2"] * 499)
    forced = [-1] * 5 + prompt  # START, the header and one part, then 2,001 given tokens: 60 windows of the model
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[1]))
    idx = torch.full((2, 1), tok.stoi["START"])
    out = model.generate(idx, len(forced) - 1 + 10, allowed_fn=GrammarMask(tok, "cpu"), forced=forced,
                         generator=torch.Generator().manual_seed(0), keep=5)
    assert out[:, 5:5 + len(prompt)].tolist() == [prompt, prompt]
    # START; the header's tokens, each read as the next is drawn, but the last (the mask's only choice): it is read
    # with the prompt, in one pass of the window slid to its last 16 tokens; ten new tokens, the last never read
    assert calls == [1] * 4 + [model.cfg.block_size // 2] + [1] * 9, calls


# --- what a killed or failed batch leaves


def test_a_rerun_of_sample_removes_what_a_killed_one_left(trained, tmp_path):
    (tmp_path / ".tiny_seed1337_0.mid.pid99999999.k1x_.tmp").write_bytes(b"half a song")
    r = run("sample.py", "--out_dir", trained, "--output_dir", tmp_path, "--num_samples", 1, "--max_new_tokens", 8)
    assert r.returncode == 0, r.stderr
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_sample_another_command_wrote_is_kept_beside_the_new_one(trained, tmp_path):
    args = ["--out_dir", trained, "--output_dir", tmp_path, "--num_samples", 1]
    assert run("sample.py", *args, "--max_new_tokens", 8).returncode == 0
    first = files_of(tmp_path)
    assert run("sample.py", *args, "--max_new_tokens", 8).returncode == 0 and files_of(tmp_path) == first  # the same
    r = run("sample.py", *args, "--max_new_tokens", 30)  # the same seed and name, another sample
    assert r.returncode == 0 and "tiny_seed1337_0-2.mid:" in r.stdout, r.stderr
    now = files_of(tmp_path)
    assert {k: now[k] for k in first} == first and set(now) == set(first) | {"tiny_seed1337_0-2.mid",
                                                                              "tiny_seed1337_0-2.txt"}
    assert run("sample.py", *args, "--max_new_tokens", 30, "--overwrite").returncode == 0  # replaced on purpose
    assert files_of(tmp_path)["tiny_seed1337_0.txt"] == now["tiny_seed1337_0-2.txt"]
    r = run("sample.py", *args, "--max_new_tokens", 30, "--bpm", 200)  # the same tokens, heard at another tempo
    assert r.returncode == 0 and "tiny_seed1337_0-3.mid:" in r.stdout, r.stderr  # (it replaced the one at _0)


def test_two_samplers_at_once_never_take_one_name(tmp_path, monkeypatch):
    """Another sample.py writes NAME between this one's look and its write: this one goes on to NAME-2."""
    import batch
    real = batch.atomic_write

    def theirs_first(path, data, exclusive=False):
        if exclusive and path.name == "run_seed1_0.txt" and not path.exists():
            real(path, "theirs")  # the other command, this instant
        return real(path, data, exclusive)
    monkeypatch.setattr(batch, "atomic_write", theirs_first)
    assert batch.claim_stem(tmp_path, "run_seed1_0", "mine") == tmp_path / "run_seed1_0-2"
    assert files_of(tmp_path) == {"run_seed1_0.txt": b"theirs", "run_seed1_0-2.txt": b"mine"}
    assert batch.claim_stem(tmp_path, "run_seed1_0", "mine") == tmp_path / "run_seed1_0-2"  # its own, again
    # the melody a harmonization keeps: another tune under the same name goes beside it, the same one stays
    for tune, stem in [(b"MThd tune", "run_seed1_melody"), (b"MThd edited", "run_seed1_melody-2"),
                       (b"MThd tune", "run_seed1_melody")]:
        assert batch.claim_stem(tmp_path, "run_seed1_melody", tune, ext=".mid", beside=()) == tmp_path / stem
    assert files_of(tmp_path)["run_seed1_melody.mid"] == b"MThd tune"


def test_the_tokenizer_never_replaces_a_runs_or_a_datasets_own_copy(trained, data, tmp_path):
    for folder, whose in [(trained, "a run folder's"), (data, "a dataset's")]:
        before = (folder / "tokenizer.json").read_bytes()
        one_line(run("simple_tokenizer.py", "--output", folder / "tokenizer.json"),
                 f"--output {folder / 'tokenizer.json'} is {whose}")
        assert (folder / "tokenizer.json").read_bytes() == before
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    one_line(run("simple_tokenizer.py", "--output", tmp_path / "notes.json"), "is there and is not a tokenizer JSON")
    assert (tmp_path / "notes.json").read_text() == '{"mine": 1}'


def test_augment_never_writes_its_variants_among_the_originals(tmp_path):
    make_bin(tmp_path, n=3, tokenizer=None)  # encodings in tmp_path/text
    before = files_of(tmp_path)
    for out, where in [(tmp_path / "text", "is the input folder"), (tmp_path / "text/aug", "is inside the input folder")]:
        one_line(run("augment_all.py", "--input_dirs", tmp_path / "text", "--output_dir", out),
                 f"--output_dir {out} {where} {tmp_path / 'text'}: the variants would mix with the originals")
        assert files_of(tmp_path) == before


def test_augment_where_every_piece_fails_exits_nonzero(tmp_path):
    (tmp_path / "text").mkdir()
    for k in range(2):
        (tmp_path / "text" / f"empty{k}.txt").write_text("")
    r = run("augment_all.py", "--input_dirs", tmp_path / "text", "--output_dir", tmp_path / "aug")
    assert r.returncode != 0 and "every one of the 2 pieces failed" in r.stderr


def test_an_empty_encoding_in_the_training_split_is_reported(tmp_path):
    import dataset
    make_bin(tmp_path, n=8, tokenizer=None)
    name = next(f"empty{k}" for k in range(100) if not dataset.in_val(f"empty{k}", 1337, 0.2))
    (tmp_path / "text" / f"{name}.txt").write_text("")
    r = run("prepare.py", "--main_data_path", tmp_path / "text", "--output_base_dir", tmp_path / "bin",
            "--val_fraction", 0.2, "--tokenizer_paths", ROOT / "tokenizers/simple_tokenizer.json")
    assert r.returncode == 0, r.stderr
    rejected = json.loads((tmp_path / "bin/meta.json").read_text())["rejected"]
    assert [(os.path.basename(x["file"]), x["reason"]) for x in rejected] == [(f"{name}.txt", "empty file (no tokens)")]
    assert f"rejected {tmp_path / 'text' / name}.txt: empty file" in r.stdout


# --- a full disk: a tmpfs of its own, in a private mount namespace (no root needed, nothing to clean up)


def can_mount():
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_mount = pytest.mark.skipif(not can_mount(), reason="no private mount namespace here (unshare -rm)")
FILL = ('mount -t tmpfs -o size=4m tmpfs "$DISK" || exit 99; [ -z "$BEFORE" ] || cp -a "$BEFORE/." "$DISK/"; '
        'dd if=/dev/zero of="$DISK/.filler" bs=4096 2>/dev/null; truncate -s "-$ROOM" "$DISK/.filler"; '
        '"$@"; rc=$?; rm "$DISK/.filler"; cp -a "$DISK/." "$AFTER/"; exit $rc')


def on_a_full_disk(tmp_path, script, *args, before=None, room=0):
    """Run `script` with tmp_path/disk a tmpfs that holds a copy of `before` and is full but for `room` bytes; what
    is on it afterwards is copied to tmp_path/after."""
    for name in ("disk", "after"):
        (tmp_path / name).mkdir()
    env = {**ENV, "DISK": str(tmp_path / "disk"), "AFTER": str(tmp_path / "after"), "BEFORE": str(before or ""),
           "ROOM": str(room)}
    r = subprocess.run(["unshare", "-rm", "sh", "-c", FILL, "sh", sys.executable, str(ROOT / script), *map(str, args)],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode != 99, r.stderr
    return r


def full_disk_line(r, written):
    one_line(r, f"the disk is full (No space left on device) while writing {written}")


@needs_mount
def test_a_full_disk_in_sample_keeps_the_older_samples(trained, tmp_path):
    before = tmp_path / "before"
    (before / "out").mkdir(parents=True)
    for suffix in (".txt", ".mid"):
        (before / "out" / f"tiny_seed1337_0{suffix}").write_text("an older sample")
    r = on_a_full_disk(tmp_path, "sample.py", "--out_dir", trained, "--output_dir", tmp_path / "disk/out",
                       "--num_samples", 1, "--max_new_tokens", 8, "--overwrite", before=before)  # (replacing them)
    full_disk_line(r, tmp_path / "disk/out/tiny_seed1337_0.mid")
    assert "nothing older was replaced" in r.stderr
    assert files_of(tmp_path / "after/out") == files_of(before / "out")


@needs_mount
def test_a_full_disk_in_prepare_keeps_the_older_dataset(data, tmp_path):
    before = tmp_path / "before"
    shutil.copytree(data, before / "bin")
    r = on_a_full_disk(tmp_path, "prepare.py", "--main_data_path", data.parent / "text", "--output_base_dir",
                       tmp_path / "disk/bin", "--tokenizer_paths", ROOT / "tokenizers/simple_tokenizer.json",
                       "--overwrite", before=before)
    one_line(r, "the disk is full (No space left on device) while writing")
    assert f"{tmp_path / 'disk/bin'} is left as it was" in r.stderr
    assert files_of(tmp_path / "after/bin") == files_of(before / "bin")
    assert sorted(p.name for p in (tmp_path / "after").iterdir()) == ["bin"]  # its lock went as it ended


@needs_mount
def test_a_full_disk_in_encode_says_a_rerun_resumes(tmp_path):
    src = tmp_path / "midi"
    src.mkdir()
    (src / "s.mid").write_bytes(midi_file(scale(12)))
    r = on_a_full_disk(tmp_path, "encode_all.py", "--midi_dirs", src, "--text_dir", tmp_path / "disk/text")
    one_line(r, "the disk is full (No space left on device) while writing")


@needs_mount
def test_a_full_disk_in_the_tokenizer_keeps_the_older_one(tmp_path):
    before = tmp_path / "before"
    before.mkdir()
    older = (ROOT / "tokenizers/simple_tokenizer.json").read_bytes()
    (before / "tok.json").write_bytes(older)
    r = on_a_full_disk(tmp_path, "simple_tokenizer.py", "--output", tmp_path / "disk/tok.json", "--max_dur", 64,
                       before=before)  # (another vocabulary)
    full_disk_line(r, tmp_path / "disk/tok.json")
    assert (tmp_path / "after/tok.json").read_bytes() == older


@needs_mount
def test_a_full_disk_at_a_checkpoint_says_so(data, tmp_path):
    r = on_a_full_disk(tmp_path, "train.py", *train_args(data, tmp_path / "disk/run", "--max_iters=4"), room=65536)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert (f"could not write {tmp_path / 'disk/run/checkpoint.pt'} (the disk is full); the earlier checkpoint.pt, "
            "if any, is intact") in r.stderr


def test_a_dataset_set_aside_by_a_killed_prepare_is_put_back_by_its_reader(data, tmp_path, capsys):
    from dataset import read_data
    shutil.copytree(data, tmp_path / "bin")
    os.replace(tmp_path / "bin", tmp_path / ".bin.pid99999999.old")  # killed between its two renames
    splits, meta, _ = read_data(tmp_path / "bin")
    assert len(splits["train"]) == meta["train"]["tokens"] and (tmp_path / "bin/meta.json").is_file()
    assert "was put back from .bin.pid99999999.old" in capsys.readouterr().err


def test_the_mask_reads_a_prompt_at_once_as_it_reads_it_token_by_token(trained):
    from mask import GrammarMask
    from runs import load_run
    model, tok, _ = load_run(trained, "cpu")
    idx = torch.full((6, 1), tok.stoi["START"])
    pieces = model.generate(idx, 300, temperature=1.5, allowed_fn=GrammarMask(tok, "cpu"),
                            generator=torch.Generator().manual_seed(3))  # chords, rests, held notes
    at_once, one_by_one = GrammarMask(tok, "cpu"), GrammarMask(tok, "cpu")
    for cut in (1, 5, 37, 120, 301):
        a = at_once(pieces[:, :cut])
        for k in range(one_by_one.cursor.seen + 1, cut + 1):
            b = one_by_one(pieces[:, :k])
        assert torch.equal(a, b)
        for name in ("state", "n_parts", "drum", "meter", "bar_len", "bpm", "bars", "count", "bar_start", "pos",
                     "clock", "part", "floor", "pitch", "last_end", "until", "vel"):
            assert torch.equal(getattr(at_once.cursor, name), getattr(one_by_one.cursor, name)), (cut, name)
