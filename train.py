"""Train the MLA + MoE GPT on train.bin / val.bin.

python train.py --data_dir=data/bin --out_dir=models/my_run [--preset=cpu_demo] [--init_from=resume]
torchrun --standalone --nproc_per_node=8 train.py --data_dir=data/bin --out_dir=models/my_run
python train.py --out_dir=models/my_run --export=models/mine    # a weights-only bf16 copy to share (model.pt)

The run folder gets checkpoint.pt (latest) and best.pt (best val loss; none with rule_weight or mix_share, whose
penalty or other windows are meant to cost some validation loss), both written atomically and loadable with
weights_only=True, plus config.json, tokenizer.json, metrics.jsonl and tensorboard/. A resumed run continues exactly (same per-step losses as a run that
never stopped); SIGINT/SIGTERM save a checkpoint before exiting.
"""
import argparse
import io
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import torch
import torch.distributed as dist
from tqdm import tqdm

import batch
import configurator
from batch import atomic_write, clean_stale, die, lock, read_jsonl, temp_name, why_not_written, writable_dir, write_json
from dataset import draw_starts, get_batch, piece_heads, read_data, read_rules, rule_targets
from encoding_decoding import Spec, Tokenizer, kind
from model import GPT, MODEL_KEYS, GPTConfig, autocast, bf16_matmuls, model_args, rule_penalty
from runs import (WEIGHT_FILES, check_tokenizer, find_checkpoint, holds_a_run, load_weights, model_config, pick_device,
                  read_checkpoint, save_checkpoint, window_bytes, with_checksums)

TRAIN_KEYS = MODEL_KEYS + [
    "data_dir", "out_dir", "init_from", "learning_rate", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip",
    "batch_size", "gradient_accumulation_steps", "max_iters", "warmup_iters", "lr_decay_iters", "eval_interval",
    "eval_iters", "log_interval", "max_bad_steps", "anchor_header", "piece_start_share", "rule_weight", "rule_share",
    "mix_data_dir", "mix_share", "device", "dtype", "compile", "seed"]
UNSHAPED_KEYS = ("block_size", "dropout")  # model settings a fine-tune may change: no weight's shape depends on them


def lr_at(it, c):
    """Linear warm-up, then cosine decay from learning_rate to min_lr at lr_decay_iters."""
    if it < c.warmup_iters:
        return c.learning_rate * (it + 1) / (c.warmup_iters + 1)
    if it > c.lr_decay_iters:
        return c.min_lr
    ratio = (it - c.warmup_iters) / max(1, c.lr_decay_iters - c.warmup_iters)
    return c.min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (c.learning_rate - c.min_lr)


@torch.no_grad()
def evaluate(model, splits, c, device, ctx, heads):
    """Mean loss per split over eval_iters batches, the same batches every time (a seeded generator of its own)."""
    model.eval()
    out = {}
    for split, data in splits.items():
        g = torch.Generator().manual_seed(c.seed + (split == "val"))
        losses = []
        for _ in range(c.eval_iters):
            x, y = get_batch(data, c.block_size, draw_starts(len(data), c.block_size, c.batch_size, g), device,
                             heads[split])
            with ctx:
                model(x, y)
            losses.append(model.last_loss_parts[0].item())
        out[split] = float(np.mean(losses))
    model.train()
    return out


def extend_vocab(ckpt, old, new):
    """Give a checkpoint's tied embedding rows for the tokens that `new` appends to `old` (new styles), each
    starting as the mean of the old style rows, so a new style begins as "some style" rather than noise."""
    styles = [i for i, t in enumerate(old) if kind(t) == "style"]
    for key, w in ckpt["model"].items():
        if key.endswith(("tok_emb.weight", "lm_head.weight")):
            ckpt["model"][key] = torch.cat([w, w[styles].mean(0, keepdim=True).expand(len(new) - len(old), -1)])
    ckpt["model_args"]["vocab_size"] = len(new)


EXPORTED = ("config.json", "tokenizer.json", "metrics.jsonl", "model.pt")  # the weights, what readers look for, last


def export(run, dest, overwrite):
    """Write a weights-only copy of the run for sharing into `dest`: its first of WEIGHT_FILES as model.pt with its
    matrices in bfloat16 (vectors, norms and routing biases stay float32), beside the run's config.json,
    tokenizer.json and metrics.jsonl. A file of those names already there is replaced only with --overwrite (or
    where it holds the very bytes this export writes: a rerun after a kill); nothing else in `dest` (MODEL.md,
    .git, ...) is touched. Each file is written whole beside its place, then all are moved in with os.replace,
    model.pt last, so `dest` is never missing and its model.pt never stands beside another run's files."""
    src = next((run / n for n in WEIGHT_FILES if (run / n).is_file()), None)
    if src is None:
        die(f"{run}: no {' or '.join(WEIGHT_FILES)} to export")
    if dest.exists() and not dest.is_dir():
        die(f"--export {dest} is a file, not a folder")
    if dest.resolve() == run.resolve():
        die(f"--export {dest} is the run folder itself: export into another folder")
    if training := [n for n in WEIGHT_FILES if n != "model.pt" and (dest / n).exists()]:
        die(f"--export {dest} holds a training run ({', '.join(training)}): export into another folder")
    if (dest / "model.pt").exists() and not overwrite:
        die(f"{dest} already holds a model: add --overwrite to replace it")
    lock(dest, "export")
    files, ckpt = exported_files(run, src)
    if (theirs := [n for n in EXPORTED if differs(dest / n, files[n])]) and not overwrite:
        die(f"--export {dest} already has {', '.join(theirs)}, which this export would replace: add --overwrite to "
            f"replace {'it' if len(theirs) == 1 else 'them'}, or export into another folder")
    writable_dir(dest, "--export")
    clean_stale(dest)
    staged = []
    try:  # write every file first; the renames that follow take no room
        for name in EXPORTED:
            staged.append((dest / temp_name(name, "tmp"), dest / name))
            staged[-1][0].write_bytes(files[name])
    except OSError as e:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        die(f"could not write {dest} ({why_not_written(e)}); it is left as it was")
    for tmp, path in staged:
        os.replace(tmp, path)
    loss = (f"val loss {ckpt['best_val_loss']:.4f}" if src.name == "best.pt" else  # a latest checkpoint's own
            f"the run's best val loss {ckpt['best_val_loss']:.4f}")  # loss is in metrics.jsonl, not the checkpoint
    print(f"{dest}/model.pt: {src} at step {ckpt['iter_num']} ({loss}), "
          f"{len(files['model.pt']) / 2**20:.1f} MiB; with config.json, tokenizer.json, metrics.jsonl")


def exported_files(run, src):
    """({name: bytes} of an export of the run whose weights are `src`, that checkpoint), checked first; or one line."""
    try:
        ckpt = read_checkpoint(src)
        tokenizer = (run / "tokenizer.json").read_bytes()
        check_tokenizer(ckpt, tokenizer, src, run / "tokenizer.json")
        model_config(ckpt, src)
        files = {n: (run / n).read_bytes() for n in ("config.json", "metrics.jsonl")}
    except OSError as e:
        die(f"{run}: cannot read {Path(e.filename).name if e.filename else 'it'} ({e.strerror}): is it a whole run "
            f"folder?")
    except ValueError as e:
        die(e)
    weights = {k: v.to(torch.bfloat16) if v.is_floating_point() and v.dim() >= 2 else v
               for k, v in ckpt["model"].items()}
    shipped = with_checksums({"model": weights, "model_args": ckpt["model_args"], "iter_num": ckpt["iter_num"],
                              "best_val_loss": ckpt["best_val_loss"], "config": ckpt["config"],
                              "exported_from": src.name}, tokenizer)
    buffer = io.BytesIO()
    torch.save(shipped, buffer)
    return {**files, "tokenizer.json": tokenizer, "model.pt": buffer.getvalue()}, ckpt


def differs(path, data):
    """Whether a file is at `path` with other bytes than `data` (a file of the user's, or of another export)."""
    try:
        return path.exists() and (not path.is_file() or path.stat().st_size != len(data) or path.read_bytes() != data)
    except OSError:
        return True


def check_vocabulary(ckpt, ckpt_path, resumed_run, tokenizer, c, master):
    """The data's tokenizer against the checkpoint's, token by token: the same, or (fine-tuning) the checkpoint's
    with new styles appended, whose embedding rows extend_vocab adds; else one line on the first token that differs.
    A resumed run compares with its own tokenizer.json, which must be the one its checkpoint was saved with."""
    source = (resumed_run or ckpt_path.parent) / "tokenizer.json"
    if not source.is_file():
        die(f"{ckpt_path}: no tokenizer.json beside it, so its vocabulary cannot be compared with the data's")
    try:
        check_tokenizer(ckpt, source.read_bytes(), ckpt_path, source)
        old_spec = Tokenizer.load(source).spec.to_dict()
    except (OSError, ValueError) as e:
        die(e)
    new_spec = json.loads(tokenizer)["spec"]
    if differ := [k for k in old_spec if k != "styles" and json.dumps(old_spec[k]) != json.dumps(new_spec.get(k))]:
        die(f"{c.data_dir}/tokenizer.json was built with other settings than {source} ({differ[0]}: "
            f"{new_spec.get(differ[0])} vs {old_spec[differ[0]]}): the same tokens would mean other things; "
            f"re-encode with the run's settings"
            + ("" if resumed_run else f" (simple_tokenizer.py --base {c.init_from})"))
    old, new = Tokenizer(Spec.of(old_spec)).itos, json.loads(tokenizer)["itos"]
    if len(old) != ckpt["model_args"]["vocab_size"]:
        die(f"{source} has {len(old)} tokens but {ckpt_path} has {ckpt['model_args']['vocab_size']}")
    if new == old:
        return
    if resumed_run:
        die(f"{c.data_dir} was prepared with another tokenizer than the run's {source} (first difference at token "
            f"id {first_difference(old, new)}): resume on data prepared with the run's tokenizer")
    if len(new) <= len(old) or new[:len(old)] != old:
        k = first_difference(old, new)
        die(f"vocab mismatch: token id {k} is {old[k] if k < len(old) else 'absent'!r} in {source} but "
            f"{new[k] if k < len(new) else 'absent'!r} in {c.data_dir}/tokenizer.json (to fine-tune on new styles, "
            f"build the data's tokenizer with simple_tokenizer.py --base {c.init_from})")
    extend_vocab(ckpt, old, new)
    if master:
        print(f"fine-tuning with {len(new) - len(old)} new tokens: {', '.join(new[len(old):])}")


def first_difference(a, b):
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def resolve_source(c, out_dir):
    """(checkpoint, its path, resume?) of the model's source, read before anything else; the run folder is held by
    this process from here on. A resumed run takes its own saved settings, except those given on this command line,
    and keeps its model's shape; a scratch run never overwrites a trained one without --overwrite."""
    if int(os.environ.get("RANK", 0)) == 0:
        lock(out_dir, "training run")
    resume, ckpt, ckpt_path = c.init_from == "resume", None, None
    if c.init_from != "scratch":
        ckpt_path = find_checkpoint(out_dir if resume else c.init_from)
        try:
            ckpt = read_checkpoint(ckpt_path, whole=resume)  # a resume reads every part, a fine-tune the weights
            model_config(ckpt, ckpt_path)  # its shapes are sound before any of them is used
        except ValueError as e:
            die(e)
    if resume and "optimizer" not in ckpt:
        die(f"{ckpt_path} holds weights only (an exported model): fine-tune it with --init_from={out_dir} "
            f"into another --out_dir")
    if resume:
        saved = {"anchor_header": False, **ckpt.get("config", {})}  # a run saved before anchored windows had none
        for k in TRAIN_KEYS:
            if k not in c.given and k in saved and k not in ("out_dir", "init_from"):
                setattr(c, k, saved[k])
        for k in MODEL_KEYS:
            if k in c.given and getattr(c, k) != ckpt["model_args"][k]:
                die(f"--{k}={getattr(c, k)} differs from the checkpoint's {k}={ckpt['model_args'][k]}: a resumed run "
                    f"keeps its model; train into a new --out_dir to change it")
    elif ckpt is not None:  # a fine-tune keeps the weights' shapes; context and dropout are this run's where given
        for k in UNSHAPED_KEYS:
            if k not in c.given:
                setattr(c, k, ckpt["model_args"].get(k, getattr(GPTConfig, k)))
    if not resume and holds_a_run(out_dir) and not c.overwrite:
        die(f"{out_dir} holds a trained run: use --init_from=resume to continue, or --overwrite to start over")
    if out_dir.exists() and not out_dir.is_dir():
        die(f"--out_dir {out_dir} is a file, not a folder")
    return ckpt, ckpt_path, resume


def check_split(c, out_dir, meta):
    """A resumed run validates on the pieces it validated on: data split with another seed or val_fraction would hold
    pieces it trained on in val.bin (more pieces, split alike, are fine). One line, before any work."""
    try:
        was = json.loads((out_dir / "config.json").read_text()).get("data_meta") or {}
    except (OSError, ValueError, AttributeError):  # (a run without one: nothing to compare)
        return
    for k in ("seed", "val_fraction"):
        if k in was and k in meta and was[k] != meta[k]:
            die(f"--data_dir {c.data_dir} was split with {k} {meta[k]} and this run's data with {was[k]}: resumed, it "
                f"would validate on pieces it trained on; resume on data prepared with --{k} {was[k]}, or fine-tune "
                f"with --init_from={out_dir} into another --out_dir")


def setup_device(c, width):
    """Where this process trains a model `width` wide (n_embd) on windows of c.block_size tokens: device, dtype and
    autocast context, and its rank among world processes (torchrun)."""
    ddp = "RANK" in os.environ
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
    device, dtype = pick_device(c.device, c.dtype, training=True, width=width, window=c.block_size)
    if ddp:
        device = f"cuda:{os.environ['LOCAL_RANK']}" if device.startswith("cuda") else device
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if c.gradient_accumulation_steps % world:
        die(f"gradient_accumulation_steps={c.gradient_accumulation_steps} is not divisible by {world} processes")
    if rank == 0:  # (dtype=auto differs by machine: say what it picked)
        print(f"training on {device} in {str(dtype)[6:]}" + ", with bf16 matmuls (AMX)" * bf16_matmuls())
    return argparse.Namespace(ddp=ddp, rank=rank, world=world, master=rank == 0, device=device,
                              device_type=device.split(":")[0], dtype=dtype, ctx=autocast(device, dtype))


def load_data(c):
    """(train/val tokens, meta, tokenizer bytes, the piece heads of each split where windows are anchored, the rules'
    tokens of train.bin where rule_weight asks for them, else None, and the mixed-in data's training tokens with
    their heads where mix_share asks for them, else None)."""
    splits, meta, tokenizer = read_data(c.data_dir)
    for split, data in splits.items():
        if len(data) <= c.block_size + 1:
            more = "hold out more pieces (prepare.py --val_fraction)" if split == "val" else "add pieces"
            die(f"{c.data_dir}/{split}.bin holds {len(data)} tokens, too few for block_size={c.block_size}: {more}, or "
                f"train on windows shorter than {len(data) - 1} tokens (--block_size)")
    itos = json.loads(tokenizer)["itos"]
    heads = {split: piece_heads(data, itos) if c.anchor_header else None for split, data in splits.items()}
    check_window_holds_header(c, c.data_dir, heads.values())
    rules = read_rules(c.data_dir, meta, len(splits["train"])) if c.rule_weight > 0 else None
    mix = None
    if c.mix_data_dir and not c.mix_share:
        die(f"mix_data_dir={c.mix_data_dir} is read only with mix_share > 0 (the share of each batch's windows taken "
            f"from it): give --mix_share too, or leave mix_data_dir out")
    if c.mix_share > 0:
        if not c.mix_data_dir:
            die("mix_share needs mix_data_dir: a folder prepare.py wrote with the same tokenizer")
        if not 0 < round(c.batch_size * c.mix_share) < c.batch_size:
            die(f"mix_share={c.mix_share} takes {round(c.batch_size * c.mix_share)} of batch_size={c.batch_size} "
                f"windows from mix_data_dir: choose one that takes between 1 and {c.batch_size - 1}")
        mixed, _, mix_tokenizer = read_data(c.mix_data_dir)
        if json.loads(mix_tokenizer)["itos"] != itos:
            die(f"{c.mix_data_dir}: prepared with another tokenizer than {c.data_dir} (prepare it with "
                f"--tokenizer_paths {c.data_dir}/tokenizer.json)")
        if len(mixed["train"]) <= c.block_size + 1:
            die(f"{c.mix_data_dir}/train.bin holds {len(mixed['train'])} tokens, too few for block_size={c.block_size}")
        mix = mixed["train"], piece_heads(mixed["train"], itos) if c.anchor_header else None
        check_window_holds_header(c, c.mix_data_dir, [mix[1]])
    return splits, meta, tokenizer, heads, rules, mix


def check_window_holds_header(c, data_dir, heads):
    """One line and exit where a piece's header (START, style, tempo, meter, one inst per part), which every window
    begins with (anchor_header: get_batch), leaves a window of block_size no token of the piece to learn."""
    longest = max((int(h[1].max()) for h in heads if h is not None and len(h[1])), default=0)
    if longest >= c.block_size:
        die(f"block_size={c.block_size} is too short for {data_dir}: every window begins with its piece's header, "
            f"and one here is {longest} tokens (START, style, tempo, meter, one inst per part): wants block_size > "
            f"{longest} (or anchor_header=False)")


def check_schedule(c):
    """One line and exit where the learning-rate schedule cannot be what lr_at draws: a warm-up up to learning_rate,
    then a cosine decay down to min_lr, ending at lr_decay_iters."""
    if c.min_lr > c.learning_rate:
        die(f"min_lr={c.min_lr} is above learning_rate={c.learning_rate}: the rate decays from learning_rate down to "
            f"min_lr: wants min_lr <= learning_rate")
    if c.warmup_iters > c.lr_decay_iters:
        die(f"warmup_iters={c.warmup_iters} ends after lr_decay_iters={c.lr_decay_iters}: the decay follows the "
            f"warm-up: wants warmup_iters <= lr_decay_iters")


def compiled_gap(model, compiled, splits, c, env, heads):
    """How far the compiled model's gradients are from eager's on two validation windows: ||g_compiled - g_eager||
    over ||g_eager||, all parameters together, in eval mode (no dropout, no MoE load counted). On one H200 with
    torch 2.11, compile returned zero gradients below the final RMSNorm (BENCHMARKS.md): the run would have trained
    the embeddings alone; bf16 rounding alone gives about 0.01 (bench/check_compile.py)."""
    starts = draw_starts(len(splits["val"]), c.block_size, 2, torch.Generator().manual_seed(0), heads["val"])
    x, y = get_batch(splits["val"], c.block_size, starts, env.device, heads["val"])
    model.eval()
    grads = []
    for m in (model, compiled):
        with env.ctx:
            _, loss = m(x, y)
        loss.backward()
        grads.append(torch.cat([p.grad.float().flatten() if p.grad is not None else torch.zeros(p.numel(),
                                device=p.device) for p in model.parameters()]))
        model.zero_grad(set_to_none=True)
    model.train()
    return (torch.linalg.vector_norm(grads[1] - grads[0]) / torch.linalg.vector_norm(grads[0])).item()


def build_model(c, ckpt, ckpt_path, resume, tokenizer, meta, env):
    """The model from scratch, resumed, or fine-tuned from another run (its vocabulary checked against the data's)."""
    if ckpt is not None:
        check_vocabulary(ckpt, ckpt_path, Path(c.out_dir) if resume else None, tokenizer, c, env.master)
    try:
        cfg = model_config(ckpt, ckpt_path) if ckpt else GPTConfig.of(c, vocab_size=meta["vocab_size"])
        if ckpt and not resume:  # e.g. a model trained on 512-token windows goes on at 1,536 (RoPE has no table)
            cfg = replace(cfg, **{k: getattr(c, k) for k in UNSHAPED_KEYS})
    except ValueError as e:
        die(e)
    torch.manual_seed(c.seed)  # a resumed run then takes its RNG states from the checkpoint
    model = GPT(cfg, verbose=env.master).to(env.device)
    if ckpt:
        try:
            load_weights(model, ckpt, ckpt_path)
        except ValueError as e:
            die(e)
    return model


def check_memory(model, c, env, resume):
    """Refuse, before any long work, a batch that cannot fit: what one step keeps for its backward, the gradients and
    a fresh AdamW's two moments (a resume has read them already), against the memory free now (on a CPU, with the
    swap's), where the model's weights already are. A lower bound: a step also holds passing tensors (the defaults'
    forward-backward in float32 on a CPU peaked at about 1.3 times this, their training step in bf16 at about twice),
    so a run refused here could never have trained, and one let through may still not fit."""
    if env.device_type == "cuda":
        free, where, share = torch.cuda.mem_get_info(env.device)[0], env.device, 1
    elif env.device_type == "cpu":  # (processes of one torchrun share the machine)
        free, where = psutil.virtual_memory().available + psutil.swap_memory().free, "this machine (with swap)"
        share = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    else:  # (another device's free memory is not known here, nor its random stream forked)
        return
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    need = (window_bytes(model, env.ctx, c.block_size) * c.batch_size + weights * (1 if resume else 3)) * share
    if need > free:
        die(f"batch_size={c.batch_size} windows of block_size={c.block_size} tokens need at least {need / 2**30:.1f} "
            f"GiB to train and {where} has {free / 2**30:.1f} GiB free: lower batch_size or block_size "
            f"(gradient_accumulation_steps keeps the tokens per step)")
    if env.master:
        print(f"memory: a step needs at least {need / 2**30:.1f} GiB; {where} has {free / 2**30:.1f} GiB free")


class RunFolder:
    """The run folder, opened by the master process: self-contained (config, tokenizer, metrics, TensorBoard,
    checkpoints), and on resume its logs go on from the checkpoint's step. A fresh run (asked for with --overwrite
    where one was) keeps none of the old run's weights or curves."""

    def __init__(self, out_dir, resume, iter_num, run_config, meta, tokenizer):
        self.out_dir, self.tokenizer = out_dir, tokenizer
        writable_dir(out_dir, "--out_dir")
        clean_stale(out_dir)
        if not resume:
            for name in WEIGHT_FILES:
                (out_dir / name).unlink(missing_ok=True)
        write_json(out_dir / "config.json", {**run_config, "data_meta": meta})
        atomic_write(out_dir / "tokenizer.json", tokenizer)
        metrics = out_dir / "metrics.jsonl"
        kept = [line for row, line in (read_jsonl(metrics, "iter") if resume else [])
                if row["iter"] <= iter_num]  # all written before the checkpoint
        atomic_write(metrics, "".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter
        if not resume:
            shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
        self.writer = SummaryWriter(out_dir / "tensorboard", purge_step=iter_num if resume else None)

    def log(self, **row):
        """A row of metrics.jsonl, its numbers also to TensorBoard."""
        try:
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            die(f"could not append to {self.out_dir}/metrics.jsonl ({why_not_written(e)}); the run stops at step "
                f"{row['iter']}: {self.out_dir}/checkpoint.pt holds its last evaluated step")
        for k, v in row.items():
            if k != "iter" and isinstance(v, (int, float)):
                self.writer.add_scalar(k, v, row["iter"])

    def save(self, name, state):
        save_checkpoint(self.out_dir / name, with_checksums(state, self.tokenizer))

    def close(self):
        self.writer.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overwrite", action="store_true",
                        help="start from scratch in an --out_dir that already holds a trained run, deleting it")
    parser.add_argument("--export", metavar="DEST", help="write a weights-only bf16 copy of --out_dir to DEST and exit")
    c = configurator.cli(parser, TRAIN_KEYS, argv)
    out_dir = Path(c.out_dir)
    if c.export:
        return export(out_dir, Path(c.export), c.overwrite)
    check_schedule(c)
    ckpt, ckpt_path, resume = resolve_source(c, out_dir)
    env = setup_device(c, ckpt["model_args"]["n_embd"] if ckpt else c.n_embd)
    splits, meta, tokenizer, heads, rules, mix = load_data(c)
    if resume:
        check_split(c, out_dir, meta)
    model = build_model(c, ckpt, ckpt_path, resume, tokenizer, meta, env)
    check_memory(model, c, env, resume)
    optimizer = model.configure_optimizers(c.weight_decay, c.learning_rate, (c.beta1, c.beta2), env.device_type)
    scaler = torch.amp.GradScaler(env.device_type, enabled=env.dtype == torch.float16)
    sampler = torch.Generator().manual_seed(c.seed)  # all ranks draw the same global batch, each takes its part
    iter_num, best_val, bad_steps = 0, float("inf"), 0
    if resume:
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        iter_num, best_val = ckpt["iter_num"], ckpt["best_val_loss"]
        sampler.set_state(ckpt["rng"]["sampler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if env.device_type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
    train_model = torch.compile(model) if c.compile else model
    if c.compile and (gap := compiled_gap(model, train_model, splits, c, env, heads)) > 0.1:
        die(f"--compile=True: the compiled model's gradients are {gap:.0%} off eager's on two validation windows "
            f"(torch {torch.__version__} on {env.device}), so it would not train this model: leave --compile off")
    if env.ddp:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=None if env.device == "cpu" else [env.device])
    run_config = configurator.pick(c, TRAIN_KEYS)
    run = RunFolder(out_dir, resume, iter_num, {**run_config, "model_args": model_args(model.cfg)}, meta,
                    tokenizer) if env.master else None

    def state():
        cuda_rng = torch.cuda.get_rng_state() if env.device_type == "cuda" else None
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "model_args": model_args(model.cfg), "iter_num": iter_num, "best_val_loss": best_val,
                "config": run_config, "rng": {"sampler": sampler.get_state(), "torch": torch.get_rng_state(),
                                              "cuda": cuda_rng}}

    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    micro = c.gradient_accumulation_steps // env.world
    n_mix = round(c.batch_size * c.mix_share) if mix else 0  # rows of each micro-batch from the mixed-in data
    tokens_per_iter = c.gradient_accumulation_steps * c.batch_size * c.block_size
    bar = tqdm(total=c.max_iters, initial=iter_num, desc="train", unit="step", disable=not env.master or None)
    t_last, it_last = time.perf_counter(), iter_num
    resumed_at = iter_num if resume else None
    while True:
        # a resumed run already has its step's evaluation and checkpoint
        if (iter_num % c.eval_interval == 0 or iter_num == c.max_iters) and iter_num != resumed_at:
            losses = evaluate(model, splits, c, env.device, env.ctx, heads)
            if env.master:
                run.log(iter=iter_num, train_loss=losses["train"], val_loss=losses["val"],
                        val_bits_per_token=losses["val"] / math.log(2))
                best_val = min(best_val, losses["val"])
                run.save("checkpoint.pt", state())
                if best_val == losses["val"] and not (c.rule_weight or c.mix_share):  # (the rules' penalty and
                    run.save("best.pt", state())  # another data's windows are meant to cost some: the latest is the run's)
                bar.write(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
                          f"(untrained: ln(vocab) = {math.log(model.cfg.vocab_size):.2f})")
        if iter_num >= c.max_iters:
            break
        lr = lr_at(iter_num, c)
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = draw_starts(len(splits["train"]), c.block_size, c.gradient_accumulation_steps * c.batch_size, sampler,
                             heads["train"], c.piece_start_share, rules[0] if rules else None, c.rule_share)
        mixed = draw_starts(len(mix[0]), c.block_size, c.gradient_accumulation_steps * n_mix, sampler, mix[1],
                            c.piece_start_share) if n_mix else []
        loss_sum, rule_sum = torch.zeros((), device=env.device), torch.zeros((), device=env.device)
        for m in range(micro):
            first = (env.rank * micro + m) * c.batch_size
            mine = starts[first:first + c.batch_size - n_mix]
            x, y = get_batch(splits["train"], c.block_size, mine, env.device, heads["train"])
            if n_mix:
                at = (env.rank * micro + m) * n_mix
                x_mix, y_mix = get_batch(mix[0], c.block_size, mixed[at:at + n_mix], env.device, mix[1])
                x, y = torch.cat([x, x_mix]), torch.cat([y, y_mix])
            if env.ddp:
                train_model.require_backward_grad_sync = m == micro - 1
            with env.ctx:
                logits, loss = train_model(x, y)
            if rules:
                forbidden = rule_targets(rules, mine, c.block_size, logits.size(-1), env.device, heads["train"])
                forbidden = torch.cat([forbidden, forbidden.new_zeros((n_mix, *forbidden.shape[1:]))])  # none mixed
                rule_loss = rule_penalty(logits, forbidden, y)
                rule_sum += rule_loss.detach() / micro
                loss = loss + c.rule_weight * rule_loss
            loss_sum += loss.detach() / micro
            scaler.scale(loss / micro).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip or float("inf"))
        if env.ddp:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
            model.sync_moe_load()
        iter_num += 1
        if not (torch.isfinite(loss_sum) and torch.isfinite(grad_norm)):
            bad_steps += 1
            optimizer.zero_grad(set_to_none=True)
            scaler.update()
            model.discard_moe_load()
            if env.master:
                bar.write(f"step {iter_num}: loss {loss_sum.item()}, grad norm {grad_norm.item()}: step skipped")
            if bad_steps >= c.max_bad_steps:
                die(f"{bad_steps} NaN/inf losses in a row at step {iter_num}: stopping; "
                    f"{out_dir}/checkpoint.pt holds the last good state")
            continue
        bad_steps = 0
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        load = model.update_moe_biases()
        bar.update()
        if env.master and iter_num % c.log_interval == 0:
            now = time.perf_counter()
            dt, t_last, it_last = (now - t_last) / (iter_num - it_last), now, iter_num  # fewer steps after a resume
            lm, balance = (v.item() for v in model.last_loss_parts)
            row = dict(iter=iter_num, loss=loss_sum.item(), lm_loss=lm, balance_loss=balance,
                       **({"rule_loss": rule_sum.item()} if rules else {}), lr=lr,
                       grad_norm=grad_norm.item(), tokens_per_s=tokens_per_iter / dt)
            if (mfu := model.estimate_mfu(tokens_per_iter, dt)) is not None:
                row["mfu"] = mfu
            row.update({f"expert_load/layer{i}/expert{e}": float(v) for i, layer in enumerate(load)
                        for e, v in enumerate(layer)})
            run.log(**row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:,.0f}")
        if stop:
            if env.master:
                run.save("checkpoint.pt", state())
                bar.write(f"signal {stop[0]}: saved {out_dir}/checkpoint.pt at step {iter_num}; "
                          f"resume with --init_from=resume")
            break
    bar.close()
    if run:
        run.close()
    if env.ddp:
        dist.destroy_process_group()
    if stop:  # stopped by a signal: the checkpoint is saved, but the run did not finish
        sys.exit(128 + stop[0])


if __name__ == "__main__":
    batch.main(main)
