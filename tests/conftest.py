"""Shared fixtures: MIDI files built byte by byte, so tests need no data beyond music21's bundled corpus."""
import contextlib
import io
import os
import runpy
import signal
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import batch  # noqa: E402  (from the repo, found through the line above)
torch.set_num_threads(1)  # tiny models: threads cost more than they give, and subprocess tests share the cores


@pytest.fixture(autouse=True)
def keep_denormals():
    """sample.py and evaluate.py, run in this process by some tests, flush denormals for speed (runs.pick_device);
    the tests after these need the CPU's default back (hypothesis refuses to draw floats without it)."""
    yield
    torch.set_flush_denormal(False)


def vlq(n):
    """A MIDI variable-length quantity."""
    out = [n & 0x7F]
    while n := n >> 7:
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


def on(pitch, vel=90, ch=0, delta=0):
    return vlq(delta) + bytes([0x90 | ch, pitch, vel])


def off(pitch, ch=0, delta=0, zero_velocity_on=False):
    """A note-off, or the common note-on with velocity 0."""
    return vlq(delta) + bytes([(0x90 if zero_velocity_on else 0x80) | ch, pitch, 0 if zero_velocity_on else 64])


def program(number, ch=0, delta=0):
    return vlq(delta) + bytes([0xC0 | ch, number])


def meta(kind, data, delta=0):
    """A meta event: 0x51 set tempo (3 bytes), 0x58 time signature (4 bytes), 0x03 track name."""
    return vlq(delta) + bytes([0xFF, kind]) + vlq(len(data)) + data


def track(*events):
    data = b"".join(events) + vlq(0) + b"\xff\x2f\x00"
    return b"MTrk" + len(data).to_bytes(4, "big") + data


def midi_file(*tracks, fmt=1, division=480):
    header = b"MThd" + (6).to_bytes(4, "big") + fmt.to_bytes(2, "big") + len(tracks).to_bytes(2, "big")
    return header + division.to_bytes(2, "big") + b"".join(tracks)


def scale(n=12, start=60, ch=0, step=240):
    """A track of `n` eighth notes going up (480 ticks per quarter)."""
    return track(*[on(start + i, 80, ch) + off(start + i, ch, delta=step) for i in range(n)])


def body(tokens):
    """The tokens of an encoding outside its blocks of given material."""
    from encoding_decoding import AHEAD_STATES, GRAMMAR, kind
    state, out = "begin", []
    for t in tokens:
        state = GRAMMAR[state][kind(t)]
        out += [] if state in AHEAD_STATES else [t]
    return out


def make_bin(root, n=24, header=None, tokenizer=ROOT / "tokenizers/simple_tokenizer.json"):
    """A tiny prepared dataset (text encodings -> train.bin/val.bin/meta.json/tokenizer.json) under root/bin;
    with tokenizer=None only the encodings are written (under root/text)."""
    from encoding_decoding import Header, Spec, canonical, notes_to_tokens, tokens_to_text
    spec = Spec()
    for i in range(n):  # little two-part pieces: a rising line over a held bass, each in its own key
        notes = [(4 * k, 48 + i % 12, 16, 70, 1) for k in range(0, 24, 4)]
        notes += [(4 * k, 60 + (i + 2 * k) % 12, 4, 80 + k % 3, 0) for k in range(24)]
        path = root / "text" / f"piece{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tokens_to_text(notes_to_tokens(canonical(notes, spec), spec, header or Header(parts=(0, 32)))))
    if tokenizer is None:
        return None
    r = run("prepare.py", "--main_data_path", root / "text", "--output_base_dir", root / "bin", "--tokenizer_paths",
            tokenizer, "--val_fraction", 0.2, "--given_share", 0.25)
    assert r.returncode == 0, r.stderr
    return root / "bin"


TINY_MODEL = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--kv_lora_rank=16", "--qk_nope_head_dim=8",
              "--qk_rope_head_dim=8", "--v_head_dim=16", "--expert_hidden=64", "--block_size=32", "--batch_size=4",
              "--gradient_accumulation_steps=2", "--eval_iters=2", "--log_interval=1", "--warmup_iters=2",
              "--learning_rate=3e-3", "--device=cpu"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run(script, *args, timeout=None):
    """Run one of the repo's scripts as a user would, `python script args` in the repo's folder, but in this process:
    a subprocess spends 2-3 s importing torch and music21, which was half of the suite on a slow CPU. The script runs
    as __main__ (runpy), through the same lines a user's command takes, and what it changes in the process (argv,
    the folder, torch's threads and precision, signal handlers, the locks it holds until exit) is put back after it.
    Returns what subprocess.run would: returncode, stdout, stderr; past `timeout` seconds it raises TimeoutExpired,
    as subprocess.run does (an alarm stops the script, whatever it catches). run_apart runs a script in a process
    of its own, for a test that needs one (another folder, a kill)."""
    argv = [str(ROOT / script), *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    saved = (sys.argv[:], os.getcwd(), torch.get_num_threads(), torch.backends.mkldnn.matmul.fp32_precision,
             {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)})
    code, late = 0, []

    def too_long(signum, frame):
        late.append(True)
        raise subprocess.TimeoutExpired(argv, timeout)
    try:
        if timeout:
            signal.signal(signal.SIGALRM, too_long)
            signal.setitimer(signal.ITIMER_REAL, timeout)
        os.chdir(ROOT)
        sys.argv[:] = argv
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("default")  # the interpreter's: each warning once per place, on stderr (not pytest's)
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            try:
                runpy.run_path(argv[0], run_name="__main__")
            except SystemExit as e:  # as the interpreter does: None is 0, a text is printed and is 1
                code = e.code if isinstance(e.code, int) or e.code is None else print(e.code, file=sys.stderr) or 1
            except Exception:  # a traceback on stderr and 1, as the interpreter gives
                traceback.print_exc()
                code = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        argv_before, cwd, threads, precision, handlers = saved
        sys.argv[:] = argv_before
        os.chdir(cwd)
        torch.set_num_threads(threads)
        torch.backends.mkldnn.matmul.fp32_precision = precision
        torch.set_flush_denormal(False)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        batch._unlock_all(os.getpid())  # the locks a script holds until its process exits
    if late:  # (even where the script caught it and went on to exit)
        raise subprocess.TimeoutExpired(argv, timeout, out.getvalue(), err.getvalue())
    return subprocess.CompletedProcess(argv, code or 0, out.getvalue(), err.getvalue())


def run_apart(script, *args, **kw):
    """Run one of the repo's scripts in a subprocess of its own (in the repo's folder unless `cwd` says)."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          **{"cwd": ROOT, "env": ENV, **kw})


def train_args(data, out, *extra):
    return [f"--data_dir={data}", f"--out_dir={out}", *TINY_MODEL, *extra]


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    return make_bin(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def trained(data, tmp_path_factory):
    """A tiny model trained for 30 steps on the tiny dataset."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    r = run("train.py", *train_args(data, out, "--max_iters=30", "--eval_interval=10"))
    assert r.returncode == 0, r.stderr
    return out


def sample_here(*args):
    """sample.py run as `run` does: (exit code, stdout, stderr)."""
    r = run("sample.py", *args)
    return r.returncode, r.stdout, r.stderr
