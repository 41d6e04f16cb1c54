"""Run folders and checkpoints: the device a run uses (and what a training window keeps there for its backward, for
train.py's memory check), checkpoints written and read back (weights_only, checked against the sha256 of their
weights and tokenizer, their model shapes checked before anything is allocated), and a run folder loaded as a model
with its tokenizer. Scripts import this; model.py stays the network alone."""
import ctypes
import hashlib
import io
import json
import os
import time
from dataclasses import fields
from pathlib import Path

import torch

import configurator
from batch import atomic_write, die, reason, why_not_written
from encoding_decoding import Tokenizer
from model import GPT, GPTConfig


def weights_sha256(state):
    """The sha256 of a state dict's names, dtypes, shapes and bytes: what a checkpoint records of its weights."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _feed(h, obj):
    """Hash a tree of dicts, lists, tensors and plain values: its shape, its keys and every byte of its tensors."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"tensor {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(f"dict {len(obj)}\n".encode())
        for k in sorted(obj, key=repr):
            h.update(f"{k!r}:".encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"list {len(obj)}\n".encode())
        for x in obj:
            _feed(h, x)
    else:
        h.update(f"{obj!r}\n".encode())


def tree_sha256(obj):
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


# GPTConfig fields added since the first checkpoints, with the value that every checkpoint written before had
EARLIER_MODEL_ARGS = {"gelu_approximate": "tanh"}
# What a checkpoint's parts are, in a user's words, where one is damaged
PART_NAMES = {"model": "weights", "optimizer": "optimizer state", "scaler": "gradient scaler state",
              "rng": "random number generators' states", "model_args": "model shape", "config": "training settings",
              "iter_num": "step number", "best_val_loss": "best validation loss"}


def read_checkpoint(path, device="cpu", whole=False):
    """A checkpoint's dict of plain values (weights_only=True), or ValueError saying why it cannot be read. Where the
    checkpoint records checksums (sha256), its weights and model shape must match theirs, and with `whole` (a
    resumed run, which reads everything) every part that has one: the error names the damaged parts."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated zip, a foreign file: all say the same to a user
        if type(e).__name__ == "UnpicklingError":  # weights_only refused objects: torch would suggest the unsafe load
            raise ValueError(f"{path}: not a readable checkpoint (it holds pickled Python objects, not only tensors "
                             f"and plain values; this code does not load those)") from None
        raise ValueError(f"{path}: not a readable checkpoint ({reason(e)})") from None
    if not isinstance(ckpt, dict) or not {"model", "model_args"} <= set(ckpt) or not isinstance(ckpt["model"], dict) \
            or not isinstance(ckpt["model_args"], dict) or not isinstance(ckpt.get("sha256", {}), dict):
        raise ValueError(f"{path}: not a readable checkpoint (it holds no model weights and model_args)")
    sums = ckpt.get("sha256", {})
    checked = [k for k in ckpt if k in sums and (whole or k in ("model", "model_args"))]
    if damaged := [k for k in checked if (weights_sha256 if k == "model" else tree_sha256)(ckpt[k]) != sums[k]]:
        what = " and ".join(PART_NAMES.get(k, k) for k in damaged)
        plural = len(damaged) > 1 or damaged[0] == "model"
        raise ValueError(f"{path}: its {what} {'do' if plural else 'does'} not match the checksum recorded when it was "
                         f"saved (a damaged file: restore it from a copy, or retrain)")
    ckpt["model_args"] = {**EARLIER_MODEL_ARGS, **ckpt["model_args"]}
    return ckpt


def model_config(ckpt, path):
    """The GPTConfig of a checkpoint, checked against config's limits and against the shapes of its weights before
    anything is allocated (the model is built on the meta device); ValueError if they do not fit this code."""
    try:
        for f in fields(GPTConfig):  # read from a file: each value checked before anything is built from it
            value = ckpt["model_args"].get(f.name, f.default)
            if type(value) is not f.type and not (f.type is float and type(value) is int):
                raise ValueError(f"{f.name}={value!r} is not a {f.type.__name__}")
            if why := configurator.check(f.name, value):
                raise ValueError(f"{f.name}={value!r}: wants {why}")
        cfg = GPTConfig(**ckpt["model_args"])
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in GPT(cfg, verbose=False).state_dict().items()}
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: its model_args do not fit this code's model ({reason(e)})") from None
    got = {k.removeprefix("_orig_mod."): tuple(v.shape) for k, v in ckpt["model"].items()}
    if bad := next((k for k in sorted(want.keys() | got.keys()) if want.get(k) != got.get(k)), None):
        raise ValueError(f"{path}: its weights do not fit its model_args ({bad}: {got.get(bad, 'missing')} in the "
                         f"file, {want.get(bad, 'none')} for the model)")
    return cfg


def load_checkpoint(path, device="cpu"):
    """Rebuild a GPT from a checkpoint of plain values (loaded with weights_only=True); returns (model, checkpoint).
    ValueError if the file is not a whole checkpoint of this code's model."""
    ckpt = read_checkpoint(path, device)
    model = GPT(model_config(ckpt, path), verbose=False)
    load_weights(model, ckpt, path)
    return model.to(device), ckpt


def load_weights(model, ckpt, path):
    """Put a checkpoint's weights into `model` (a compiled model's names are read too); ValueError if they do not
    fit it."""
    try:
        model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    except RuntimeError as e:
        raise ValueError(f"{path}: its weights do not fit this code's model ({reason(e)})") from None


def check_tokenizer(ckpt, tokenizer, path, tokenizer_path):
    """ValueError unless `tokenizer` (bytes) is the tokenizer the checkpoint was saved with, where it records one."""
    if (want := ckpt.get("sha256", {}).get("tokenizer")) and hashlib.sha256(tokenizer).hexdigest() != want:
        raise ValueError(f"{tokenizer_path} is not the tokenizer {path} was trained with (its checksum differs: "
                         f"edited or replaced?); put the run's own tokenizer.json back")


# Training on a CPU with AMX, dtype=auto autocasts to bf16 where the windows are AUTOCAST_WINDOW tokens or longer or the
# model is AUTOCAST_WIDTH wide (n_embd) or wider; below both it keeps float32 with bf16 matmuls. Autocast's bf16 flash
# attention and matmuls win where they are most of a step, torch's slower bf16 elementwise kernels lose where they
# are not: the shipped model (256 wide, windows of 512) trains 1.66x faster than float32 with autocast, 1.35x with
# bf16 matmuls; the demo's (128 wide, windows of 128) 0.92x and 1.24x. Measured at 18 shapes (BENCHMARKS.md,
# "dtype=auto picks by the window and the width", and the widths between 256 and 384 in the parts after it).
AUTOCAST_WINDOW, AUTOCAST_WIDTH = 256, 320


def pick_device(device, dtype, training=False, width=None, window=None):
    """('cuda' | 'cpu' | ..., torch dtype) from the config's 'auto' or explicit values; `training`: for train.py, which
    gives the model's `width` (n_embd) and the `window` it trains on (block_size)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError:
        die(f"--device wants auto, cpu, cuda, cuda:N or mps, got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        die(f"--device={device} but this machine has no CUDA GPU (or this torch build has no CUDA): use --device=cpu")
    if kind == "cuda" and torch.device(device).index is not None and torch.device(device).index >= torch.cuda.device_count():
        die(f"--device={device} but this machine has {torch.cuda.device_count()} CUDA GPUs")
    if kind == "mps" and not torch.backends.mps.is_available():
        die(f"--device={device} but MPS is not available here: use --device=cpu")
    amx = training and dtype == "auto" and kind == "cpu" and has_amx()
    if dtype == "auto":
        dtype = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if device.startswith("cuda") else "float32"
        if amx and ((window or 0) >= AUTOCAST_WINDOW or (width or 0) >= AUTOCAST_WIDTH):
            dtype = "bfloat16"
    if kind == "cpu":
        # Below AUTOCAST_WINDOW and AUTOCAST_WIDTH, dtype=auto keeps every tensor float32 and has oneDNN round each
        # matmul's inputs to bf16 for AMX's tiles (the CPU's counterpart of TF32). Not to sample: decoding's matmul
        # shapes change with every token, and oneDNN compiles a kernel for each (3x slower; BENCHMARKS.md, "bf16 on a
        # CPU with AMX"). dtype=float32 is float32 throughout ("none": torch's default).
        torch.backends.mkldnn.matmul.fp32_precision = "bf16" if amx and dtype == "float32" else "none"
        # Subnormal floats (below 1.2e-38) take a slow path on x86 CPUs. Flushed to zero they cost nothing; the
        # shipped model's run slowed by a third until it was restarted with this (BENCHMARKS.md: the cause is not
        # pinned down, the flush is a cheap guard).
        torch.set_flush_denormal(True)
        keep_freed_memory()
        if not training:
            torch.set_num_threads(free_threads())
    return device, getattr(torch, dtype)


def free_threads():
    """Threads to sample on: torch's own number as this process first asked (a thread per core), less the cores that
    other work keeps busy (what the whole machine used of its CPUs over a tenth of a second, this process waiting),
    at least one; OMP_NUM_THREADS, where it is set, wins. A decode step is many small parallel regions, and each
    waits for its slowest thread: on 2 cores with a training run beside it, two threads sampled 3.5 times slower than
    one (BENCHMARKS.md, "Sampling beside a training run"). One thread draws the same tokens as two. A long job asks
    again as it goes (`share_cores`): evaluate.py, started beside `make samples`, had sampled on one thread for
    all of its 2 h 48 min, long after the other work was done."""
    global _cores
    _cores = _cores or torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS") or _cores == 1:  # (nothing to look for)
        return torch.get_num_threads()
    import psutil
    cpus = psutil.cpu_count() or 1
    return max(1, min(_cores, round(cpus - busy_elsewhere(psutil))))


def busy_elsewhere(psutil, seconds=0.1):
    """The cores that other processes keep busy: what the whole machine used of its CPUs over `seconds`, less what
    this process used (its OpenMP threads spin on for a while after a batch, and read as other work: evaluate.py,
    looking again between batches, saw itself and fell to one thread)."""
    me = psutil.Process()
    psutil.cpu_percent(None), me.cpu_percent(None)  # (both count from here)
    time.sleep(seconds)
    return max(0.0, psutil.cpu_percent(None) / 100 * (psutil.cpu_count() or 1) - me.cpu_percent(None) / 100)


_cores = None  # torch's thread count before free_threads first lowered it


def share_cores(device):
    """Sample on the threads free now (free_threads) where `device` is a CPU: a long job calls it before each batch,
    as other work on the machine starts and stops."""
    if torch.device(device).type == "cpu":
        torch.set_num_threads(free_threads())


def has_amx():
    """Whether this CPU has AMX tiles (Intel Xeon since Sapphire Rapids), which multiply bf16 matrices 8x faster than
    float32 ones here (BENCHMARKS.md)."""
    return getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()  # (torch's own check of the CPU and OS)


def keep_freed_memory():
    """Have glibc's malloc keep freed blocks for reuse instead of handing them back to the kernel. Each activation
    of a CPU training step is a fresh buffer of a few MiB: by default glibc maps and unmaps them, and every page of
    every buffer is faulted in again (5,000-10,000 page faults a step at the shipped model's size, a few hundred
    with this; BENCHMARKS.md, "CPU training speed"). The price: the process holds on to its peak memory. Elsewhere
    (macOS, Windows, musl) there is nothing to set."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks below 32 MiB (glibc's largest setting) come from the heap
    mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: the heap's free top goes back to the kernel only past 1 GiB


# A run folder's weights, in the order sampling prefers them; model.pt is an exported run's (weights only).
WEIGHT_FILES = ("best.pt", "checkpoint.pt", "model.pt")


def load_run(run, device, checkpoint=None):
    """(model in eval mode, tokenizer, checkpoint path) from a run folder, or one clear line on what is missing.
    `checkpoint` names the file; without it, best.pt, else checkpoint.pt, else model.pt (an exported model). A run
    of the grammar's first edition is one line that names the git tag whose code samples it."""
    run = Path(run)
    if not run.is_dir():
        die(f"{run}: no such run folder")
    names = [checkpoint] if checkpoint else list(WEIGHT_FILES)
    ckpt = next((run / n for n in names if (run / n).is_file()), None)
    if ckpt is None:
        die(f"{run}: no {' or '.join(names)} here" + ("" if checkpoint else " (train a model first)"))
    try:
        tok = Tokenizer.load(run / "tokenizer.json")
        model, saved = load_checkpoint(ckpt, device)
        check_tokenizer(saved, (run / "tokenizer.json").read_bytes(), ckpt, run / "tokenizer.json")
    except (OSError, ValueError) as e:
        die(e)
    if model.cfg.vocab_size != tok.vocab_size:
        die(f"{ckpt} has {model.cfg.vocab_size} tokens but {run}/tokenizer.json has {tok.vocab_size}")
    return model.eval(), tok, ckpt


def find_checkpoint(path):
    """A checkpoint file, or a run folder's checkpoint.pt (model.pt in an exported one, weights only)."""
    path = Path(path)
    if path.suffix != ".pt":
        path = next((path / n for n in ("checkpoint.pt", "model.pt") if (path / n).is_file()), path / "checkpoint.pt")
    if not path.is_file():
        die(f"{path}: no checkpoint here")
    return path


def save_checkpoint(path, state):
    """Write a checkpoint atomically; on a full disk (or a folder gone) one line, and the earlier file stays."""
    buffer = io.BytesIO()  # serialized first: a write error then reads as itself, not as torch's "unexpected pos"
    torch.save(state, buffer)
    try:
        atomic_write(path, buffer.getbuffer())
    except OSError as e:
        die(f"could not write {path} ({why_not_written(e)}); the earlier {path.name}, if any, is intact")


def with_checksums(state, tokenizer):
    """A checkpoint's state with the sha256 of each of its parts (weights, optimizer, RNG states, ...) and of its
    tokenizer's bytes, checked when it is read."""
    sums = {k: weights_sha256(v) if k == "model" else tree_sha256(v) for k, v in state.items()}
    return {**state, "sha256": {**sums, "tokenizer": hashlib.sha256(tokenizer).hexdigest()}}


def holds_a_run(out_dir):
    return any((out_dir / name).exists() for name in WEIGHT_FILES)


def learnt_given(tok, run):
    """Whether a run was trained with given material: its vocabulary has the blocks, and its data had a share."""
    if tok.version < 4:
        return False
    try:
        meta = json.loads((Path(run) / "config.json").read_text()).get("data_meta", {})
    except (OSError, ValueError, AttributeError):
        meta = {}
    return meta.get("given_share", 1.0) > 0


def saved_bytes(model, ctx, rows, length):
    """Bytes of the tensors autograd saves for the backward in a training forward pass of `rows` windows of `length`
    tokens, the weights (and their bf16 casts, saved once per pass) told apart by the caller. The windows are zeros;
    the random draws of dropout and the MoE's load counts are put back as they were, so the run goes on as it would
    without this."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        if (s := t.untyped_storage()).data_ptr() not in weights:
            saved[s.data_ptr()] = s.nbytes()
        return t
    device = next(model.parameters()).device
    loads = [moe.load.clone() for moe in model.moe_layers()]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        x = torch.zeros(rows, length, dtype=torch.long, device=device)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
            model(x, x)
    for moe, load in zip(model.moe_layers(), loads):
        moe.load.copy_(load)
    return sum(saved.values())


def window_bytes(model, ctx, block_size):
    """Bytes that one training window of block_size tokens keeps for its backward: a window's share (two windows'
    saved bytes less one's) measured at two lengths, a * T + c * T^2 through them (attention with dropout keeps a
    T x T matrix per head), then read at block_size, which may be too long to measure."""
    lengths = sorted({min(block_size, 128), min(block_size, 256)})
    per_window = [saved_bytes(model, ctx, 2, n) - saved_bytes(model, ctx, 1, n) for n in lengths]
    if len(lengths) == 1:
        return max(0, per_window[0])
    (n1, n2), (w1, w2) = lengths, per_window
    c = max(0.0, (w2 / n2 - w1 / n1) / (n2 - n1))
    a = max(0.0, w1 / n1 - c * n1)
    return a * block_size + c * block_size ** 2
