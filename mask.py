"""The sampler's mask: the grammar and a request's controls as one boolean mask over the next token, on the device
(GrammarMask, the allowed_fn that GPT.generate calls before each sampled token), and draw(), the one way samples are
drawn: sample.py writes them, evaluate.py measures the same draws.
"""
import torch

from controls import Controls
from encoding_decoding import (AHEAD, AHEAD_STATES, DRUMS, END, GRAMMAR, HEADER, MORE, START, as_note, bar_steps, kind,
                               value)


# Aarden's key profiles (the weights of the Essen folk songs' pitch classes above a major and a minor tonic, as
# Humdrum's keycor and music21's default key analysis use them): on 60 Bach chorales, the final chord is the tonic
# triad of the key they find in 51, of the key Krumhansl and Kessler's profiles find in 43
KEY_PROFILES = ((17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587, 0.291248, 22.062, 0.145624, 8.15494, 0.232998,
                 4.95122),
                (18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362, 0.702494, 18.6161, 4.56621, 1.93186, 7.37619,
                 1.75623))


def estimated_triads(weights, holds=-1):
    """(B, 12) durations per pitch class -> (B, 3) the tonic triads of their likeliest keys (Krumhansl and Schmuckler's
    method: the key whose profile correlates best with the durations; a major key on ties), among the keys whose
    triad holds the pitch class `holds` (a given melody's last note) where it is >= 0."""
    def standardized(x):
        x = x - x.mean(-1, keepdim=True)
        return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    profiles = torch.tensor(KEY_PROFILES, dtype=weights.dtype, device=weights.device)
    keys = torch.stack([profiles.roll(t, 1) for t in range(12)], 1).reshape(24, 12)  # C..B major, then C..B minor
    k = torch.arange(24, device=weights.device)
    tonic, minor = k % 12, (k >= 12).long()
    triads = torch.stack([tonic, (tonic + 4 - minor) % 12, (tonic + 7) % 12], 1)      # (24, 3)
    holds = torch.as_tensor(holds, device=weights.device).view(-1, 1)                 # (B or 1, 1)
    fits = (triads[None] == holds[..., None]).any(2) | (holds < 0)                   # (B or 1, 24)
    best = (standardized(weights) @ standardized(keys).T).masked_fill(~fits, float("-inf")).argmax(1)
    return triads[best]


def grammar_tables(itos):
    """The grammar as lookup tables over token ids, for the sampler's mask:
    (states, allowed, next_state) where allowed[s][i] says whether token id i may come in state s and
    next_state[s][i] is where it leads. After END only END is allowed, so a finished sequence can be padded with
    it."""
    states = list(GRAMMAR)
    kinds = [kind(t) for t in itos]
    allowed = [[k in GRAMMAR[s] or (s == "end" and k == END) for k in kinds] for s in states]
    next_state = [[states.index(GRAMMAR[s].get(k, "end")) for k in kinds] for s in states]
    return states, allowed, next_state


VALUED = ("n", "d", "v", "p", "pos", "bar", "meter", "tempo", "inst")  # the token kinds whose value the mask reads


def token_values(itos, spec):
    """Per token id, as lists: its kind's index in VALUED (-1 for others) and its number: the pitch of n, the steps
    of d, the velocity of v, the part of p, the step of pos, the bars left of bar (max_countdown + 1 for bar:more),
    the bar's steps of meter, the BPM of tempo, the program of inst (DRUMS for drums)."""
    kinds, numbers = [], []
    for t in itos:
        k, v = kind(t), value(t)
        kinds.append(VALUED.index(k) if k in VALUED else -1)
        numbers.append(int(t[1:]) if k in "ndvp" else int(v) if k == "pos" else
                       (spec.max_countdown + 1 if v == MORE else int(v)) if k == "bar" else
                       bar_steps(v, spec.sample_freq) if k == "meter" else float(v) if k == "tempo" else
                       (DRUMS if v == "drums" else int(v)) if k == "inst" else 0)
    return kinds, numbers


class GrammarMask:
    """allowed_fn for GPT.generate: the grammar and the sampling controls as one mask over the next token.

    Each sequence carries its grammar state, its parts (how many, which are drums), its meter and tempo, its bar
    count and countdown, the step of its bar and onset, the current part and pitch floor, and per part and pitch the
    step its latest note ends; every rule is a lookup or a comparison over (B, V) on the device, so rows of one batch
    may be in different states. Given tokens (a prompt, which GPT.generate takes as `forced`) are read like sampled
    ones; `given` names, per position, the kind of token a prompt has where the mask draws it (its bar lines).

    The countdown is kept: after bar:k comes bar:k-1, after bar:1 only the END (once something sounds in that bar;
    at once if a note has started on its last step), and no note outlasts the last bar. A length control
    (Controls.bars / .seconds, reckoned from the header's tempo and meter) sets the first bar line's count and holds
    the meter. On top, the mask keeps samples in the canonical form the training data has, so that decoding drops
    nothing: onsets rise within a bar, parts rise within an onset, pitches fall within a part, a key is not struck
    again in its part while it sounds, and a velocity is written where a part's changes (and at its first note)
    only. Where those leave a row nothing, it falls back to the grammar and the controls alone.

    With `material` (a Given), its notes are written where they sound and nothing else is: no onset passes a given
    note still to come, no bar line closes a bar that has one, the END waits for all of them, and each given note's
    part, pitch, duration and velocity are the only tokens allowed when it is due. Its blocks of look-ahead are
    forced token by token before the bar lines where they belong (encoding_decoding.notes_to_tokens). With a form
    (Controls.form), each row logs its notes, and a bar that repeats an earlier one writes that bar's again."""

    def __init__(self, tok, device, controls=Controls(), given=(), material=None):
        tensor = lambda x, **kw: torch.tensor(x, device=device, **kw)
        spec, itos = tok.spec, tok.itos
        states, allowed, next_state = grammar_tables(itos)
        self.allowed = tensor(allowed) & tensor(controls.token_mask(itos, spec))  # (S, V) bool
        self.next_state = tensor(next_state)                                      # (S, V) state index
        kinds, numbers = token_values(itos, spec)
        self.kind, self.number = tensor(kinds), tensor(numbers, dtype=torch.float64)
        self.value = self.number.long()
        is_ = lambda k: self.kind == VALUED.index(k)
        (self.is_n, self.is_d, self.is_v, self.is_p, self.is_pos, self.is_bar, self.is_meter, self.is_tempo,
         self.is_inst) = (is_(k) for k in VALUED)
        self.pitch_ok = tensor([kind(t) != "n" or controls.allows_pitch(int(t[1:])) for t in itos])
        forced = [tok.stoi[f"inst:{'drums' if i == DRUMS else i}"] for i in controls.instruments or ()]
        n_parts = controls.part_count()
        self.want_parts = n_parts or 1                              # the fewest parts a header may name
        self.most_parts = n_parts or spec.max_parts                 # the most
        self.forced_inst = tensor(forced + [-1] * (spec.max_parts + 1 - len(forced)))
        self.state_id = {s: i for i, s in enumerate(states)}
        self.end = tok.stoi[END]
        self.controls, self.spec, self.seen = controls, spec, 0
        self.more = spec.max_countdown + 1
        self.only_end = torch.arange(len(itos), device=device) == self.end
        # given material: per position, the kind of token a prompt has there ("bar": a bar line whose count the
        # mask draws), so the model fills nothing else in; a free length must leave room for the given bars
        self.given = {i: self.kind == VALUED.index(k) for i, k in enumerate(given) if k}
        if given:  # right after a prompt, no velocity token: it would change the prompt's last note
            self.given[len(given)] = self.kind != VALUED.index("v")
        self.min_bars = sum(k == "bar" for k in given)
        self.in_block = tensor([s in AHEAD_STATES for s in states])       # (S,) a block's states
        self.is_ahead = tensor([t == AHEAD for t in itos])
        self.material, self.planned = material, None
        self.triad = None if controls.triad is None else tensor(controls.triad)[None, :]  # (1, 3)
        self.g_weight, self.g_last = torch.zeros(12, dtype=torch.float64, device=device), -1
        if material is not None:
            self.set_material(material, tok, device)
        # form: each phrase's model (the first phrase of its letter)
        letters = (controls.form or "").upper()
        self.form = tensor([letters.index(c) for c in letters]) if letters else None

    def set_material(self, m, tok, device):
        """The given notes as (G + 1,) tensors (a last one that never comes), their keys, the free parts and span,
        and the blocks as a (bars, longest) tensor of token ids padded with -1."""
        tensor = lambda x, **kw: torch.tensor(x, device=device, **kw)
        notes, K = [as_note(n) for n in m.notes], self.spec.pitch_range[1] + 1
        never = 1 << 40
        self.g_start = tensor([n.start for n in notes] + [never])
        self.g_part, self.g_pitch = tensor([n.part for n in notes] + [-1]), tensor([n.pitch for n in notes] + [-1])
        self.g_dur, self.g_vel = tensor([n.dur for n in notes] + [-1]), tensor([n.vel for n in notes] + [-1])
        self.g_keys = tensor(sorted((n.start * self.spec.max_parts + n.part) * K + n.pitch for n in notes)
                             or [-1])
        self.free_part = tensor([k in m.free_parts for k in range(self.spec.max_parts + 1)])
        self.g_weight = torch.zeros(12, dtype=torch.float64, device=device).index_add_(
            0, self.g_pitch[:-1] % 12, self.g_dur[:-1].double())  # the given notes' durations per pitch class
        if notes:  # the pitch class of the top given note that starts last: the ending's triad holds it
            self.g_last = max((n.start, n.pitch) for n in notes)[1] % 12
        self.want_parts = max(self.want_parts, m.min_parts)
        if m.blocks is not None:
            width = max(map(len, m.blocks))
            self.blocks = tensor([[tok.stoi[t] for t in b] + [-1] * (width + 1 - len(b)) for b in m.blocks])

    def reset(self, batch_size, device):
        full = lambda v, *shape: torch.full((batch_size,) + shape, v, dtype=torch.long, device=device)
        self.state = full(self.state_id["begin"])
        self.n_parts, self.part, self.pitch = full(0), full(0), full(0)
        self.drum = torch.zeros(batch_size, self.spec.max_parts, dtype=torch.bool, device=device)
        self.meter, self.bar_len, self.header_bar = full(-1), full(bar_steps("4/4", self.spec.sample_freq)), full(0)
        self.bpm = torch.full((batch_size,), 120.0, dtype=torch.float64, device=device)
        self.bars, self.count, self.bar_start, self.pos = full(0), full(0), full(0), full(-1)
        self.floor, self.last_end = full(1 << 30), full(0)
        self.until = full(0, self.spec.max_parts, self.spec.pitch_range[1] + 1)
        self.vel = full(-1, self.spec.max_parts)  # each part's velocity so far (-1: none yet)
        # given material: the next given note, the blocks shown so far, the tokens since the latest block opened,
        # and whether the latest token closed a given note
        self.next_given, self.announced, self.block_pos = full(0), full(0), full(0)
        self.just_given = torch.zeros(batch_size, dtype=torch.bool, device=device)
        # form: each row's notes so far in the order written (bar, onset in it, part, pitch, steps), a spare last
        # column taking what is not a note, and how many there are
        if self.form is not None:
            self.log, self.n_log = full(-1, 5, 64), full(0)
        # voice leading: per part, the step and pitch of its latest onset, and the pitch of the note before it
        self.onset_at, self.onset_pitch, self.prev_pitch = (full(-1, self.spec.max_parts) for _ in range(3))
        # and the durations per pitch class of the pitched notes so far, the given ones' all from the start: the key
        self.pc_weight = self.g_weight.expand(batch_size, -1).clone()

    def consume(self, tok):
        """Advance every sequence by its tokens `tok` (B, n): one sampled token, or a whole prompt at once. Only the
        grammar state is stepped token by token; the rest are running sums and maxima, what the latest token of a
        kind says (read at its position), and per part and key the latest note's end."""
        n = tok.size(1)
        if n == 0:
            return
        positions, P = torch.arange(n, device=tok.device), self.spec.max_parts
        state, states = self.state, []
        for t in range(n):
            state = self.next_state[state, tok[:, t]]
            states.append(state)
        self.state = state
        body = ~self.in_block[torch.stack(states, 1)]  # (B, n): not inside a block of given material
        v, is_ = self.value[tok], lambda k: getattr(self, f"is_{k}")[tok] & body  # (B, n)

        def latest(where, value, old):  # (B, n): after each token, `value` at the latest position `where` holds
            if n == 1:
                return torch.where(where, value, old[:, None])
            at = torch.where(where, positions, -1).cummax(1).values
            return torch.where(at >= 0, value.gather(1, at.clamp(min=0)), old[:, None])

        def last_per_key(where, key, width):  # (B, width): the latest position of each key where `where`, or -1
            return torch.full((tok.size(0), width), -1, device=tok.device).scatter_reduce(
                1, key.clamp(0, width - 1), torch.where(where, positions, -1), "amax")

        inst, meter, bar, onset, part, note, dur = (is_(k) for k in ("inst", "meter", "bar", "pos", "p", "n", "d"))
        parts = self.n_parts[:, None] + inst.long().cumsum(1)           # parts named after each token
        drums = last_per_key(inst & (v == DRUMS), parts - 1, P) >= 0
        self.drum |= drums
        self.n_parts = parts[:, -1]
        bars = self.bars[:, None] + bar.long().cumsum(1)                 # bar lines after each token
        bar_len = latest(meter, v, self.bar_len)                         # after a bar line's meter: its length
        before = torch.cat([self.bar_len[:, None], bar_len[:, :-1]], 1)  # the length of the bar a bar line closes
        bar_start = self.bar_start[:, None] + torch.where(bar & (bars > 1), before, 0).cumsum(1)
        self.header_bar = latest(meter & (bars == 0), v, self.header_bar)[:, -1]
        self.meter, self.bar_len = latest(meter, tok, self.meter)[:, -1], bar_len[:, -1]
        self.bpm = latest(is_("tempo"), self.number[tok], self.bpm)[:, -1]
        self.bars, self.count, self.bar_start = bars[:, -1], latest(bar, v, self.count)[:, -1], bar_start[:, -1]
        pos = latest(bar | onset, torch.where(bar, -1, v), self.pos)
        clock = bar_start + pos.clamp(min=0)                             # the onset step after each token
        self.pos = pos[:, -1]
        part_now = latest(part, v, self.part)
        pitch_now = latest(note, v, self.pitch)
        self.floor = latest(bar | onset | part | note, torch.where(note, v, 1 << 30), self.floor)[:, -1]
        self.part, self.pitch = part_now[:, -1], pitch_now[:, -1]
        ends = clock + v                                                 # at a duration: its note's end
        K = self.until.size(2)
        key = part_now.clamp(max=P - 1) * K + pitch_now.clamp(0, K - 1)
        last = last_per_key(dur, key, P * K)
        until = self.until.view(tok.size(0), -1)
        self.until = torch.where(last >= 0, ends.gather(1, last.clamp(min=0)), until).view_as(self.until)
        self.last_end = torch.maximum(self.last_end, torch.where(dur, ends, 0).amax(1))
        last = last_per_key(is_("v"), part_now.clamp(max=P - 1), P)
        self.vel = torch.where(last >= 0, v.gather(1, last.clamp(min=0)), self.vel)
        if self.material is not None:  # a note is a given one where its onset, part and pitch are
            given = dur & torch.isin((clock * P + part_now) * K + pitch_now, self.g_keys)
            self.next_given = self.next_given + given.sum(1)
            self.just_given = given[:, -1]
        if self.form is not None:  # each note is logged at its duration
            while self.log.size(2) < self.seen // 2 + n + 1:  # (a note takes two tokens at least)
                self.log = torch.cat([self.log, torch.full_like(self.log, -1)], 2)
            spare = self.log.size(2) - 1
            slot = torch.where(dur, self.n_log[:, None] + dur.long().cumsum(1) - 1, spare)
            for row, x in zip(self.log.unbind(1), (bars, pos, part_now, pitch_now, v)):
                row.scatter_(1, slot, x)
            self.n_log = self.n_log + dur.sum(1)
        if self.controls.voice_leading:
            for t in range(n):  # each part's latest onset and the pitch before it: its first (highest) note there
                at, p = note[:, t], part_now[:, t].clamp(max=P - 1)[:, None]
                moved = at & (self.onset_at.gather(1, p)[:, 0] != clock[:, t])
                keep = lambda a, where, new: a.scatter_(1, p, torch.where(where, new, a.gather(1, p)[:, 0])[:, None])
                keep(self.prev_pitch, moved, self.onset_pitch.gather(1, p)[:, 0])
                keep(self.onset_pitch, moved, v[:, t])
                keep(self.onset_at, at, clock[:, t])
            pitched = dur & ~self.drum.gather(1, part_now.clamp(max=P - 1))
            if self.material is not None:  # (counted from the start)
                pitched &= ~given
            self.pc_weight.scatter_add_(1, pitch_now.clamp(min=0) % 12, torch.where(pitched, v, 0).double())
        ahead = self.is_ahead[tok]
        self.announced = self.announced + ahead.sum(1)
        last = torch.where(ahead, positions, -1).amax(1)
        self.block_pos = torch.where(last >= 0, n - 1 - last, self.block_pos + n)

    @property
    def clock(self):
        """(B,) the step of the current onset (of the bar line, before its first onset)."""
        return self.bar_start + self.pos.clamp(min=0)

    def plan(self):
        """(B,) the bars each sequence must have, from the length control and its header's tempo and meter (as
        Controls.bars_at reckons it, in float64 so that halves round alike)."""
        c = self.controls
        if c.bars is not None:
            return torch.full_like(self.bars, c.bars)
        bpm = torch.full_like(self.bpm, c.bpm) if c.bpm else self.bpm
        return (c.seconds * bpm / 60 * self.spec.sample_freq / self.header_bar.clamp(min=1)).round().clamp(min=1).long()

    def material_rules(self, v, in_header):
        """((B, V) what the given material allows next, (B,) whether all of it is written). A given note's pitch is
        allowed whatever --key and --pitch_range say: they are for the notes written (sample.py checks the given
        ones against the user's)."""
        gi = self.next_given
        due, due_part, due_pitch = self.g_start[gi], self.g_part[gi], self.g_pitch[gi]  # (B,): the next given note
        clock, (lo, hi) = self.clock, self.material.span
        col = lambda x: x[:, None]
        # blocks: each due before its bar line (two before the first), forced token by token
        blocks = getattr(self, "blocks", None)
        n_bars = blocks.size(0) if blocks is not None else 0
        need = (self.bars + 2).clamp(max=n_bars)  # the blocks that must be shown before the next bar line
        bar_ready = (((self.bars == 0) | (due >= self.bar_start + self.bar_len))
                     & ~(in_header & (self.n_parts < self.want_parts)))
        ok = ((~self.is_ahead | col(bar_ready & (self.announced < need)))
              & (~self.is_bar | col(bar_ready & (self.announced >= need))))
        in_block = self.in_block[self.state]
        if blocks is not None:
            row = blocks[(self.announced - 1).clamp(min=0)]                 # (B, width + 1)
            forced = row.gather(1, col((self.block_pos + 1).clamp(max=row.size(1) - 1)))[:, 0]
            only = torch.arange(v.size(1), device=v.device)[None, :] == col(forced)
            ok = ok & torch.where(col(in_block & (forced >= 0)), only, self.is_ahead | self.is_bar | ~col(in_block))
            self.block_token = torch.where(col(in_block & (forced >= 0)), only, False)  # (B, V): the block's next
        # onsets up to the next given one, and only where something may sound
        free_at = lambda t: (lo <= t) & (t < hi) & self.free_part.any()
        onset = col(self.bar_start) + v
        body = ~col(in_block)
        ok = ok & (~body | ~self.is_pos | ((onset <= col(due)) & ((onset == col(due)) | free_at(onset))))
        # at a given note's onset: free parts before its part, then its part, its pitch, its duration
        at_due = (self.pos >= 0) & (clock == due)
        free_part = lambda k: self.free_part[k.clamp(0, self.free_part.size(0) - 1)]
        ok = ok & (~body | ~self.is_p | (free_part(v) & col(free_at(clock)) & (~col(at_due) | (v < col(due_part))))
                   | (col(at_due) & (v == col(due_part))))
        writes_given = at_due & (self.part == due_part)
        ok = ok & (~body | ~self.is_n | torch.where(col(writes_given), v == col(due_pitch), col(
            free_part(self.part) & free_at(clock) & (~at_due | (self.part < due_part)))))
        given_note = (self.state == self.state_id["pitch"]) & writes_given & (self.pitch == due_pitch)
        ok = ok & (~body | ~self.is_d | torch.where(col(given_note), v == col(self.g_dur[gi]), col(clock) + v <= hi))
        # a given note's velocity where its part's changes, and no velocity token otherwise
        after_given = (self.state == self.state_id["note"]) & self.just_given
        want = self.g_vel[(gi - 1).clamp(min=0)]
        vel = self.vel.gather(1, col(self.part.clamp(max=self.spec.max_parts - 1)))[:, 0]
        ok = torch.where(col(after_given & (want != vel)), self.is_v & (v == col(want)),
                         ok & ~(self.is_v & col(after_given & (want == vel))))
        self.given_pitch = col(writes_given) & (v == col(due_pitch))  # exempt from --key and --pitch_range
        return ok, (gi >= self.g_start.size(0) - 1) & (self.announced >= n_bars)

    def pool(self, logits):
        """Logits (B, V) as the mask wants them read: where a planned length allows one first bar line only, that
        line takes the model's chance of closing the header at any length (the log-sum of all bar lines), so that a
        model which had another length in mind does not name part after part instead. Call after the mask."""
        if self.planned is None:
            return logits
        closing = logits.masked_fill(~self.is_bar, float("-inf")).logsumexp(1, keepdim=True)
        return torch.where(self.planned, closing, logits)

    def phrase_start(self, i, bars):
        """The first bar (from 0) of phrase i in a piece of `bars` (B,) under Controls.form: ceil(i * bars / m), m the
        form's letters."""
        m = self.form.numel()
        return (i * bars + m - 1) // m

    def form_source(self, c, bars):
        """((B,) whether bar c (B,) (from 0) repeats a bar under Controls.form, (B,) the bar it repeats) in a piece of
        `bars` (B,): phrase i holds the bars from its phrase_start up to the next one's."""
        m, start = self.form.numel(), lambda i: self.phrase_start(i, bars)
        i = (c.clamp(min=0) * m // bars.clamp(min=1)).clamp(max=m - 1)
        j = self.form[i]
        src = start(j) + c - start(i)
        return (c >= 0) & (c < bars - 1) & (j != i) & (src < start(j + 1)), src

    def form_rules(self, v, plan, ends_at, first):
        """(B, V) what Controls.form allows next. A bar that repeats one (form_source) holds that bar's notes, in the
        order they were written there (the canonical one), each onset, part, pitch and duration in turn, no velocity
        but a part's first, and its bar line once all are written; before the first of them (a phrase that opened
        with a pickup) the bar is free, its notes ending by that onset. No note rings into a repeated bar's notes
        unless that bar repeats the one after its own bar's model; there a note is cut short (with --voice_leading,
        none rings into the last bar either: the cadence is struck anew)."""
        col, m = (lambda x: x[:, None]), self.form.numel()
        c, clock = self.bars - 1, self.clock
        log_bar, log_pos, log_part, log_pitch, log_dur = self.log.unbind(1)
        logged = torch.arange(log_bar.size(1), device=v.device)[None, :] < col(self.n_log)
        top = log_bar.size(1) - 1

        def model_bar(b):  # (B,) for bars b (from 0): the index of its model's first note, their count, its onset
            copied, src = self.form_source(b, plan)
            at = (logged & (log_bar <= col(src))).sum(1)
            count = (logged & (log_bar == col(src + 1))).sum(1)
            return copied, src, at, count, torch.where(count > 0, log_pos.gather(1, col(at.clamp(max=top)))[:, 0], 0)

        copied, src, at, count, lead = model_bar(c)
        done = (logged & (log_bar == col(self.bars)) & (log_pos >= col(lead))).sum(1)  # its notes written so far
        due = col((at + done).clamp(max=top))
        d_pos, d_part, d_pitch, d_dur = (x.gather(1, due)[:, 0] for x in (log_pos, log_part, log_pitch, log_dur))
        more = copied & (done < count)
        here = more & (d_pos == self.pos)                               # the next one starts at this onset
        free = more & (done == 0) & (self.pos < d_pos)                  # before the first: a free lead-in
        # how far a note may ring: to the notes of the first later phrase that repeats other bars than those after
        # c's model, or to this bar's first repeated onset
        limit = torch.where(free, self.bar_start + d_pos, ends_at)
        for i in range(m):
            s = self.phrase_start(i, plan)
            s_copied, s_src, _, _, s_lead = model_bar(s)
            foreign = (s > c) & s_copied & ~(copied & (s_src - src == s - c))
            at_s = self.bar_start + (s - c) * self.bar_len + s_lead
            limit = torch.where(foreign, torch.minimum(limit, at_s), limit)
        if self.controls.voice_leading:
            limit = torch.where(c < plan - 1, torch.minimum(limit, ends_at - self.bar_len), limit)
        fits = col(clock) + v <= col(limit)
        repeat = ((~self.is_pos | col(more) & ((v == col(d_pos)) | col(free) & (v < col(d_pos))))
                  & (~self.is_p | col(free) | col(here) & (v == col(d_part)))
                  & (~self.is_n | col(free) | col(here & (self.part == d_part)) & (v == col(d_pitch)))
                  & (~self.is_d | torch.where(col(free), fits, v == col(torch.minimum(d_dur, limit - clock))))
                  & (~self.is_v | first | col(free)) & (~self.is_bar | col(~more)) & ~self.is_meter)
        return torch.where(col(copied), repeat, ~self.is_d | fits)

    def voice_rules(self, v, last, last_bar_at):
        """((B, V) what part writing's rules allow next (Controls.voice_leading), (B, V) what the rules on parallels
        and crossing allow (the first dropped where the rules leave nothing), (B,) whether a part must still sound at
        the current onset), over the parts that the sampler writes (not drums, not given material's): no part rests
        once the piece has begun (an onset or bar line only while every part still sounds, and at an onset every part
        whose note has ended gets a new one: parts rise within an onset, so none may be passed over), a part's new
        pitch makes no parallel fifth, octave or unison with a part that has already moved at this onset (both moving
        the same way, from and to the same perfect interval) and does not cross the parts next to it (at most the
        pitch of the one above, at least that of the one below, where they sound), and in the `last` bar (B,) the
        notes are the tonic triad (Controls.triad, or that of the key the notes so far and all given ones suggest),
        the tonic in the lowest of several parts (the last the header names), none held into it (it starts at step
        `last_bar_at`)."""
        col, P = (lambda x: x[:, None]), self.spec.max_parts
        parts = torch.arange(P, device=v.device)[None, :]
        pitched = (parts < col(self.n_parts)) & ~self.drum
        active = pitched & self.free_part[:P][None, :] if self.material is not None else pitched
        clock, state = self.clock, self.state
        ends = self.until.amax(2)                                                    # (B, P) each part's end
        begun = self.last_end > 0
        first_end = torch.where(active, ends, 1 << 40).amin(1)                        # (B,)
        ok = ~self.is_pos | ~col(begun) | (col(self.bar_start) + v <= col(first_end))
        ok &= ~self.is_bar | ~col(begun) | col(self.bar_start + self.bar_len <= first_end)
        at_onset = state == self.state_id["onset"]
        in_onset = at_onset | (state == self.state_id["note"]) | (state == self.state_id["loud"])
        # the lowest part that must still sound at this onset: any, before its first note; after one, a higher one
        due = active & (ends <= col(clock)) & (col(at_onset) | (parts > col(self.part))) & col(in_onset)
        low = torch.where(due, parts, P).amin(1)                                      # (B,) P: none
        leaves = self.is_pos | self.is_bar | self.is_meter | self.is_ahead | self.only_end
        ok &= ~self.is_p | (v <= col(low))
        ok &= ~leaves | col(low == P)
        ok &= ~self.is_n | ~col(at_onset) | col(self.part <= low)
        # parallels: the pitch of the current part p against each part q that moved at this onset
        p = self.part.clamp(max=P - 1)[:, None]
        old_p, at_p = self.onset_pitch.gather(1, p), self.onset_at.gather(1, p)      # (B, 1)
        moves = (at_p >= 0) & (at_p < col(clock))                                     # p's next note is a move
        new_q, old_q = self.onset_pitch, self.prev_pitch                              # (B, P)
        moved = pitched & (self.onset_at == col(clock)) & (old_q >= 0) & (new_q != old_q) & (parts != p)
        before = (old_p - old_q).abs() % 12                                           # (B, P)
        x = v[:, None, :]                                                             # candidates (1, 1, V)
        parallel = ((moved & ((before == 0) | (before == 7)))[:, :, None]
                    & ((x - new_q[:, :, None]).abs() % 12 == before[:, :, None])
                    & ((x - old_p[:, :, None]).sign() == (new_q - old_q).sign()[:, :, None])
                    & (x != old_p[:, :, None])).any(1)                                # (B, V)
        mine = active.gather(1, p)[:, 0]
        # no crossing: a note of p at or under the part above it, at or over the part below, where those sound
        sounding = pitched & (ends > col(clock))                                      # (B, P) struck now or held
        above, below = (p - 1).clamp(min=0), (p + 1).clamp(max=P - 1)
        top = torch.where((p > 0) & sounding.gather(1, above), self.onset_pitch.gather(1, above), 1 << 30)
        floor = torch.where((p < P - 1) & sounding.gather(1, below), self.onset_pitch.gather(1, below), -1)
        preferred = ~self.is_n | (~col(moves[:, 0]) | ~parallel) & (~col(mine) | ((v <= top) & (v >= floor)))
        # the last bar: a cadence on the tonic
        triad = self.triad if self.triad is not None else estimated_triads(self.pc_weight, self.g_last)
        pc = self.value[None, :] % 12
        bass = torch.where(active.sum(1) > 1, torch.where(active, parts, -1).amax(1), -1)  # (one line: no bass)
        ok &= ~self.is_n | ~col(last & mine) | ((pc[:, None, :] == triad[:, :, None]).any(1)
                                                & (~col(self.part == bass) | (pc == triad[:, :1])))
        ok &= ~self.is_d | ~col(~last & mine) | (col(clock) + v <= col(last_bar_at))
        return ok, preferred, low < P

    def __call__(self, idx):
        if self.seen == 0:
            self.reset(idx.size(0), idx.device)
        self.consume(idx[:, self.seen:])  # the tokens added since the last call (the prompt, then one at a time)
        self.seen = idx.size(1)
        allowed = self.allowed[self.state]                                    # (B, V)
        v = self.value[None, :]
        in_header = self.state == self.state_id["parts"]
        # parts: up to the control's count, each the forced instrument where one is; the first bar line once enough
        forced = self.forced_inst[self.n_parts.clamp(max=self.forced_inst.size(0) - 1)]
        inst_ok = (self.n_parts < self.most_parts)[:, None] & ((forced < 0)[:, None] | (
            torch.arange(v.size(1), device=v.device)[None, :] == forced[:, None]))
        allowed = allowed & (~self.is_inst | inst_ok)
        # the countdown: planned, or kept from the first bar line on
        plan = self.plan() if self.controls.has_length else None
        if plan is not None:
            left = plan - self.bars                                           # the count the next bar line says
            bar_ok = (left >= 1)[:, None] & (v == left.clamp(max=self.more)[:, None])
            last = self.bars == plan
        else:
            c = self.count[:, None]
            bar_ok = (((self.bars == 0)[:, None] & (v > self.min_bars)) | ((c <= self.more - 1) & (v == c - 1))
                      | ((c == self.more) & (v >= self.more - 1)))
            last = (self.bars > 0) & (self.count == 1)
        bar_ok = bar_ok & ~(in_header & (self.n_parts < self.want_parts))[:, None]
        allowed = allowed & (~self.is_bar | bar_ok)
        left = self.count.clamp(1, self.more) if plan is None else (plan - self.bars + 1).clamp(min=1)  # bars to go
        ends_at = self.bar_start + left * self.bar_len                    # (beyond max_countdown: at least so many)
        self.planned = None if plan is None else self.is_bar & bar_ok & in_header[:, None]  # (B, V): see pool()
        end_ok = last & (self.last_end > self.bar_start) | (self.state == self.state_id["end"])
        if self.material is not None:
            given_ok, all_given = self.material_rules(v, in_header)
            allowed, end_ok = allowed & given_ok, end_ok & all_given
        else:
            allowed = allowed & ~self.is_ahead
        vel = self.vel.gather(1, self.part.clamp(max=self.spec.max_parts - 1)[:, None])  # (B, 1)
        first = (self.state == self.state_id["note"])[:, None] & (vel < 0)  # a part's first note names its velocity
        if self.form is not None and plan is not None:
            allowed = allowed & self.form_rules(v, plan, ends_at, first)
        allowed[:, self.end] &= end_ok
        # on the last step of the last bar, once a whole note has started there, the piece ends: no pile of notes
        note_state = (self.state == self.state_id["note"]) | (self.state == self.state_id["loud"])
        closing = end_ok & last & note_state & ~first[:, 0] & (self.pos == self.bar_len - 1)
        if self.controls.voice_leading:  # (once every part sounds there)
            voiced, preferred, parts_due = self.voice_rules(v, last, ends_at - self.bar_len)
            closing &= ~parts_due
        allowed = torch.where(closing[:, None], self.only_end, allowed)
        # meters change at a bar line, to another meter, not under a length control, and not so that a note rings
        # past the last bar
        meter_ok = (self.state != self.state_id["bar"])[:, None] | (
            (torch.arange(v.size(1), device=v.device)[None, :] != self.meter[:, None]) & (plan is None)
            & (self.last_end[:, None] <= self.bar_start[:, None] + left[:, None] * v))
        allowed = allowed & (~self.is_meter | meter_ok)
        # onsets inside the bar; no note past the last bar
        allowed = allowed & (~self.is_pos | (v < self.bar_len[:, None]))
        allowed = allowed & (~self.is_d | (self.clock[:, None] + v <= ends_at[:, None]))
        # a part the header names; pitches of the --key and --pitch_range in pitched parts
        allowed = allowed & (~self.is_p | (v < self.n_parts[:, None]))
        drum = self.drum.gather(1, self.part.clamp(max=self.spec.max_parts - 1)[:, None])  # (B, 1)
        allowed = allowed & (~self.is_n | self.pitch_ok | drum | (self.given_pitch if self.material else False))
        # the canonical form
        sounding = self.until.gather(1, self.part.clamp(max=self.spec.max_parts - 1)[:, None, None].expand(
            -1, 1, self.until.size(2)))[:, 0]                                 # (B, pitches): where each key ends
        key_free = sounding.gather(1, self.value.clamp(0, sounding.size(1) - 1).expand(idx.size(0), -1)) <= \
            self.clock[:, None]
        canon = ((~self.is_pos | (v > self.pos[:, None])) & (~self.is_v | (v != vel)) & (~first | self.is_v)
                 & (~self.is_p | torch.where(note_state[:, None], v > self.part[:, None], v != self.part[:, None]))
                 & (~self.is_n | ((v < self.floor[:, None]) & key_free)))
        if self.controls.voice_leading:  # where the rules leave a row no canonical token, it goes on without them
            some = lambda m: (m & canon).any(1, keepdim=True)
            ruled = allowed & voiced                             # (the rules on parallels and crossing go first)
            ruled = torch.where(some(ruled & preferred), ruled & preferred, ruled)
            allowed = torch.where(some(ruled), ruled, allowed)
        canonical = allowed & canon
        if (kind := self.given.get(idx.size(1))) is not None:
            allowed, canonical = allowed & kind, canonical & kind
        allowed = torch.where(allowed.any(1, keepdim=True), allowed, self.only_end)  # never nothing: then the END
        out = torch.where(canonical.any(1, keepdim=True), canonical, allowed)
        if self.material is not None and self.material.blocks is not None:  # inside a block, nothing else holds
            out = torch.where(self.block_token.any(1, keepdim=True), self.block_token, out)
        return out


def mask_rows(mask, ids, device):
    """(len(ids) - 1, V) bool: what `mask` (a fresh GrammarMask) allows at each position after the first, stepped
    along the token ids `ids` (to score a real piece as the sampler would draw it)."""
    x = torch.as_tensor([int(i) for i in ids], device=device)[None]
    return torch.cat([mask(x[:, :t]) for t in range(1, x.size(1))])


def draw(model, tok, request, n, seed, temperature=1.0, top_k=None, top_p=None, max_new=1024, constrained=True):
    """n samples (token lists, padded with END) of a Request: START, its prompt (forced, read in one forward pass;
    its undrawn tokens drawn under the mask, a bar line where its bar lines stand), then what the model writes under
    the mask (without `constrained`, under nothing). A length control sets the budget that lets every sample reach
    its target; else at most `max_new` tokens after the prompt. The same seed gives the same samples."""
    device = next(model.parameters()).device
    c, spec = request.controls, tok.spec
    forced = [-1] + [-1 if t is None else tok.stoi[t] for t in request.prompt]  # (START is the start)
    n_parts = c.part_count() or spec.max_parts
    drawn_bar = ["bar" if t is None and i >= len(HEADER) + n_parts else None for i, t in enumerate(request.prompt)]
    mask = GrammarMask(tok, device, c, [None] + drawn_bar, request.material) if constrained else None
    torch.manual_seed(seed)
    out = model.generate(torch.full((n, 1), tok.stoi[START], device=device),
                         len(request.prompt) + c.token_budget(spec, otherwise=max_new), temperature, top_k, top_p,
                         allowed_fn=mask, stop_id=tok.stoi[END], generator=torch.Generator(device).manual_seed(seed),
                         keep=1 + len(HEADER) + n_parts, forced=forced)
    return [tok.decode(row) for row in out.tolist()]
