"""A run's model on real pieces, teacher-forced as training windows show them (START and the header in front of
each window after the first): nats per token (model_nats, evaluate.py's likelihood), bits per token (window_bits), a
piece's last bar in several views (cadence_bits, --cadence), whether it copies a bar it has heard (repeat_bits,
--repeats) and its next-token probabilities (next_token_probs, --rules). evaluate.py reports them."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from encoding_decoding import kind


def training_windows(n, keep, block):
    """(i, h) for each window a piece of n tokens is read in as training reads it: tokens i .. i + block - h - 1
    after the piece's first h tokens (START and its header, `keep`; none in the first window, h = 0)."""
    i = 0
    while i < n - 1:
        h = keep if i else 0
        yield i, h
        i += block - h


@torch.no_grad()
def model_nats(model, pieces, keeps, device, batch_size=32, allowed=None, counted=None):
    """Negative log-likelihood of each piece's tokens after START, in windows of block_size: each window after a
    piece's first starts afresh with the piece's first keeps[k] tokens (START and its header, as sampling keeps
    them) in front, so long pieces are scored with at most block_size tokens of context. With `allowed` (per piece,
    (len - 1, V) bool: what the sampler's mask allows at each position, from mask_rows) the probabilities are the
    sampler's, renormalized over what it allows (a token the mask forces costs nothing); with `counted` (per
    piece, (len - 1,) bool) only those positions are summed."""
    B = model.cfg.block_size
    windows = []
    for k, p in enumerate(pieces):
        for i, h in training_windows(len(p), keeps[k], B):
            x = np.concatenate([p[:h], p[i:i + B - h]])
            y = p[i + 1:i + B - h + 1]
            if counted is not None:
                y = np.where(counted[k][i:i + len(y)], y, -1)
            windows.append((k, x, np.concatenate([np.full(h, -1), y]), i, h))
    total = np.zeros(len(pieces))
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        x = torch.zeros(len(chunk), B, dtype=torch.long)
        y = torch.full((len(chunk), B), -1, dtype=torch.long)
        for j, (_, a, b, _, _) in enumerate(chunk):
            x[j, :len(a)] = torch.from_numpy(a.astype(np.int64))
            y[j, :len(b)] = torch.from_numpy(b.astype(np.int64))
        logits, _ = model(x.to(device))
        logits, y = logits.float(), y.to(device)
        if allowed is not None:
            ok = torch.ones_like(logits, dtype=torch.bool)
            for j, (k, a, _, at, h) in enumerate(chunk):
                rows = allowed[k][at:at + len(a) - h]
                ok[j, h:h + len(rows)] = rows
            ok |= ~ok.gather(2, y.clamp(min=0)[..., None])  # a token the mask would not draw: scored unmasked
            logits = logits.masked_fill(~ok, float("-inf"))
        nll = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-1, reduction="none")
        np.add.at(total, [k for k, *_ in chunk], nll.sum(1).cpu().numpy())
    return total


CADENCE_VIEWS = (64, 128, 256)  # tokens before a piece's end that --cadence shows the model, besides a whole window


def bar_spans(names):
    """Each bar of a piece's tokens (names, from START to END) as (its bar line's index, the next bar line's or the
    END's, its notes): a bar is its bar line and every token up to the next."""
    lines = [i for i, t in enumerate(names) if kind(t) == "bar"] + [len(names) - 1]
    return [(a, b, sum(kind(t) == "n" for t in names[a:b])) for a, b in zip(lines, lines[1:])]


@torch.no_grad()
def window_bits(model, ids, keep, device):
    """(len(ids),) tensor: [i] the bits of token i (0 for START) teacher-forced as training windows show the piece
    (training_windows: START and the header, `keep` tokens, in front after the first)."""
    ids, window = torch.as_tensor(ids, device=device), model.cfg.block_size
    out = torch.zeros(len(ids), device=device)
    for i, h in training_windows(len(ids), keep, window):
        y = ids[i + 1:i + window - h + 1]
        x = torch.cat([ids[:h], ids[i:i + len(y)]])
        got = F.cross_entropy(model(x[None])[0][0].float(), torch.cat([ids[1:h + 1], y]), reduction="none")
        out[i + 1:i + 1 + len(y)] = got[h:] / math.log(2)
    return out


@torch.no_grad()
def cadence_bits(model, itos, ids, keep, device):
    """Teacher-forced bits per note of one piece (token ids from START, read by `itos`; `keep` tokens of START and
    header): {view: its last bar's bits per note} where the model sees START and the header, then the `view` tokens
    before the piece's end ("N tokens" of CADENCE_VIEWS, "a window": block_size - keep) and the whole piece
    ("whole"; "fits": whether it fits one window); and "others": its other bars' mean, each bar seen as training
    windows show it (consecutive windows of block_size, each after the first with START and header in front, as
    training_windows). A bar's bits: its bar line and every token up to the next bar line (or the END, not
    counted), over its notes. ValueError for a piece without notes."""
    ids, window = torch.as_tensor(ids, device=device), model.cfg.block_size
    bits = lambda x, y: F.cross_entropy(model(x[None])[0][0].float(), y, reduction="none") / math.log(2)
    spans = [(a, b, n) for a, b, n in bar_spans([itos[t] for t in ids.tolist()]) if n]
    if not spans:
        raise ValueError("no notes in it")

    def tail(view):  # the bits of tokens len - view .. len - 1 (0-based), with START and the header in front
        start = max(keep, len(ids) - 1 - view)
        got = bits(torch.cat([ids[:keep], ids[start:-1]]), torch.cat([ids[1:keep + 1], ids[start + 1:]]))[keep:]
        return start, got  # got[j]: the bits of token start + 1 + j

    (a, b, n), out = spans[-1], {}
    for view, name in [(v, f"{v} tokens") for v in CADENCE_VIEWS] + [(window - keep, "a window")]:
        start, got = tail(view)
        if a > start:  # the bar line in view
            out[name] = float(got[a - start - 1:b - start - 1].sum()) / n
    out["whole"] = float(bits(ids[:-1], ids[1:])[a - 1:b - 1].sum()) / n  # (past a window: positions it was never
    out["fits"] = len(ids) <= window                                     # trained at)
    seen = window_bits(model, ids, keep, device)  # seen[i]: the bits of token i in the training windows
    others = [float(seen[c:d].sum()) / m for c, d, m in spans[:-1]]
    out["others"] = float(np.mean(others)) if others else None
    return out


COPIED_BARS = 4  # --repeats writes a piece's bars 2 to 5 again as its bars 6 to 9


def repeat_bits(model, itos, ids, keep, device, copied=COPIED_BARS):
    """Can a run copy? Teacher-forced bits of one piece (token ids from START, read by `itos`; `keep` tokens of
    START and header), as training windows show it (window_bits), each as (bits, notes): "repeated", of the
    bars that repeat an earlier bar note for note (a bar: its bar line and every token up to the next; its notes'
    tokens the same as the earlier bar's), and "others", of the rest; then, of the piece with its bars 2 to
    1 + `copied` written again as the next `copied` bars (their own bar lines kept, the bars after them as they
    were), "first written", those bars, and "written again", their copies, which a model that copies pays little
    for (None where the piece has fewer than 2 + 2 * copied bars). ValueError for a piece without notes."""
    bars = lambda ids: bar_spans([itos[t] for t in ids])
    bits = lambda ids: window_bits(model, ids, keep, device).tolist()  # [i]: the bits of token i
    total = lambda b, spans: (sum(sum(b[x:y]) for x, y, _ in spans), sum(n for _, _, n in spans))
    ids, every = list(ids), bars(ids)
    if not any(n for _, _, n in every):
        raise ValueError("no notes in it")
    b, seen, repeated, others = bits(ids), set(), [], []
    for a, z, n in (s for s in every if s[2]):
        body = tuple(ids[a + 1:z])
        (repeated if body in seen else others).append((a, z, n))
        seen.add(body)
    out = {"repeated": total(b, repeated) if repeated else None, "others": total(b, others)}
    if len(every) < 2 + 2 * copied:
        return {**out, "first written": None, "written again": None}
    again = ids[:every[1 + copied][0]]
    for k in range(1 + copied, 1 + 2 * copied):  # bar k's line, then bar k - copied's notes
        again += [ids[every[k][0]]] + ids[every[k - copied][0] + 1:every[k - copied][1]]
    again += ids[every[1 + 2 * copied][0]:]
    b, every = bits(again), bars(again)
    return {**out, "first written": total(b, every[1:1 + copied]),
            "written again": total(b, every[1 + copied:1 + 2 * copied])}


@torch.no_grad()
def next_token_probs(model, ids, keep, device):
    """(len(ids), V): row t is the probability of each token at position t (row 0 unused), teacher-forced as training
    windows show the piece (training_windows: START and the header, `keep` tokens, in front after the first)."""
    ids, window = torch.as_tensor(ids, device=device), model.cfg.block_size
    out = torch.zeros(len(ids), model.cfg.vocab_size, device=device)
    for i, h in training_windows(len(ids), keep, window):
        x = torch.cat([ids[:h], ids[i:i + window - h]])
        probs = model(x[None])[0][0].float().softmax(-1)[h:]  # row j predicts token i + 1 + j
        n = min(len(probs), len(ids) - i - 1)
        out[i + 1:i + 1 + n] = probs[:n]
    return out
