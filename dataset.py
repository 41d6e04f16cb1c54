"""The prepared dataset, written and read: train.bin / val.bin (uint16 token ids, pieces back to back) and meta.json,
the split by piece (and the names of augmented copies, which map to their piece), and training windows drawn from
the memory-mapped tokens. prepare.py writes it, train.py, evaluate.py and the benchmarks read it."""
import hashlib
import json
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import psutil
import torch
from tqdm import tqdm

from batch import die, read_text, recover
from encoding_decoding import (HEADER, START, FirstEdition, check_edition, given_variant, kind, text_to_tokens,
                               validate)

VARIANT = re.compile(r"^(?P<piece>.*)__p[+-]\d+_v[+-]\d+(_t[+-]\d+)?$")  # piece_id reads the piece with this


def variant_name(pitch, velocity, tempo=0):
    return f"__p{pitch:+d}_v{velocity:+d}" + (f"_t{tempo:+d}" if tempo else "")


META_VERSION = 2  # 2: the grammar's second edition (parts, bar lines)


def piece_id(path, root):
    """data/text/music21/bach/bwv66.6.txt -> music21/bach/bwv66.6; an augmented copy maps to its original."""
    stem = path.relative_to(root).with_suffix("").as_posix()
    return m["piece"] if (m := VARIANT.match(stem)) else stem


def in_val(pid, seed, val_fraction):
    """A stable coin flip per piece: the same piece lands on the same side on every machine and every run."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:8], "big")
    return h / 2**64 < val_fraction


def split(pids, seed, val_fraction):
    """Sorted validation ids: the hashed share, and at least one piece so that validation is never empty."""
    val = sorted(p for p in pids if in_val(p, seed, val_fraction))
    if not val:
        val = [min(pids, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).digest())]
    return val


def write_split(path, files, tok, rejected, rss, given=None):
    """Stream pieces into `path` as uint16 ids; return the tokens, pieces and pieces with given material written, and
    the files written, in order. Broken pieces go to `rejected`. With `given` (share, seed, kinds), that share of the
    pieces, drawn by a hash of the seed and the file's name, is written with some of it given, one of `kinds` each
    (encoding_decoding.given_variant; a piece that no kind fits stays plain)."""
    n_tokens = n_pieces = n_given = 0
    written = []
    with open(path, "wb") as f:  # inside the hidden folder that is swapped in whole (a full disk: prepare says so)
        for i, p in enumerate(files):
            try:
                tokens = text_to_tokens(read_text(p))
            except ValueError as e:
                rejected.append({"file": str(p), "reason": str(e)})
                continue
            try:
                check_edition(tokens, p)
            except FirstEdition as e:  # a folder of the first edition: one line, not a rejected file per piece
                die(e)
            if err := validate(tokens, tok.spec):
                rejected.append({"file": str(p), "reason": f"token {err[0]}: {err[1]}"})
                continue
            if given and in_val(Path(p).name, given[1], given[0]) and (variant := given_variant(  # the split's coin
                    tokens, tok.spec, random.Random(f"{given[1]}:{Path(p).name}"), given[2])) is not None:
                tokens = variant
                n_given += 1
            np.asarray(tok.encode(tokens), dtype=np.uint16).tofile(f)
            n_tokens, n_pieces = n_tokens + len(tokens), n_pieces + 1
            written.append(p)
            if i % 256 == 0:
                rss[0] = max(rss[0], psutil.Process().memory_info().rss)
    return n_tokens, n_pieces, n_given, written


def read_data(data_dir):
    """Memory-mapped train/val token arrays, checked against meta.json."""
    data_dir = recover(data_dir)
    if not (data_dir / "meta.json").is_file():
        die(f"{data_dir}: no meta.json here (run prepare.py first, or point --data_dir at its output)")
    try:
        meta = json.loads((data_dir / "meta.json").read_text())
        sha, counts = meta["tokenizer"]["sha256"], {split: int(meta[split]["tokens"]) for split in ("train", "val")}
        int(meta["vocab_size"])
        version = meta.get("version")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        die(f"{data_dir}/meta.json is not a whole meta file of prepare.py (truncated or corrupt? rerun prepare.py)")
    if version != META_VERSION:
        die(f"{data_dir}: prepared by an earlier version of this code (meta.json version {version!r}, the grammar's "
            f"first edition): re-encode the music (encode_all.py) and rerun the pipeline up to prepare.py")
    tokenizer = (data_dir / "tokenizer.json").read_bytes() if (data_dir / "tokenizer.json").is_file() else b""
    if hashlib.sha256(tokenizer).hexdigest() != sha:
        die(f"{data_dir}/tokenizer.json is missing or is not the one meta.json names (rerun prepare.py)")
    if (n := len(json.loads(tokenizer)["itos"])) != meta["vocab_size"]:
        die(f"vocab mismatch: {data_dir}/meta.json says {meta['vocab_size']} tokens, its tokenizer.json has {n} "
            f"(rerun prepare.py)")
    splits = {}
    for split, n in counts.items():
        path = data_dir / f"{split}.bin"
        if not path.is_file() or path.stat().st_size != 2 * n:
            die(f"{path}: missing or not {n} uint16 tokens as meta.json says")
        splits[split] = np.memmap(path, dtype=np.uint16, mode="r")
    return splits, meta, tokenizer


def piece_heads(data, itos):
    """(offsets, lengths) of every piece's START and the header after it, its parts included (length 1 where a
    piece has none)."""
    heads = np.flatnonzero(np.asarray(data) == itos.index(START))
    is_header = np.array([kind(t) in HEADER + ("inst",) for t in itos])
    length = np.ones(len(heads), dtype=np.int64)
    for j in range(1, len(HEADER) + sum(kind(t) == "inst" for t in itos) + 1):
        at = np.minimum(heads + j, len(data) - 1)
        length += (length == j) & (heads + j < len(data)) & is_header[np.asarray(data[at], dtype=np.int64)]
    return heads, length


def write_rules(path, data, tok, styles, scale="none"):
    """The rules' tokens of train.bin (`data`): each training piece of `styles` stepped through its style's rules of
    part writing (controls.style_rules) as the sampler holds them (mask.rule_breaks); where they forbid some tokens
    and the piece keeps them, its position in `data` and what they forbid (packed bits over the vocabulary), saved as
    one .npz of two arrays. With `scale` "used" or "key", the piece's own scale among them (own_scale). Returns
    {style: [pieces, positions kept, positions where the piece breaks the rule]}."""
    from controls import style_rules  # the sampler's controls and mask: only this step of prepare.py needs them
    from mask import rule_breaks
    heads = np.flatnonzero(np.asarray(data) == tok.stoi[START])
    ends = np.append(heads[1:], len(data))
    styles_at = np.asarray(data[np.minimum(heads + 1, len(data) - 1)])
    positions, forbidden, counts = [], [], {}
    for style in styles:
        picked = np.flatnonzero(styles_at == tok.stoi[f"style:{style}"])
        pieces = [np.asarray(data[heads[k]:ends[k]], dtype=np.int64).tolist() for k in picked]
        with tqdm(total=len(pieces), desc=f"rules of {style}", unit="piece", disable=None) as bar:  # (minutes a style)
            found = rule_breaks(tok, pieces, style_rules(style), progress=bar.update)
        if scale != "none":  # (a piece with drums, whose notes are sounds, not pitches, is left as it was)
            pc, drums = pitch_classes(tok), tok.stoi.get("inst:drums")
            found = [f if drums in piece else own_scale(pc, piece, *f, key=scale == "key")
                     for piece, f in zip(pieces, found)]
        for k, (at, packed, broken) in zip(picked, found):
            positions.append(heads[k] + at[~broken])
            forbidden.append(packed[~broken])
        counts[style] = [len(picked), sum(int((~b).sum()) for _, _, b in found),
                         sum(int(b.sum()) for _, _, b in found)]
        print(f"  rules of {style}: {len(picked)} pieces, {counts[style][1]:,} tokens where they forbid some "
              f"({counts[style][2]:,} more where the piece breaks them, left out)")
    positions = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
    forbidden = np.concatenate(forbidden) if forbidden else np.zeros((0, (tok.vocab_size + 7) // 8), dtype=np.uint8)
    order = np.argsort(positions, kind="stable")
    with open(path, "wb") as f:
        np.savez(f, positions=positions[order], forbidden=forbidden[order])
    return counts


def pitch_classes(tok):
    """Per token id: the pitch class of a note token (n), -1 for every other token."""
    return np.array([int(t[1:]) % 12 if kind(t) == "n" else -1 for t in tok.itos])


def own_scale(pitch_class, piece, at, packed, broken, key=False):
    """rule_breaks' (positions, packed forbidden, broken) of one piece (token ids from START) with its own scale among
    the rules, as if it were drawn with --scale the pitch classes it uses: at every token where it writes a pitch or
    its rules forbid one, the pitches of every other pitch class are forbidden too. The rules' penalty then takes a
    forbidden fifth's probability to the piece's own notes, not to chromatic ones. With `key`, the scale is its key
    signature's nine classes (key_classes) and whatever else it uses, the same for a major key and its relative minor
    (models/corpus/MODEL.md, "The piece's own scale among the rules" and "Round 14"). `pitch_class`: pitch_classes
    of the tokenizer."""
    x, is_n = np.asarray(piece), pitch_class >= 0
    written = pitch_class[x[is_n[x]]]  # the pitch class of each note it writes
    used = np.unique(written)
    scale = np.union1d(used, key_classes(np.bincount(written, minlength=12))) if key else used
    foreign = is_n & ~np.isin(pitch_class, scale)  # (V,) the pitches of the scale's other classes
    if not is_n[x].any() or not foreign.any():  # no pitches, or all twelve: nothing to add
        return at, packed, broken
    new = np.setdiff1d(np.flatnonzero(is_n[x]), at)  # the pitches it writes where the rules forbid nothing
    at = np.concatenate([at, new])
    rows = np.concatenate([np.unpackbits(packed, axis=1, count=len(is_n)).astype(bool),
                           np.zeros((len(new), len(is_n)), dtype=bool)])
    rows[is_n[x[at]] | (rows & is_n).any(1)] |= foreign
    order = np.argsort(at)
    return at[order], np.packbits(rows[order], axis=1), np.concatenate([broken, np.zeros(len(new), dtype=bool)])[order]


MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])


def key_classes(counts):
    """The nine pitch classes of the key signature that holds most of the notes (`counts`: notes per pitch class):
    its major scale and its relative minor's raised sixth and seventh (in C: C D E F G A B with F# and G#), which a
    major key and its relative minor share, so that a rule made of them favours neither mode."""
    holds = [counts[(MAJOR + t) % 12].sum() for t in range(12)]
    t = int(np.argmax(holds))
    return np.sort(np.append(MAJOR + t, [t + 6, t + 8]) % 12)


def read_rules(data_dir, meta, n_train):
    """(positions, packed forbidden tokens) of the data's train_rules.npz (write_rules), checked; one line and exit
    where the data has none or it is damaged."""
    path = Path(data_dir) / "train_rules.npz"
    if not meta.get("rules") or not path.is_file():
        die(f"{data_dir}: no rules of part writing in this data (train_rules.npz): prepare it with --rule_styles "
            f"(e.g. bach,fiddle) to train with rule_weight")
    try:
        with np.load(path, allow_pickle=False) as z:
            positions, forbidden = z["positions"], z["forbidden"]
        ok = (positions.ndim == 1 and forbidden.shape == (len(positions), (meta["vocab_size"] + 7) // 8)
              and (not len(positions) or (positions[0] >= 0 and positions[-1] < n_train
                                          and (np.diff(positions) > 0).all())))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        ok = False
    if not ok:
        die(f"{path} is not the rules file prepare.py wrote for this data (truncated or corrupt? rerun prepare.py)")
    return positions, forbidden


def window_heads(starts, heads):
    """Per window start: (h, n, skip), the header in front of it (its piece's START at h, n tokens; n = 0 where the
    window starts inside its piece's header or from its start, or without `heads`) and the targets that are the
    header's (n, or 0 where the window starts right after the header: then it is the piece as it is)."""
    out = []
    for s in starts:
        k = np.searchsorted(heads[0], s, side="right") - 1 if heads is not None else -1
        h, n = (int(heads[0][k]), int(heads[1][k])) if k >= 0 else (s, 0)
        out.append((s, 0, 0) if s < h + n else (h, n, n if s > h + n else 0))
    return out


def rule_targets(rules, starts, block_size, vocab_size, device, heads=None):
    """(len(starts), block_size, vocab_size) bool: what the rules forbid at each target of get_batch's windows (none
    at the header in front)."""
    positions, forbidden = rules
    out = np.zeros((len(starts), block_size, (vocab_size + 7) // 8), dtype=np.uint8)
    for row, (s, (h, n, skip)) in enumerate(zip(starts, window_heads(starts, heads))):
        base = s - n + 1  # target t is data[base + t]; the first `skip` are the header's
        lo, hi = np.searchsorted(positions, [base + skip, base + block_size])
        out[row, positions[lo:hi] - base] = forbidden[lo:hi]
    bits = np.unpackbits(out, axis=2, count=vocab_size).astype(bool)
    return torch.from_numpy(bits).to(device)


def get_batch(data, block_size, starts, device, heads=None):
    """Input and target windows (len(starts), block_size) starting at the given token offsets. With `heads` (from
    piece_heads), a window that starts past its piece's header begins with that START and header instead: every
    window then knows its piece's style, tempo and meter, as a sample keeps its own through GPT.generate's window
    slide. Such a header is context, not text to learn: its targets and the jump from it into the middle of the piece
    take no loss (-1). A long piece would otherwise teach its header far more often than a short one, and a header's
    parts one after another without the bar line that ends them (a model so taught names parts without end); the
    header is learnt where a piece begins (draw_starts' piece starts)."""
    rows, skips = [], []
    for s, (h, n, skip) in zip(starts, window_heads(starts, heads)):
        rows.append(np.concatenate([data[h:h + n], data[s:s + block_size + 1 - n]]).astype(np.int64))
        skips.append(skip)
    xy = torch.from_numpy(np.stack(rows))
    x, y = xy[:, :-1], xy[:, 1:].clone()
    for row, n in enumerate(skips):
        y[row, :n] = -1
    return x.to(device), y.to(device)


def draw_starts(n_tokens, block_size, count, generator, heads=None, share=0.0, near=None, near_share=0.0):
    """count window offsets, uniform over the tokens; with `heads` (from piece_heads), each is with probability
    `share` the START of a piece drawn uniformly instead, from which the style after START is learnt as often as
    each style opens a piece (get_batch takes no loss on the style in front of other windows); then each is with
    probability `near_share` a window that holds one of the token positions `near` (drawn uniformly), anywhere in it."""
    last = n_tokens - block_size - 1
    starts = torch.randint(last, (count,), generator=generator)
    if heads is not None and share > 0:
        first = torch.from_numpy(heads[0][heads[0] < last])
        pick = first[torch.randint(len(first), (count,), generator=generator)]
        starts = torch.where(torch.rand(count, generator=generator) < share, pick, starts)
    if near is not None and len(near) and near_share > 0:
        at = torch.from_numpy(near[torch.randint(len(near), (count,), generator=generator).numpy()])
        around = (at - 1 - torch.randint(block_size, (count,), generator=generator)).clamp(0, last - 1)
        starts = torch.where(torch.rand(count, generator=generator) < near_share, around, starts)
    return starts.tolist()
