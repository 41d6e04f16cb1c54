"""The sampler's mask: the grammar and a request's controls as one boolean mask over the next token, on the device
(GrammarMask, the allowed_fn that GPT.generate calls before each sampled token), and draw(), the one way samples are
drawn: sample.py writes them, evaluate.py measures the same draws.

A mask is a cursor and rules. The Cursor keeps, per row of a batch, where the piece stands after its tokens so far
(grammar state, parts, meter, bars and countdown, clock, part, pitch, note ends, velocities): it is the only code
that reads token kinds. Each control is a Rule, with its own state kept up to date from the tokens the cursor reads,
and one allowed(cursor) -> (B, V) bool, hard or soft; GrammarMask folds them in a fixed order with one fall-back.
The language model proposes, the rules dispose (DeepBach's constraints and a regex-guided decoder's finite-state
masks are the same idea).
"""
from types import SimpleNamespace

import numpy as np
import torch

import config
from controls import KEY_STEPS, Controls
from encoding_decoding import (AHEAD, AHEAD_STATES, DRUMS, END, GRAMMAR, HEADER, MORE, START, as_note, bar_steps,
                               beat_steps, kind, value)
from model import sample_logits


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
    triad holds the pitch class `holds` (a given melody's last note) where it is >= 0: one per row ((B,) or a
    number), or several ((B or 1, k): the given parts' last chord, its top note first), those after the first
    dropped where no key's triad holds them all."""
    def standardized(x):
        x = x - x.mean(-1, keepdim=True)
        return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    profiles = torch.tensor(KEY_PROFILES, dtype=weights.dtype, device=weights.device)
    keys = torch.stack([profiles.roll(t, 1) for t in range(12)], 1).reshape(24, 12)  # C..B major, then C..B minor
    k = torch.arange(24, device=weights.device)
    tonic, minor = k % 12, (k >= 12).long()
    triads = torch.stack([tonic, (tonic + 4 - minor) % 12, (tonic + 7) % 12], 1)      # (24, 3)
    holds = torch.as_tensor(holds, device=weights.device)
    holds = holds.view(-1, 1) if holds.dim() <= 1 else holds                         # (B or 1, k)
    inside = (triads[None, :, :, None] == holds[:, None, None, :]).any(2) | (holds[:, None, :] < 0)  # (B|1, 24, k)
    fits = torch.where(inside.all(2).any(1, keepdim=True), inside.all(2), inside[:, :, 0])  # (B or 1, 24)
    best = (standardized(weights) @ standardized(keys).T).masked_fill(~fits, float("-inf")).argmax(1)
    return triads[best]


def relative_triads(triads):
    """(B, 3) tonic triads (tonic, third, fifth) -> those of their relative keys: a major key's minor a third below,
    a minor key's major a third above (one key signature, read from another tonic)."""
    tonic, minor = triads[:, 0], (triads[:, 1] - triads[:, 0]) % 12 == 3
    rel = torch.where(minor, tonic + 3, tonic + 9) % 12
    return torch.stack([rel, (rel + torch.where(minor, 4, 3)) % 12, (rel + 7) % 12], 1)


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


PHRASE_BARS = 4  # with voice_leading_rules' "phrases", a phrase closes every so many bars (of a planned length)
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


class Cursor:
    """Where each row of a batch stands after its tokens so far: its grammar state, its parts (how many, which are
    drums), its meter and tempo, its bar count and countdown, the step of its bar and onset (the clock), the current
    part and pitch floor, per part and pitch the step its latest note ends, per part its velocity; and from those
    and the request's length, the bars it must have and the step where its last bar ends. The only code that reads
    token kinds: the rules read the cursor. Given tokens (a prompt) are read like sampled ones, all at once."""

    def __init__(self, tok, device, controls, material):
        tensor = lambda x, **kw: torch.tensor(x, device=device, **kw)
        spec, itos = tok.spec, tok.itos
        states, allowed, next_state = grammar_tables(itos)
        self.grammar = tensor(allowed)                                   # (S, V) bool
        self.next_state = tensor(next_state)                             # (S, V) state index
        kinds, numbers = token_values(itos, spec)
        self.kind, self.number = tensor(kinds), tensor(numbers, dtype=torch.float64)
        self.beats = tensor([beat_steps(value(t), spec.sample_freq) if kind(t) == "meter" else 0 for t in itos])
        self.value = self.number.long()
        is_ = lambda k: self.kind == VALUED.index(k)
        (self.is_n, self.is_d, self.is_v, self.is_p, self.is_pos, self.is_bar, self.is_meter, self.is_tempo,
         self.is_inst) = (is_(k) for k in VALUED)
        self.is_ahead = tensor([t == AHEAD for t in itos])
        self.duration_due = ~(self.grammar & ~self.is_d).any(1)          # (S,) where only a duration may come
        self.in_block = tensor([s in AHEAD_STATES for s in states])     # (S,) a block's states
        self.state_id = {s: i for i, s in enumerate(states)}
        self.end = tok.stoi[END]
        self.only_end = torch.arange(len(itos), device=device) == self.end
        self.controls, self.spec, self.seen = controls, spec, 0
        self.more = spec.max_countdown + 1
        # the fewest parts a header may name (a harmonization has two at least), and the most
        self.want_parts = max(controls.part_count() or 1, material.min_parts if material else 1)
        self.most_parts = controls.part_count() or spec.max_parts

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

    def consume(self, tok):
        """Advance every row by its tokens `tok` (B, n): one sampled token, or a whole prompt at once. Only the
        grammar state is stepped token by token; the rest are running sums and maxima, what the latest token of a
        kind says (read at its position), and per part and key the latest note's end. Returns the step: per token
        (B, n), its value and kind and where it stands (bar, onset, clock, part, pitch), for the rules' own state."""
        n = tok.size(1)
        positions, P = torch.arange(n, device=tok.device), self.spec.max_parts
        state, states = self.state, []
        for t in range(n):
            state = self.next_state[state, tok[:, t]]
            states.append(state)
        self.state = state
        body = ~self.in_block[torch.stack(states, 1)]  # (B, n): not inside a block of given material
        val, is_ = self.value[tok], lambda k: getattr(self, f"is_{k}")[tok] & body  # (B, n): each token's value

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
        drums = last_per_key(inst & (val == DRUMS), parts - 1, P) >= 0
        self.drum |= drums
        self.n_parts = parts[:, -1]
        bars = self.bars[:, None] + bar.long().cumsum(1)                 # bar lines after each token
        bar_len = latest(meter, val, self.bar_len)                       # after a bar line's meter: its length
        before = torch.cat([self.bar_len[:, None], bar_len[:, :-1]], 1)  # the length of the bar a bar line closes
        bar_start = self.bar_start[:, None] + torch.where(bar & (bars > 1), before, 0).cumsum(1)
        self.header_bar = latest(meter & (bars == 0), val, self.header_bar)[:, -1]
        self.meter, self.bar_len = latest(meter, tok, self.meter)[:, -1], bar_len[:, -1]
        self.bpm = latest(is_("tempo"), self.number[tok], self.bpm)[:, -1]
        self.bars, self.count, self.bar_start = bars[:, -1], latest(bar, val, self.count)[:, -1], bar_start[:, -1]
        pos = latest(bar | onset, torch.where(bar, -1, val), self.pos)
        clock = bar_start + pos.clamp(min=0)                             # the onset step after each token
        self.pos = pos[:, -1]
        part_now = latest(part, val, self.part)
        pitch_now = latest(note, val, self.pitch)
        self.floor = latest(bar | onset | part | note, torch.where(note, val, 1 << 30), self.floor)[:, -1]
        self.part, self.pitch = part_now[:, -1], pitch_now[:, -1]
        ends = clock + val                                               # at a duration: its note's end
        K = self.until.size(2)
        key = part_now.clamp(max=P - 1) * K + pitch_now.clamp(0, K - 1)
        last = last_per_key(dur, key, P * K)
        until = self.until.view(tok.size(0), -1)
        self.until = torch.where(last >= 0, ends.gather(1, last.clamp(min=0)), until).view_as(self.until)
        self.last_end = torch.maximum(self.last_end, torch.where(dur, ends, 0).amax(1))
        last = last_per_key(is_("v"), part_now.clamp(max=P - 1), P)
        self.vel = torch.where(last >= 0, val.gather(1, last.clamp(min=0)), self.vel)
        return SimpleNamespace(tok=tok, n=n, seen=self.seen, positions=positions, value=val, bars=bars, pos=pos,
                               clock=clock, part=part_now, pitch=pitch_now, note=note, dur=dur, given=None)

    def settle(self):
        """What the rules read of the piece as a whole, once the tokens are consumed: whether the header still wants
        parts, the bars each row must have (the length control's plan, else None: the countdown's), whether it is in
        its last bar, how many bars are left (this one included), the step its last bar ends, and whether its next
        note is its part's first (which names its velocity)."""
        self.in_header = self.state == self.state_id["parts"]
        self.wants_parts = self.in_header & (self.n_parts < self.want_parts)
        self.plan = self.planned_bars() if self.controls.has_length else None
        if self.plan is not None:
            self.last, to_go = self.bars == self.plan, (self.plan - self.bars + 1).clamp(min=1)
        else:
            self.last, to_go = (self.bars > 0) & (self.count == 1), self.count.clamp(1, self.more)
        self.bars_left = to_go
        self.ends_at = self.bar_start + to_go * self.bar_len              # (beyond max_countdown: at least so many)
        self.note_state = (self.state == self.state_id["note"]) | (self.state == self.state_id["loud"])
        self.parts = torch.arange(self.spec.max_parts, device=self.state.device)[None, :]  # (1, P)
        self.pitched = (self.parts < self.n_parts[:, None]) & ~self.drum  # (B, P) the parts named, not drums
        self.part_vel = self.at_part(self.vel)                                               # (B, 1)
        self.first = (self.state == self.state_id["note"])[:, None] & (self.part_vel < 0)  # (B, 1)

    @property
    def clock(self):
        """(B,) the step of the current onset (of the bar line, before its first onset)."""
        return self.bar_start + self.pos.clamp(min=0)

    def at_part(self, x):
        """(B, 1): a per-part (B, P) value at each row's current part."""
        return x.gather(1, self.part.clamp(max=self.spec.max_parts - 1)[:, None])

    def planned_bars(self):
        """(B,) the bars each row must have, from the length control and its header's tempo and meter (as
        Controls.bars_at reckons it, in float64 so that halves round alike)."""
        c = self.controls
        if c.bars is not None:
            return torch.full_like(self.bars, c.bars)
        bpm = torch.full_like(self.bpm, c.bpm) if c.bpm else self.bpm
        return (c.seconds * bpm / 60 * self.spec.sample_freq / self.header_bar.clamp(min=1)).round().clamp(min=1).long()


class Rule:
    """A control over the next token: its own state (reset for a batch, kept up to date from the step that the cursor
    reads) and allowed(cursor) -> (B, V) bool. A hard rule always holds; a soft one gives way where it would leave a
    row no canonical token. Rules are asked in the mask's order, so one may read what an earlier one found."""
    soft = False

    def reset(self, c, batch_size, device):
        pass

    def consume(self, c, step):
        pass

    def allowed(self, c):
        raise NotImplementedError


class Grammar(Rule):
    """What may follow what (encoding_decoding.GRAMMAR), within the vocabulary that the controls leave (style, tempo,
    meter, the key and range's pitches, ...): a lookup by grammar state. No block of given material without any."""

    def __init__(self, c, tok, controls, material):
        self.table = c.grammar & torch.tensor(controls.token_mask(tok.itos, tok.spec), device=c.grammar.device)
        if material is None:
            self.table &= ~c.is_ahead

    def allowed(self, c):
        return self.table[c.state]


class Parts(Rule):
    """The header's parts: up to the control's count, each the forced instrument where one is; then only the parts
    the header names."""

    def __init__(self, c, tok, controls):
        forced = [tok.stoi[f"inst:{'drums' if i == DRUMS else i}"] for i in controls.instruments or ()]
        self.forced = torch.tensor(forced + [-1] * (c.spec.max_parts + 1 - len(forced)), device=c.value.device)

    def allowed(self, c):
        v = c.value[None, :]
        forced = self.forced[c.n_parts.clamp(max=self.forced.size(0) - 1)][:, None]
        named = torch.arange(v.size(1), device=v.device) == forced      # (B, V): the forced instrument's token
        inst_ok = (c.n_parts < c.most_parts)[:, None] & ((forced < 0) | named)
        return (~c.is_inst | inst_ok) & (~c.is_p | (v < c.n_parts[:, None]))


class Countdown(Rule):
    """The bar lines count down: the first one says the planned length (Controls.bars / .seconds), or any length
    that leaves room for a prompt's bars; after bar:k comes bar:k-1, and the first bar line only once the header
    has the parts it needs. Remembers where a planned first bar line stands, for the mask's pool()."""

    def __init__(self, c, slots):
        self.min_bars = sum(k == "bar" for k in slots)
        self.planned = None

    def allowed(self, c):
        v = c.value[None, :]
        if c.plan is not None:
            left = c.plan - c.bars                                          # the count the next bar line says
            bar_ok = (left >= 1)[:, None] & (v == left.clamp(max=c.more)[:, None])
        else:
            count = c.count[:, None]
            bar_ok = (((c.bars == 0)[:, None] & (v > self.min_bars)) | ((count <= c.more - 1) & (v == count - 1))
                      | ((count == c.more) & (v >= c.more - 1)))
        bar_ok = bar_ok & ~c.wants_parts[:, None]
        self.planned = None if c.plan is None else c.is_bar & bar_ok & c.in_header[:, None]  # (B, V): see pool()
        return ~c.is_bar | bar_ok


class Material(Rule):
    """Given material (a Given) is written where it sounds and nothing else is: no onset passes a given note still
    to come, no bar line closes a bar that has one, the END waits for all of them, and each given note's part, pitch,
    duration and velocity are the only tokens allowed when it is due. Its blocks of look-ahead are forced token by
    token before the bar lines where they belong (encoding_decoding.notes_to_tokens). A given note's pitch is
    allowed whatever --key and --pitch_range say (`given_pitch`): they are for the notes written (sample.py checks
    the given ones against the user's). With Given.on_top (a melody), no written note of a pitched part sounds
    above that part: its pitch at most the given note sounding at its onset, and it ends by the next given onset
    below it."""

    def __init__(self, c, tok, material):
        tensor = lambda x, **kw: torch.tensor(x, device=c.value.device, **kw)
        notes, K, spec = [as_note(n) for n in material.notes], c.spec.pitch_range[1] + 1, c.spec
        never = 1 << 40
        self.material = material
        self.start = tensor([n.start for n in notes] + [never])            # (G + 1,): a last one that never comes
        self.part, self.pitch = tensor([n.part for n in notes] + [-1]), tensor([n.pitch for n in notes] + [-1])
        self.dur, self.vel = tensor([n.dur for n in notes] + [-1]), tensor([n.vel for n in notes] + [-1])
        self.keys = tensor(sorted((n.start * spec.max_parts + n.part) * K + n.pitch for n in notes) or [-1])
        self.free_part = tensor([k in material.free_parts for k in range(spec.max_parts + 1)])
        top = [n for n in notes if n.part == material.on_top]  # (none without on_top)
        self.top = [tensor([f(n) for n in top])[None, :] for f in (lambda n: n.start, lambda n: n.start + n.dur,
                                                                     lambda n: n.pitch)] if top else None
        self.blocks = None  # (bars, longest + 1) token ids, padded with -1
        if material.blocks is not None:
            width = max(map(len, material.blocks))
            self.blocks = tensor([[tok.stoi[t] for t in b] + [-1] * (width + 1 - len(b)) for b in material.blocks])
        self.block_token = None

    def reset(self, c, batch_size, device):
        # the next given note, the blocks shown so far, the tokens since the latest block opened, and whether the
        # latest token closed a given note
        self.next, self.announced, self.block_pos = (torch.zeros(batch_size, dtype=torch.long, device=device)
                                                     for _ in range(3))
        self.just_given = torch.zeros(batch_size, dtype=torch.bool, device=device)

    def consume(self, c, s):
        P, K = c.spec.max_parts, c.until.size(2)
        step_given = s.dur & torch.isin((s.clock * P + s.part) * K + s.pitch, self.keys)  # onset, part, pitch
        self.next = self.next + step_given.sum(1)
        self.just_given = step_given[:, -1]
        s.given = step_given  # for the rules after this one
        ahead = c.is_ahead[s.tok]
        self.announced = self.announced + ahead.sum(1)
        last = torch.where(ahead, s.positions, -1).amax(1)
        self.block_pos = torch.where(last >= 0, s.n - 1 - last, self.block_pos + s.n)

    def allowed(self, c):
        v = c.value[None, :]
        gi = self.next
        due, due_part, due_pitch = self.start[gi], self.part[gi], self.pitch[gi]  # (B,): the next given note
        clock, (lo, hi) = c.clock, self.material.span
        col = lambda x: x[:, None]
        # blocks: each due before its bar line (two before the first), forced token by token
        n_bars = self.blocks.size(0) if self.blocks is not None else 0
        need = (c.bars + 2).clamp(max=n_bars)  # the blocks that must be shown before the next bar line
        bar_ready = ((c.bars == 0) | (due >= c.bar_start + c.bar_len)) & ~c.wants_parts
        ok = ((~c.is_ahead | col(bar_ready & (self.announced < need)))
              & (~c.is_bar | col(bar_ready & (self.announced >= need))))
        in_block = c.in_block[c.state]
        if self.blocks is not None:
            row = self.blocks[(self.announced - 1).clamp(min=0)]            # (B, width + 1)
            forced = row.gather(1, col((self.block_pos + 1).clamp(max=row.size(1) - 1)))[:, 0]
            only = torch.arange(v.size(1), device=v.device)[None, :] == col(forced)
            ok = ok & torch.where(col(in_block & (forced >= 0)), only, c.is_ahead | c.is_bar | ~col(in_block))
            self.block_token = torch.where(col(in_block & (forced >= 0)), only, False)  # (B, V): the block's next
        # onsets up to the next given one, and only where something may sound
        free_at = lambda t: (lo <= t) & (t < hi) & self.free_part.any()
        onset = col(c.bar_start) + v
        body = ~col(in_block)
        ok = ok & (~body | ~c.is_pos | ((onset <= col(due)) & ((onset == col(due)) | free_at(onset))))
        # at a given note's onset: free parts before its part, then its part, its pitch, its duration
        at_due = (c.pos >= 0) & (clock == due)
        free_part = lambda k: self.free_part[k.clamp(0, self.free_part.size(0) - 1)]
        ok = ok & (~body | ~c.is_p | (free_part(v) & col(free_at(clock)) & (~col(at_due) | (v < col(due_part))))
                   | (col(at_due) & (v == col(due_part))))
        writes_given = at_due & (c.part == due_part)
        ok = ok & (~body | ~c.is_n | torch.where(col(writes_given), v == col(due_pitch), col(
            free_part(c.part) & free_at(clock) & (~at_due | (c.part < due_part)))))
        given_note = (c.state == c.state_id["pitch"]) & writes_given & (c.pitch == due_pitch)
        ok = ok & (~body | ~c.is_d | torch.where(col(given_note), v == col(self.dur[gi]), col(clock) + v <= hi))
        if self.top is not None:  # under the top part: a pitch at most its note's, a duration up to a lower one
            start, end, pitch = self.top
            under = ~writes_given & c.pitched.gather(1, col(c.part.clamp(max=c.spec.max_parts - 1)))[:, 0]
            ceiling = torch.where((start <= col(clock)) & (col(clock) < end), pitch, 1 << 20).amin(1)
            lower = torch.where((start > col(clock)) & (pitch < col(c.pitch)), start, 1 << 40).amin(1)
            ok = ok & (~body | ~col(under) | (~c.is_n | (v <= col(ceiling)))
                       & (~c.is_d | (col(clock) + v <= col(lower))))
        # a given note's velocity where its part's changes, and no velocity token otherwise
        after_given = (c.state == c.state_id["note"]) & self.just_given
        want = self.vel[(gi - 1).clamp(min=0)]
        ok = torch.where(col(after_given & (want != c.part_vel[:, 0])), c.is_v & (v == col(want)),
                         ok & ~(c.is_v & col(after_given & (want == c.part_vel[:, 0]))))
        self.given_pitch = col(writes_given) & (v == col(due_pitch))  # exempt from --key and --pitch_range
        self.all_given = (gi >= self.start.size(0) - 1) & (self.announced >= n_bars)
        return ok


class Form(Rule):
    """Controls.form: phrases as letters over the planned bars (each row its own form, where several are given, in
    turn); a bar that repeats one (a letter seen before) writes its model bar's notes again, in the order they were
    written there (the canonical one), each onset, part, pitch and duration in turn, no velocity but a part's first,
    and its bar line once all are written; before the first of them (a phrase that opened with a pickup) the bar is
    free, its notes ending by that onset. No note rings into a repeated bar's notes unless that bar repeats the one
    after its own bar's model; there a note is cut short (with --voice_leading, none rings into the last bar either:
    the cadence is struck anew). Each row logs its notes. Given.repeats map bars to model bars instead (given notes
    that repeat earlier ones, whose tokens Material forces alike): there a given note's velocity is Material's, and
    no note rings on past a run's last bar (where other given notes lie)."""

    def __init__(self, c, controls, given=None):
        self.forms = [f.upper() or "A" for f in controls.forms()] or ["A"]  # "": no form, one phrase that repeats none
        self.voice_leading = controls.voice_leading
        self.given = given  # (the Material rule, or None)
        self.repeats = dict(given.material.repeats) if given is not None and given.material.repeats else None

    def reset(self, c, batch_size, device):
        # row r takes form r (in turn): each phrase's model phrase, phrases past a row's own letters their own model
        rows = [self.forms[r % len(self.forms)] for r in range(batch_size)]
        width = max(map(len, rows))
        self.form = torch.tensor([[f.index(x) for x in f] + list(range(len(f), width)) for f in rows], device=device)
        self.m = torch.tensor([len(f) for f in rows], device=device)
        if self.repeats:  # each bar's model bar (-1: none, as every bar past the last listed), the bar after its
            # run (the bars that repeat those after its model), and the runs' first bars
            runs, self.run_starts, width = self.repeats, [], max(self.repeats) + 2
            self.bar_map, self.run_end = torch.full((width,), -1, device=device), torch.zeros(width, dtype=torch.long)
            for b in sorted(runs):
                self.bar_map[b], end = runs[b], b + 1
                while runs.get(end, -2) == runs[end - 1] + 1:
                    end += 1
                self.run_end[b] = end
                self.run_starts += [b] if runs.get(b - 1, -2) != runs[b] - 1 else []
            self.run_end = self.run_end.to(device)
            self.run_starts = torch.tensor(self.run_starts, dtype=torch.long, device=device)
        # each row's notes so far in the order written (bar, onset in it, part, pitch, steps), a spare last column
        # taking what is not a note, and how many there are
        self.log = torch.full((batch_size, 5, 64), -1, dtype=torch.long, device=device)
        self.n_log = torch.zeros(batch_size, dtype=torch.long, device=device)

    def consume(self, c, s):  # each note is logged at its duration
        while self.log.size(2) < s.seen // 2 + s.n + 1:  # (a note takes two tokens at least)
            self.log = torch.cat([self.log, torch.full_like(self.log, -1)], 2)
        spare = self.log.size(2) - 1
        slot = torch.where(s.dur, self.n_log[:, None] + s.dur.long().cumsum(1) - 1, spare)
        for row, x in zip(self.log.unbind(1), (s.bars, s.pos, s.part, s.pitch, s.value)):
            row.scatter_(1, slot, x)
        self.n_log = self.n_log + s.dur.sum(1)

    def phrase_start(self, i, bars):
        """The first bar (from 0) of phrase i in a piece of `bars` (B,): ceil(i * bars / m), m the row's letters."""
        return (i * bars + self.m - 1) // self.m

    def source(self, c, bars):
        """(whether bar c (B,) or (K, B) (from 0) repeats a bar, the bar it repeats), each c's shape, in a piece of
        `bars` (B,): phrase i holds the bars from its phrase_start up to the next one's (or Given.repeats says)."""
        if self.repeats:
            src = self.bar_map[c.clamp(0, self.bar_map.size(0) - 1)]
            return (c >= 0) & (c < bars - 1) & (src >= 0), src
        start = lambda i: self.phrase_start(i, bars)
        i = torch.minimum(c.clamp(min=0) * self.m // bars.clamp(min=1), self.m - 1)
        j = self.form.gather(1, i.reshape(-1, i.size(-1)).T).T.reshape(i.shape)  # (each row's letters: form[b, i])
        src = start(j) + c - start(i)
        return (c >= 0) & (c < bars - 1) & (j != i) & (src < start(j + 1)), src

    def allowed(self, cur):
        if cur.plan is None:
            return None
        v, plan, ends_at, first = cur.value[None, :], cur.plan, cur.ends_at, cur.first
        col, m = (lambda x: x[:, None]), self.form.size(1)
        c, clock = cur.bars - 1, cur.clock
        log_bar, log_pos, log_part, log_pitch, log_dur = self.log.unbind(1)
        logged = torch.arange(log_bar.size(1), device=v.device)[None, :] < col(self.n_log)
        top = log_bar.size(1) - 1

        # the bars that may repeat others (the first of each phrase, or of each run of Given.repeats), under c
        starts = (self.run_starts[:, None].expand(-1, len(c)) if self.repeats else
                  self.phrase_start(torch.arange(m, device=c.device)[:, None], plan))              # (K, B)
        bars = torch.cat([c[None], starts])                                                       # (1 + K, B)
        # of each, whether it repeats a bar, the bar it repeats, the index of its model's first note, their count
        # and its onset
        copied, src = self.source(bars, plan)
        at = (logged & (log_bar <= src[..., None])).sum(2)
        count = (logged & (log_bar == src[..., None] + 1)).sum(2)
        lead = torch.where(count > 0, log_pos.gather(1, at.clamp(max=top).T).T, 0)
        (copied, s_copied), (src, s_src), (at, _), (count, _), (lead, s_lead) = (
            (x[0], x[1:]) for x in (copied, src, at, count, lead))
        done = (logged & (log_bar == col(cur.bars)) & (log_pos >= col(lead))).sum(1)  # its notes written so far
        due = col((at + done).clamp(max=top))
        d_pos, d_part, d_pitch, d_dur = (x.gather(1, due)[:, 0] for x in (log_pos, log_part, log_pitch, log_dur))
        more = copied & (done < count)
        here = more & (d_pos == cur.pos)                                # the next one starts at this onset
        free = more & (done == 0) & (cur.pos < d_pos)                   # before the first: a free lead-in
        # how far a note may ring: to the notes of the first later phrase that repeats other bars than those after
        # c's model, or to this bar's first repeated onset
        limit = torch.where(free, cur.bar_start + d_pos, ends_at)
        foreign = (starts > c) & s_copied & ~(copied & (s_src - src == starts - c))             # (K, B)
        at_s = cur.bar_start + (starts - c) * cur.bar_len + s_lead
        limit = torch.minimum(limit, torch.where(foreign, at_s, limit).amin(0))
        if self.repeats:  # a run's notes end by its last bar line
            end = self.run_end[c.clamp(0, self.run_end.size(0) - 1)]
            limit = torch.where(copied, torch.minimum(limit, cur.bar_start + (end - c) * cur.bar_len), limit)
        if self.voice_leading and not self.repeats:  # (a run of repeats ends before the last bar, cut there)
            limit = torch.where(c < plan - 1, torch.minimum(limit, ends_at - cur.bar_len), limit)
        fits = col(clock) + v <= col(limit)
        repeat = ((~cur.is_pos | col(more) & ((v == col(d_pos)) | col(free) & (v < col(d_pos))))
                  & (~cur.is_p | col(free) | col(here) & (v == col(d_part)))
                  & (~cur.is_n | col(free) | col(here & (cur.part == d_part)) & (v == col(d_pitch)))
                  & (~cur.is_d | torch.where(col(free), fits, v == col(torch.minimum(d_dur, limit - clock))))
                  & (~cur.is_v | first | col(free | (self.given is not None and self.given.just_given)))
                  & (~(cur.is_bar | cur.is_ahead) | col(~more))
                  & ~cur.is_meter)  # (a block of given notes ahead stands before the bar line, after the bar's notes)
        return torch.where(col(copied), repeat, ~cur.is_d | fits)


class Contrast(Rule):
    """Controls.form's new letters, soft: a phrase of a letter not seen before does not open as an earlier phrase
    opened. Where its first bar's notes so far are those of an earlier phrase's first bar (onsets, parts, pitches, in
    the order written) and the next note is at the onset and in the part of that bar's last one, its pitch is
    another. Not where a phrase is one bar, nor in the piece's last bar (a cadence), as a phrase's letter leaves its
    last bar aside (measures.piece_form). Real fiddle tunes open a new letter as an earlier one 11 % of the time and
    then go elsewhere; without it the shipped model opened 31 % so and often went on copying: a tune of one phrase
    looped (measures.looped, 19 % at the fiddle's defaults, real ones none). Reads the Form rule's log."""
    soft = True

    def __init__(self, form):
        self.form = form

    def allowed(self, cur):
        f = self.form
        if cur.plan is None:
            return None
        col, plan, c = (lambda x: x[:, None]), cur.plan, cur.bars - 1
        start = lambda i: f.phrase_start(i, plan)
        i = torch.minimum(c.clamp(min=0) * f.m // plan.clamp(min=1), f.m - 1)  # the phrase bar c is in
        fresh = ((c >= 0) & (i > 0) & (start(i) == c) & (f.form.gather(1, col(i))[:, 0] == i)
                 & (start(i + 1) - c > 1) & (c < plan - 1))
        if not fresh.any():
            return None
        log_bar, log_pos, log_part, log_pitch = f.log[:, :4].unbind(1)
        logged = torch.arange(log_bar.size(1), device=c.device)[None, :] < col(f.n_log)
        top = log_bar.size(1) - 1
        done = (logged & (log_bar == col(cur.bars))).sum(1)            # this bar's notes so far, from index `at`
        at = (logged & (log_bar < col(cur.bars))).sum(1)
        steps = torch.arange(int(done.max()) + 1, device=c.device)[None, :]
        notes = lambda first: [x.gather(1, (col(first) + steps).clamp(max=top)) for x in (log_pos, log_part, log_pitch)]
        mine = notes(at)
        ban = torch.zeros(c.size(0), cur.value.size(0), dtype=torch.bool, device=c.device)
        for j in range(f.form.size(1) - 1):
            o = start(torch.full_like(c, j))                               # phrase j's first bar, its notes from a_j
            a_j, k_j = (logged & (log_bar <= col(o))).sum(1), (logged & (log_bar == col(o + 1))).sum(1)
            its = notes(a_j)
            same = ((steps >= col(done)) | (mine[0] == its[0]) & (mine[1] == its[1]) & (mine[2] == its[2])).all(1)
            last = lambda x: x.gather(1, col(done))[:, 0]                  # its note after the same ones
            hit = fresh & (j < i) & same & (done == k_j - 1) & (last(its[0]) == cur.pos) & (last(its[1]) == cur.part)
            ban |= col(hit) & (cur.value[None, :] == col(last(its[2])))
        return ~(cur.is_n[None, :] & ban)


class VoiceLeading(Rule):
    """Controls.voice_leading, part writing's first rules, over the parts that the sampler writes (not drums, not given
    material's): no part rests once the piece has begun (an onset or bar line only while every part still sounds, and at
    an onset every part whose note has ended gets a new one: parts rise within an onset, so none may be passed over), a
    part's new pitch makes no parallel fifth, octave or unison with a part that has already moved at this onset (both
    moving the same way, from and to the same perfect interval), nor, on a beat, with a part sounding there, from the
    pitches both sounded on the beat before (a passing note between them), and does not cross the parts next to it (at
    most the pitch of the one above, at least that of the one below, where they sound), and from the final chord on
    (the last bar's first step, or where the given notes close later in the bar: their last onset, or the first of the
    same pitches struck again up to it, each held a beat or more; a chorale's melody closes on its third beat, an
    anticipation of its last note over the dominant) the notes are the tonic triad
    (Controls.triad, each row its own in turn where several are given, or that of the key the notes so far and all given
    pitched ones suggest whose triad holds the given notes struck last: a melody's last note, the given parts' last
    chord where one triad holds it all), the tonic in the bass (the lowest of several written parts, the last the header
    names, or Given.bass: an added bass), none held into it, every part striking it at its first step, and with several
    parts struck once and held to the end; and
    the piece's first onset is the tonic triad of the key known before it (Controls.triad, or the one the given notes
    suggest), or its relative key's where only that holds the given notes struck there, or free where neither does (a
    harmonized melody: having heard only its first note, the model opened BWV 139.6's E major soprano on a C major
    chord), the root in the bass; with `cadence`, the beat before the final chord is the dominant's triad or seventh
    chord, its root in the bass and its leading tone sounding, where the bars left are known and the given notes in that
    beat are its notes; with `third`, the final chord and the first (with `beginning`) sound their third (the part above
    the bass strikes it where none sounds), with three parts or more; with `phrases`, in a piece of planned length a
    phrase closes every PHRASE_BARS bars but in the last two, its bar's last two beats one chord held to the bar line (but
    where the form repeats that bar), and before the last bar no note lasts longer than a bar. In those chords the bass
    sounds under the other parts. Soft: where the rules leave nothing canonical they give way, those on parallels,
    crossing and the bass under those chords (`preferred`, the ParallelsAndCrossing rule) first.
    `parts_due`: a part must still sound at the current onset (the piece may not close yet)."""
    soft = True
    HISTORY = 6  # onsets kept per part: a beat of semiquavers and the note before it
    dominant = torch.tensor([[7, 11, 2, 5], [7, 10, 2, 5]])  # the dominant's seventh chord above the tonic, its root
    # first, and where a scale held (--key) has no leading tone, with the minor third it has (v in natural minor)

    def __init__(self, c, controls, material):
        device = c.value.device
        self.rules = controls.voice_leading_rules  # of rests, parallels, crossing, ending, beginning, cadence, third,
        # phrases
        self.form = None  # (the Form rule, where there is one: a bar it repeats closes no phrase of its own)
        # the pitch tokens and their pitches: the only candidates the rule on parallels reads
        self.pitch_ids = c.is_n.nonzero()[:, 0]
        self.pitches = c.value[self.pitch_ids]
        self.dominant = VoiceLeading.dominant.to(device)
        self.scale = None if controls.scale is None else torch.tensor([k in controls.scale for k in range(12)],
                                                                      device=device)  # (12,) a scale held
        triads = controls.triads()  # (R, 3) or None: row r takes triad r % R
        self.triad = torch.tensor(triads, device=device) if triads else None
        self.material = material  # (the Material rule, or None)
        self.g_weight, self.g_last = torch.zeros(12, dtype=torch.float64, device=device), -1
        # the given notes of pitched parts (a drum's note number is a sound, not a pitch)
        drums = {k for k, i in enumerate(controls.instruments or ()) if i == DRUMS}
        notes = map(as_note, material.material.notes) if material is not None else ()
        given = [n for n in notes if n.part not in drums]
        if given:  # they count for the key from the start
            self.g_weight.index_add_(0, torch.tensor([n.pitch % 12 for n in given], device=device),
                                     torch.tensor([n.dur for n in given], dtype=torch.float64, device=device))
            # the pitch classes of the given notes that start last, the top one first: the triad holds it, and the
            # others too where a key's triad holds them all (an added part's last chord: the given parts' close)
            end, top = max((n.start, n.pitch) for n in given)
            self.g_last = torch.tensor([[top % 12] + sorted({n.pitch % 12 for n in given if n.start == end}
                                                            - {top % 12})], device=device)
        # the given pitched notes' onsets, ends and pitch classes (G,), or None: where one sounds on the step the
        # cadence's dominant does and is no note of it, that row has no cadence
        self.given = tuple(torch.tensor(x, device=device) for x in zip(*[(n.start, n.start + n.dur, n.pitch % 12)
                                                                        for n in given])) if given else None
        # where the given notes' close begins: their last onset, or the first of the same pitches struck again up to
        # it without a rest (a melody's 2 1 1: Bach's V comes before its first 1), each for a beat or more: under a
        # shorter one, an anticipation of the last note (2 1. 1), Bach holds the dominant (in all 30 of his 4-part
        # chorales whose melody closes so; where the 1 before the last lasts a beat or more, 9 of 17 hold the tonic)
        onsets = sorted({n.start for n in given})
        struck = lambda t: ({n.pitch for n in given if n.start == t},
                            max(n.start + n.dur for n in given if n.start == t))  # (pitches, their end)
        beat = beat_steps(controls.meter or "4/4", c.spec.sample_freq)
        self.close_given = onsets[-1] if given else None
        last_pitches = struck(onsets[-1])[0] if given else None
        for t, later in zip(reversed(onsets[:-1]), reversed(onsets[1:])):
            pitches, end = struck(t)
            if pitches != last_pitches or end < later or later - t < beat:
                break
            self.close_given = t
        # the first onset's triad, (R or 1, 3) or None: that of the key known before it (--key's, or the one the
        # given notes suggest), or its relative key's where only that holds the given notes struck first
        self.opening = None
        if "beginning" in self.rules and (self.triad is not None or given):
            key = self.triad if self.triad is not None else estimated_triads(self.g_weight[None], self.g_last)
            begin = min((n.start for n in given), default=None)
            first = {n.pitch % 12 for n in given if n.start == begin}
            self.opening = next((t for t in (key, relative_triads(key)) if all(first <= set(r) for r in t.tolist())),
                                None)

    def reset(self, c, batch_size, device):
        rows = torch.arange(batch_size, device=device)  # each row's key and first chord, (B, 3), where known
        self.row_triad, self.row_opening = (t if t is None else t[rows % t.size(0)] for t in (self.triad, self.opening))
        # per part, its latest HISTORY onsets, the latest first: step, pitch (the first, highest, there) and end; the
        # step and pitch of its latest onset and the pitch of the note before it are views of them, and the pitch each
        # part sounded on the beat before is read from them (parallels between beats, with notes between them)
        self.hist_at, self.hist_pitch, self.hist_end = (
            torch.full((batch_size, c.spec.max_parts, self.HISTORY), -1, dtype=torch.long, device=device)
            for _ in range(3))
        self.onset_at, self.onset_pitch, self.prev_pitch = (self.hist_at[..., 0], self.hist_pitch[..., 0],
                                                            self.hist_pitch[..., 1])
        # and the durations per pitch class of the pitched notes so far, the given ones' all from the start: the key
        self.pc_weight = self.g_weight.expand(batch_size, -1).clone()
        self.first_at = torch.full((batch_size,), -1, dtype=torch.long, device=device)  # the first onset's step

    def consume(self, c, s):
        P = c.spec.max_parts
        for t in range(s.n):  # each part's latest onset and the pitch before it: its first (highest) note there
            at, p = s.note[:, t], s.part[:, t].clamp(max=P - 1)[:, None]
            moved = at & (self.onset_at.gather(1, p)[:, 0] != s.clock[:, t])
            self.first_at = torch.where(at & (self.first_at < 0), s.clock[:, t], self.first_at)
            k = p[:, :, None].expand(-1, 1, self.HISTORY)
            for h, new in ((self.hist_at, s.clock[:, t]), (self.hist_pitch, s.value[:, t]),
                           (self.hist_end, torch.full_like(s.clock[:, t], -1))):
                old = h.gather(1, k)                                                      # (B, 1, HISTORY)
                h.scatter_(1, k, torch.where(moved[:, None, None], torch.cat([new[:, None, None], old[..., :-1]], 2),
                                             old))
            ends = s.dur[:, t] & (self.onset_at.gather(1, p)[:, 0] == s.clock[:, t])  # the note's end, the longest
            end0 = self.hist_end[..., 0].gather(1, p)[:, 0]                             # there
            self.hist_end[..., 0].scatter_(1, p, torch.where(ends, torch.maximum(end0, s.clock[:, t] + s.value[:, t]),
                                                            end0)[:, None])
        pitched = s.dur & ~c.drum.gather(1, s.part.clamp(max=P - 1))
        if s.given is not None:  # (counted from the start)
            pitched &= ~s.given
        self.pc_weight.scatter_add_(1, s.pitch.clamp(min=0) % 12, torch.where(pitched, s.value, 0).double())

    def allowed(self, c):
        """(B, V) what the rules allow (`voiced`); sets `preferred`, what the rules on parallels and crossing allow,
        and `parts_due`."""
        v = c.value[None, :]
        last, last_bar_at = c.last, c.ends_at - c.bar_len
        col, P = (lambda x: x[:, None]), c.spec.max_parts
        parts, pitched = c.parts, c.pitched
        active = pitched & self.material.free_part[:P][None, :] if self.material is not None else pitched
        clock, state = c.clock, c.state
        ends = c.until.amax(2)                                                       # (B, P) each part's end
        begun = c.last_end > 0
        first_end = torch.where(active, ends, 1 << 40).amin(1)                        # (B,)
        # the final chord: at the last bar's first step, or, where the given notes close later in it (a chorale's
        # melody on its third beat), there
        final_at = last_bar_at if self.given is None else last_bar_at.clamp(min=self.close_given)
        # no part rests: with `rests` anywhere, with `ending` at the final chord, which every part strikes (drawn at
        # Bach's rhythm_temperature, a soprano had rested through the last bar and another come in on its third beat)
        final = last & (clock == final_at) & ("ending" in self.rules)
        rests = torch.full_like(last, "rests" in self.rules) | final
        first_end = torch.where(final, torch.maximum(first_end, final_at), first_end)  # (a part may have rested)
        ok = ~c.is_pos | ~col(begun & rests) | (col(c.bar_start) + v <= col(first_end))
        ok &= ~c.is_bar | ~col(begun & rests) | col(c.bar_start + c.bar_len <= first_end)
        at_onset = state == c.state_id["onset"]
        in_onset = at_onset | (state == c.state_id["note"]) | (state == c.state_id["loud"])
        # the lowest part that must still sound at this onset: any, before its first note; after one, a higher one
        due = active & (ends <= col(clock)) & (col(at_onset) | (parts > col(c.part))) & col(in_onset & rests)
        low = torch.where(due, parts, P).amin(1)                                      # (B,) P: none
        leaves = c.is_pos | c.is_bar | c.is_meter | c.is_ahead | c.only_end
        ok &= ~c.is_p | (v <= col(low))
        ok &= ~leaves | col(low == P)
        ok &= ~c.is_n | ~col(at_onset) | col(c.part <= low)
        # parallels: the pitch of the current part p against each part q that moved at this onset
        p = c.part.clamp(max=P - 1)[:, None]
        old_p, at_p = self.onset_pitch.gather(1, p), self.onset_at.gather(1, p)      # (B, 1)
        moves = (at_p >= 0) & (at_p < col(clock))                                     # p's next note is a move
        new_q, old_q = self.onset_pitch, self.prev_pitch                              # (B, P)
        moved = pitched & (self.onset_at == col(clock)) & (old_q >= 0) & (new_q != old_q) & (parts != p)
        before = (old_p - old_q).abs() % 12                                           # (B, P)
        x = self.pitches[None, None, :]                                               # candidates (1, 1, N)
        parallel = ((moved & ((before == 0) | (before == 7)))[:, :, None]
                    & ((x - new_q[:, :, None]).abs() % 12 == before[:, :, None])
                    & ((x - old_p[:, :, None]).sign() == (new_q - old_q).sign()[:, :, None])
                    & (x != old_p[:, :, None])).any(1)                                # (B, N)
        # and between beats: on a beat, against each part sounding now, from the pitches both sounded on the beat
        # before (where either moved between them by notes of its own, a passing quaver: 125 of the 163 parallels
        # of 96 chorales with durations at 1.5 were so, and 158 of Bach's 247 in 200)
        beat = c.beats[c.meter.clamp(min=0)].clamp(min=1)                            # (B,)
        on_beat = ((clock - c.bar_start) % beat == 0) & (clock >= beat)
        then, now = col(clock - beat)[:, :, None], col(clock)[:, :, None]
        def sounding_at(step):  # (B, P): each part's pitch sounding at step, its latest onset at or before it, or -1
            struck = (self.hist_at >= 0) & (self.hist_at <= step)
            k = struck.long().argmax(2, keepdim=True)                                # the latest first: the first
            held = struck.gather(2, k) & (self.hist_end.gather(2, k) > step)
            return torch.where(held, self.hist_pitch.gather(2, k), -1)[..., 0]
        was, sounds = sounding_at(then), sounding_at(now)
        was_p = was.gather(1, p)                                                      # (B, 1)
        before = (was_p - was).abs() % 12
        between = ((pitched & (parts != p) & (was >= 0) & (sounds >= 0) & (sounds != was) & col(on_beat)
                    & (was_p >= 0) & ((before == 0) | (before == 7)))[:, :, None]
                   & ((x - sounds[:, :, None]).abs() % 12 == before[:, :, None])
                   & ((x - was_p[:, :, None]).sign() == (sounds - was).sign()[:, :, None])
                   & (x != was_p[:, :, None])).any(1)                                # (B, N)
        at_pitches = parallel | between
        parallel = torch.zeros(len(clock), v.size(1), dtype=torch.bool, device=v.device)  # (B, V): False but at
        parallel[:, self.pitch_ids] = at_pitches                                          # the pitches
        mine = active.gather(1, p)[:, 0]
        # no crossing: a note of p at or under the part above it, at or over the part below, where those sound
        sounding = pitched & (ends > col(clock))                                      # (B, P) struck now or held
        above, below = (p - 1).clamp(min=0), (p + 1).clamp(max=P - 1)
        top = torch.where((p > 0) & sounding.gather(1, above), self.onset_pitch.gather(1, above), 1 << 30)
        floor = torch.where((p < P - 1) & sounding.gather(1, below), self.onset_pitch.gather(1, below), -1)
        self.preferred = ~c.is_n | ((~col(moves[:, 0]) | ~parallel | ("parallels" not in self.rules))
                                    & (~col(mine) | ((v <= top) & (v >= floor)) | ("crossing" not in self.rules)))
        # the last bar: a cadence on the tonic
        triad = self.row_triad if self.triad is not None else estimated_triads(self.pc_weight, self.g_last)
        pc = c.value[None, :] % 12
        bass = torch.where(active.sum(1) > 1, torch.where(active, parts, -1).amax(1), -1)  # (one line: no bass)
        if self.material is not None and self.material.material.bass is not None:  # (an added bass)
            bass = torch.full_like(bass, self.material.material.bass)
        # (B, V): the notes of triad t (B or 1, 3), its root in the bass
        chord = lambda t: (pc[:, None, :] == t[:, :, None]).any(1) & (~col(c.part == bass) | (pc == t[:, :1]))
        rooted = torch.zeros_like(last)  # (B,) where a chord with its root in the bass is asked for at this onset
        under = torch.where(sounding & (parts != col(bass)), self.onset_pitch, 1 << 30).amin(1)  # (B,)
        at_end = last & (clock >= final_at)
        ending = mine & ("ending" in self.rules)
        ok &= ~c.is_n | ~col(at_end & ending) | chord(triad)
        rooted |= at_end & ending
        ok &= ~c.is_d | ~col(~at_end & ending) | (col(clock) + v <= col(final_at))
        # with several parts, the final chord is struck once and held to the end, as Bach's are (198 of 200 strike it
        # once; at the defaults 85 of 96 struck it again on later beats, crotchets): a written note from it on
        # reaches the end, a part holding one strikes no other, and once all hold, no onset comes (but a drum's)
        closing = at_end & ("ending" in self.rules) & (bass >= 0)
        chorded = closing & mine                                                                    # (B,)
        ok &= ~c.is_d | ~col(chorded) | (col(clock) + v == col(c.ends_at))
        holding = active & (self.onset_at < col(clock)) & sounding                                  # (B, P)
        ok &= ~c.is_n | ~col(chorded) | ~holding.gather(1, p)
        ok &= ~c.is_p | ~col(closing) | ~holding.gather(1, v.clamp(0, P - 1).expand(len(clock), -1))
        held = last & (bass >= 0) & (torch.where(active, ends, 1 << 40).amin(1) >= c.ends_at) & ~c.drum.any(1)
        onset_ok = torch.zeros_like(v, dtype=torch.bool)  # (given notes still to come bring their onsets: a
        if self.material is not None:                      # melody's G struck again over the parts held)
            onset_ok = col(c.bar_start) + v == col(self.material.start[self.material.next])
        ok &= ~c.is_pos | ~col(held & ("ending" in self.rules)) | onset_ok
        if "phrases" in self.rules and c.plan is not None:  # every PHRASE_BARS bars but in the last two, a phrase
            # closes: its bar's last two beats are one chord held to the bar line (Bach's chorales hold 2.7 chords a piece
            # for a half note or more before the last, on the first or third beat, most two or four bars apart; the
            # defaults without this rule held 0.5), no onset within them (but a drum's or a given note's) and every
            # written note struck from them on held
            bar = c.bars - 1                                                             # (B,) from 0
            closes = (bar >= 0) & ((bar + 1) % PHRASE_BARS == 0) & (bar < c.plan - 2)  # (the last two bars: the
            # cadence's; a close in the bar before the last held the beat the dominant wants, and eval.md's chorales
            # of 17 bars lost their cadence and their held last chord)
            if self.form is not None:  # (a bar the form repeats holds its model bar's notes)
                closes &= ~self.form.source(bar, c.plan)[0]
            bar_end = c.bar_start + c.bar_len
            hold_from = (bar_end - 2 * c.beats[c.meter.clamp(min=0)].clamp(min=1)).clamp(min=c.bar_start)
            ok &= ~c.is_pos | ~col(closes & ~c.drum.any(1)) | (col(c.bar_start) + v <= col(hold_from)) | onset_ok
            reach = col(clock) + v
            ok &= ~c.is_d | ~col(closes & mine) | (reach == col(bar_end)) | (col(clock < hold_from)
                                                                             & (reach <= col(hold_from)))
            # and, before the last bar, no written note lasts longer than a bar: the singers breathe (Bach's 413
            # chorales hold 66 of their 121k notes longer than a whole note; with durations drawn at 1.5, the
            # defaults held 59 of 22k, and 2 of 96 chorales stood still on chords of two and three bars)
            ok &= ~c.is_d | ~col(mine & ~last) | (v <= col(c.bar_len))
        pitch_pc = torch.arange(c.until.size(2), device=pc.device) % 12  # (K,) each pitch's class

        def sounded(where, pcs):  # (B, V): where `where` (B,) and no part holds the pitch class pcs (B or 1, 1) or
            # has struck it at this onset, the part above the bass strikes it
            heard = ((c.until > clock[:, None, None]) & (pitch_pc == pcs[:, :, None])).any(2).any(1)
            return ~c.is_n | ~col(where & (c.part == bass - 1) & ~heard) | (pc == pcs)
        full = active.sum(1) >= 3  # (a third asked for with three parts or more)
        if "third" in self.rules:  # and the final chord has its third (a bare fifth or octave closed 14 of 96
            # chorales at Bach's defaults, Bach's one in 200)
            ok &= sounded(ending & at_end & full, triad[:, 1:2])
        if "cadence" in self.rules:  # the beat before the final chord: the dominant (V or V7), its root in the bass
            close = final_at - c.beats[c.meter.clamp(min=0)].clamp(min=1)  # (B,) where the beat before it begins
            known = torch.ones_like(last) if c.plan is not None else c.bars_left < c.more  # (the bars left known)
            dominant = (triad[:, :1] + self.dominant[0]) % 12                         # (B or 1, 4), its root first
            if self.scale is not None:  # a scale held: its own third, a note outside it the root again (none)
                dominant = (triad[:, :1] + self.dominant[self.scale[dominant[:, 1]].long() ^ 1]) % 12
                dominant = torch.where(self.scale[dominant], dominant, dominant[:, :1])
                known = known & self.scale[dominant[:, 0]]
            given_lt = torch.zeros_like(known)
            if self.given is not None:  # not where a given note sounding in that beat is no note of it, but for
                # a note of the tonic triad struck after the beat's start (a melody's 2 1 | 1 anticipates its last
                # note) and the tonic held into the beat and left in it (1 7 | 1: a suspension)
                start, end, given_pc = self.given
                sounding = (start[None, :] < col(final_at)) & (end[None, :] > col(close))        # (B, G)
                given_fits = (given_pc[None, :, None] == dominant[:, None, :]).any(2)            # (B or 1, G)
                given_fits = given_fits | ((given_pc[None, :, None] == triad[:, None, :]).any(2)
                                           & (start[None, :] > col(close))
                                           | (given_pc[None, :] == triad[:, :1]) & (end[None, :] < col(final_at)))
                known = known & ~(sounding & ~given_fits).any(1)
                given_lt = (sounding & (given_pc[None, :] == dominant[:, 1:2])).any(1)  # (no leading tone doubled)
            due = mine & known & ~at_end
            ok &= ~c.is_n | ~col(due & (clock >= close)) | chord(dominant)
            rooted |= due & (clock >= close)
            # and its leading tone sounds: where no part holds it or has struck it at this onset, the part above the
            # bass strikes it (its third: V without it was the model's in a third of 96 chorales)
            spared = (dominant[:, 1] != (triad[:, 0] + 11) % 12) | given_lt  # (a scale held without it: none)
            ok &= sounded(due & (clock >= close) & ~spared, dominant[:, 1:2])
            # a note of another pitch (the bass's: another than the root) ends by that beat
            now = c.pitch % 12
            fits = (col(now) == dominant).any(1) & ((c.part != bass) | (now == dominant[:, 0]))
            ok &= ~c.is_d | ~col(due & ~fits) | (col(clock) + v <= col(close))
        if self.opening is not None:  # the first onset: its triad, the root in the bass
            first = (self.first_at < 0) | (self.first_at == clock)
            ok &= ~c.is_n | ~col(mine & first) | chord(self.row_opening)
            rooted |= mine & first
            if "third" in self.rules:  # and its third, as the last chord's (Bach's first chords: 194 of 200)
                ok &= sounded(mine & first & full, self.row_opening[:, 1:2])
        # and there the bass sounds under every other part, where parts may cross elsewhere (a tenor under it turned the
        # dominant over in 3 of 96 chorales at Bach's defaults, the last chord in 1): a preference, as crossing is,
        # given up before the chord
        self.preferred &= ~c.is_n | ~col(rooted & (c.part == bass)) | (v <= col(under))
        self.parts_due = low < P
        return ok


class ParallelsAndCrossing(Rule):
    """Voice leading's rules on parallels and crossing (VoiceLeading.preferred, found with the others): soft, and
    the first to give way."""
    soft = True

    def __init__(self, voice):
        self.voice = voice

    def allowed(self, c):
        return self.voice.preferred


class Ending(Rule):
    """The END comes in the last bar once something sounds there (and all given material is written); on the last
    step of the last bar, once a whole note has started there, the piece ends: no pile of notes (with part writing's
    rules: once every part sounds there). The meter changes only at a bar line, to another meter, not under a length
    control, and not so that a note rings past the last bar; onsets stay inside the bar and no note outlasts the
    last bar."""

    def __init__(self, material=None, voice=None):
        self.material, self.voice = material, voice

    def allowed(self, c):
        v = c.value[None, :]
        end_ok = c.last & (c.last_end > c.bar_start) | (c.state == c.state_id["end"])
        if self.material is not None:
            end_ok = end_ok & self.material.all_given
        closing = end_ok & c.last & c.note_state & ~c.first[:, 0] & (c.pos == c.bar_len - 1)
        if self.voice is not None:
            closing &= ~self.voice.parts_due
        ok = ~c.only_end[None, :] | end_ok[:, None]
        ok = torch.where(closing[:, None], c.only_end, ok)
        meter_ok = (c.state != c.state_id["bar"])[:, None] | (
            (torch.arange(v.size(1), device=v.device)[None, :] != c.meter[:, None]) & (c.plan is None)
            & (c.last_end[:, None] <= c.bar_start[:, None] + c.bars_left[:, None] * v))
        return (ok & (~c.is_meter | meter_ok) & (~c.is_pos | (v < c.bar_len[:, None]))
                & (~c.is_d | (c.clock[:, None] + v <= c.ends_at[:, None])))


class InKey(Rule):
    """Controls.in_key: the notes of every written pitched part in each row's key (Controls.triad's, in turn: the major
    scale above its tonic, or `minor`, as its third is), a note outside it only while at most `share` of the piece's
    notes are, and only where its part moves on by a semitone (to the key's note beside it: no two notes outside
    these keys lie a semitone apart), so that a chromatic note is a leading tone resolved, or a passing one: the next
    note of the part that struck one, at a later onset, is at most a semitone from it. Soft. (Without the share, 96
    chorales of Bach's defaults went 9 % of their notes outside the key drawn and were heard in it in 38; with it, 2 %
    and 64, with the natural seventh outside a minor key 72: models/corpus/MODEL.md.)"""
    soft = True
    minor = KEY_STEPS["minor"] - {10}  # the minor Bach writes: its raised sixth and seventh, the natural seventh a
    # chromatic note (with it in the key, chorales asked for in D minor wrote F major: README, "Defaults per style")
    share = 1 / 30  # of a piece's notes outside its key, at most: Bach's chorales have 3.3 % (evaluate.py --listen)

    def __init__(self, c, controls, material):
        device = c.value.device
        triads = torch.tensor(controls.triads(), device=device)                       # (R, 3)
        minor = ((triads[:, 1] - triads[:, 0]) % 12 == 3).long()
        steps = torch.tensor([[k in m for k in range(12)] for m in (KEY_STEPS["major"], self.minor)], device=device)
        self.key = steps[minor].gather(1, (torch.arange(12, device=device)[None, :] - triads[:, :1]) % 12)  # (R, 12)
        self.material = material  # (the Material rule, or None)

    def reset(self, c, batch_size, device):
        self.row_key = self.key[torch.arange(batch_size, device=device) % self.key.size(0)]       # (B, 12)
        # per part, the pitch of its latest note where that is outside the key (-1 where not), and its onset
        self.owed, self.owed_at = (torch.full((batch_size, c.spec.max_parts), -1, dtype=torch.long, device=device)
                                   for _ in range(2))
        self.notes, self.outside = (torch.zeros(batch_size, device=device) for _ in range(2))  # (B,) so far

    def consume(self, c, s):
        P = c.spec.max_parts
        for t in range(s.n):
            p, x = s.part[:, t].clamp(max=P - 1)[:, None], s.value[:, t]
            at = s.note[:, t] & ~c.drum.gather(1, p)[:, 0] & (True if s.given is None else ~s.given[:, t])
            outside = ~self.row_key.gather(1, (x.clamp(min=0) % 12)[:, None])[:, 0]
            for state, new in ((self.owed, torch.where(outside, x, -1)), (self.owed_at, s.clock[:, t])):
                state.scatter_(1, p, torch.where(at, new, state.gather(1, p)[:, 0])[:, None])
            self.notes += at
            self.outside += at & outside

    def allowed(self, c):
        P = c.spec.max_parts
        p = c.part.clamp(max=P - 1)[:, None]
        owed = self.owed.gather(1, p)[:, 0]
        due = (owed >= 0) & (self.owed_at.gather(1, p)[:, 0] < c.clock)
        if self.material is not None:
            due &= self.material.free_part[p[:, 0]]
        v = c.value[None, :]
        room = self.outside + 1 <= self.share * (self.notes + 1)  # (B,) for one more note outside the key
        outside = ~self.row_key.gather(1, (v % 12).expand(len(room), -1))
        return ~c.is_n | ((~due[:, None] | ((v - owed[:, None]).abs() <= 1)) & (room[:, None] | ~outside))


class KeyAndRange(Rule):
    """--key, --scale and --pitch_range: only their pitches, in every pitched part; a given note is exempt."""

    def __init__(self, c, tok, controls, material=None):
        self.ok = torch.tensor([kind(t) != "n" or controls.allows_pitch(int(t[1:])) for t in tok.itos],
                               device=c.value.device)
        self.material = material

    def allowed(self, c):
        exempt = c.at_part(c.drum) | (self.material.given_pitch if self.material is not None else False)
        return ~c.is_n | self.ok | exempt


class Slots(Rule):
    """A prompt's tokens that the mask draws (its header, its bar lines: `slots` names the kind at each position)
    are of that kind; right after a prompt, no velocity token (it would change the prompt's last note)."""

    def __init__(self, c, slots):
        self.kinds = {i: c.kind == VALUED.index(k) for i, k in enumerate(slots) if k}
        if slots:
            self.kinds[len(slots)] = c.kind != VALUED.index("v")

    def allowed(self, c):
        return self.kinds.get(c.seen)


class Choir(Rule):
    """Controls.choir, the rules a choir master adds for four voices (a header of four pitched parts, soprano to bass
    as the chorales have them): each voice within its range (config.choir_ranges, measured on the Bach chorales),
    the alto within an octave under the soprano and the tenor within an octave under the alto (where those sound),
    no leap over an octave in a voice, no voice striking one pitch more than `most_strikes` times running (a
    voice that stands still avoids parallels) and none going back to the pitch before its last (a b a) where it
    did so `most_returns` times in its `return_window` notes before (a voice rocking between two pitches avoids
    them too; those of `rules`: range, spacing, leap, repeat, swing). Soft: where they would leave nothing
    canonical they give way, before the rules of voice leading do. Given material's parts are not written, so not
    ruled."""
    soft = True
    most_strikes = 3  # Bach's chorales: 1.7 % of a voice's notes strike its pitch a fourth time or more
    most_returns, return_window = 2, 4  # and 1.5 % go back (a b a) after two such returns in the four notes before

    def __init__(self, c, material, rules):
        self.rules = rules
        lo, hi = zip(*config.choir_ranges)
        self.lo, self.hi = (torch.tensor(x, device=c.value.device) for x in (lo, hi))  # (4,) soprano to bass
        self.material = material  # (the Material rule, or None)

    def reset(self, c, batch_size, device):
        self.last_pitch = torch.full((batch_size, c.spec.max_parts), -1, dtype=torch.long, device=device)
        self.strikes = torch.zeros_like(self.last_pitch)  # how many times running the part struck its latest pitch
        self.before = torch.full_like(self.last_pitch, -1)  # the pitch it had before its latest
        self.returns = torch.zeros_like(self.last_pitch)  # bit k: its note k back went back to its pitch before last

    def consume(self, c, s):  # each part's latest pitch, the one before, its strikes and its returns
        P, window = c.spec.max_parts, (1 << self.return_window) - 1
        for t in range(s.n):
            p, at, x = s.part[:, t].clamp(max=P - 1)[:, None], s.note[:, t], s.value[:, t]
            last, struck, before, returns = (a.gather(1, p)[:, 0] for a in (
                self.last_pitch, self.strikes, self.before, self.returns))
            back = (x == before) & (x != last)
            for state, new in ((self.strikes, torch.where(x == last, struck + 1, 1)), (self.before, last),
                               (self.returns, (returns << 1 | back.long()) & window), (self.last_pitch, x)):
                state.scatter_(1, p, torch.where(at, new, state.gather(1, p)[:, 0])[:, None])

    def allowed(self, c):
        v, P, col = c.value[None, :], c.spec.max_parts, (lambda x: x[:, None])
        parts, pitched = c.parts, c.pitched
        p = c.part.clamp(max=P - 1)
        voice = (pitched & (parts < col(p))).sum(1)                                  # (B,) 0 soprano .. 3 bass
        mine = (pitched.sum(1) == 4) & pitched.gather(1, col(p))[:, 0]
        if self.material is not None:
            mine &= self.material.free_part[p]
        k = voice.clamp(max=3)
        in_range = (v >= col(self.lo[k])) & (v <= col(self.hi[k]))
        # the pitch the voice above sounds now (its highest key whose note ends after the clock), if any
        keys = torch.arange(c.until.size(2), device=v.device)
        top = torch.where(c.until > c.clock[:, None, None], keys, -1).amax(2)      # (B, P)
        above = torch.where(pitched & (parts < col(p)), parts, -1).amax(1)           # (B,) -1: none
        over = torch.where(above >= 0, top.gather(1, col(above.clamp(min=0)))[:, 0], -1)
        spaced = col((voice == 0) | (voice == 3) | (over < 0)) | (v >= col(over - 12))
        last = self.last_pitch.gather(1, col(p))[:, 0]
        no_leap = col(last < 0) | ((v - col(last)).abs() <= 12)
        moving = (v != col(last)) | col(self.strikes.gather(1, col(p))[:, 0] < self.most_strikes)
        before, returns = (a.gather(1, col(p))[:, 0] for a in (self.before, self.returns))
        returned = sum((returns >> k) & 1 for k in range(self.return_window))
        unswung = (v != col(before)) | (v == col(last)) | col(returned < self.most_returns)
        kept = None
        for name, ok in (("range", in_range), ("spacing", spaced), ("leap", no_leap), ("repeat", moving),
                         ("swing", unswung)):
            if name in self.rules:
                kept = ok if kept is None else kept & ok
        return None if kept is None else ~c.is_n | ~col(mine) | kept


class Canonical(Rule):
    """The canonical form the training data has, so that decoding drops nothing: onsets rise within a bar, parts
    rise within an onset, pitches fall within a part, a key is not struck again in its part while it sounds, and a
    velocity is written where a part's changes (and at its first note) only. Soft, and the last to give way."""
    soft = True

    def allowed(self, c):
        v = c.value[None, :]
        sounding = c.until.gather(1, c.part.clamp(max=c.spec.max_parts - 1)[:, None, None].expand(
            -1, 1, c.until.size(2)))[:, 0]                                    # (B, pitches): where each key ends
        key_free = sounding.gather(1, c.value.clamp(0, sounding.size(1) - 1).expand(c.state.size(0), -1)) <= \
            c.clock[:, None]
        return ((~c.is_pos | (v > c.pos[:, None])) & (~c.is_v | (v != c.part_vel)) & (~c.first | c.is_v)
                & (~c.is_p | torch.where(c.note_state[:, None], v > c.part[:, None], v != c.part[:, None]))
                & (~c.is_n | ((v < c.floor[:, None]) & key_free)))


class GrammarMask:
    """allowed_fn for GPT.generate: the grammar and a request's controls as one mask over the next token, a cursor
    and rules. Every rule is a lookup or a comparison over (B, V) on the device, so rows of one batch may be in
    different states. The hard rules (the grammar, parts, the countdown, given material, form, the ending, the key
    and range, a prompt's slots) all hold; the soft rules of part writing (Controls.voice_leading, Controls.choir),
    a drawn key's (Controls.in_key) and a form's new letters (Contrast) hold where they leave a canonical token, the
    latest in the list given up first; the canonical form holds where it leaves any token; where nothing is left the
    row may only end. Inside a block of given material its token is the only one.

    A new control: a field of Controls, a flag, and a Rule added to the list in __init__."""

    def __init__(self, tok, device, controls=Controls(), slots=(), material=None, rhythm=1.0):
        self.cursor = c = Cursor(tok, device, controls, material)
        self.rhythm = rhythm  # pool(): the durations' temperature over the draw's
        given = Material(c, tok, material) if material is not None else None
        voice = VoiceLeading(c, controls, given) if controls.voice_leading else None
        form = Form(c, controls, given) if controls.form or material is not None and material.repeats else None
        if voice is not None:
            voice.form = form
        self.countdown = Countdown(c, slots)
        self.rules = [Grammar(c, tok, controls, material), Parts(c, tok, controls), self.countdown]
        self.rules += [given] if given else []
        self.rules += [form] if form else []
        # the soft rules, in the order they hold (the last gives way first): voice leading's main rules, the choir's,
        # those on parallels and crossing, a key's chromatic notes resolved, then a form's new letters; before the
        # ending, which waits for the parts voice leading says are due
        self.rules += [voice] if voice else []
        self.rules += [Choir(c, given, controls.choir_rules)] if controls.choir else []
        self.rules += [ParallelsAndCrossing(voice)] if voice else []
        self.rules += [InKey(c, controls, given)] if controls.in_key and controls.triad is not None else []
        self.rules += [Contrast(form)] if controls.form else []
        self.rules += [Ending(given, voice), KeyAndRange(c, tok, controls, given), Slots(c, slots), Canonical()]
        self.material = given

    def __call__(self, idx):
        c = self.cursor
        if c.seen == 0:
            c.reset(idx.size(0), idx.device)
            for rule in self.rules:
                rule.reset(c, idx.size(0), idx.device)
        if idx.size(1) > c.seen:  # the tokens added since the last call (the prompt, then one at a time)
            step = c.consume(idx[:, c.seen:])
            for rule in self.rules:
                rule.consume(c, step)
        c.seen = idx.size(1)
        c.settle()
        hard, soft = None, []
        for rule in self.rules:
            if (ok := rule.allowed(c)) is None:
                continue
            if rule.soft:
                soft.append(ok)
            else:
                hard = ok if hard is None else hard & ok
        *tiers, canon = soft  # the soft rules but the canonical form, in the order they give way, the last first
        some = lambda m: (m & canon).any(1, keepdim=True)
        allowed, held = hard, hard
        for t in tiers:  # the most tiers that leave a canonical token
            held = held & t
            allowed = torch.where(some(held), held, allowed)
        allowed = torch.where(allowed.any(1, keepdim=True), allowed, c.only_end)  # never nothing: then the END
        canonical = allowed & canon
        out = torch.where(canonical.any(1, keepdim=True), canonical, allowed)
        if self.material is not None and self.material.block_token is not None:  # inside a block, nothing else
            out = torch.where(self.material.block_token.any(1, keepdim=True), self.material.block_token, out)
        return out

    def pool(self, logits):
        """Logits (B, V) as the mask wants them read: where a note's duration is due, divided by `rhythm` (draw's
        rhythm_temperature); where a planned length allows one first bar line only, that line takes the model's chance
        of closing the header at any length (the log-sum of all bar lines), so that a model which had another length
        in mind does not name part after part instead. Call after the mask."""
        if self.rhythm != 1:
            logits = torch.where(self.cursor.duration_due[self.cursor.state][:, None], logits / self.rhythm, logits)
        planned = self.countdown.planned
        if planned is None:
            return logits
        closing = logits.masked_fill(~self.cursor.is_bar, float("-inf")).logsumexp(1, keepdim=True)
        return torch.where(planned, closing, logits)


def mask_rows(mask, ids, device):
    """(len(ids) - 1, V) bool: what `mask` (a fresh GrammarMask) allows at each position after the first, stepped
    along the token ids `ids` (to score a real piece as the sampler would draw it)."""
    x = torch.as_tensor([int(i) for i in ids], device=device)[None]
    return torch.cat([mask(x[:, :t]) for t in range(1, x.size(1))])


def rule_breaks(tok, pieces, controls, device="cpu", batch_tokens=65536, progress=None):
    """Teacher-forced along real pieces (token id lists from START, stepped as the sampler steps its rows, in batches
    of similar length and at most `batch_tokens` tokens with the padding): where the rules of `controls` forbid
    tokens that the grammar alone allows, and whether the piece takes one there. Per piece (positions, forbidden,
    broken): the positions (from 1) of the tokens where the rules forbid some, what they forbid there ((n, V) bool,
    packed along V by np.packbits) and whether the piece's own token is among it ((n,) bool: it breaks the rule).
    `progress`, if given, is called with the number of pieces each batch finishes."""
    end, V = tok.stoi[END], tok.vocab_size
    out = [None] * len(pieces)
    order, batches = sorted(range(len(pieces)), key=lambda k: len(pieces[k])), [[]]
    for k in order:  # the longest last: a batch's padding is its rows times its longest piece
        if batches[-1] and (len(batches[-1]) + 1) * len(pieces[k]) > batch_tokens:
            batches.append([])
        batches[-1].append(k)
    for rows in batches:
        lengths = torch.tensor([len(pieces[k]) for k in rows], device=device)
        x = torch.full((len(rows), int(lengths.max())), end, dtype=torch.long, device=device)  # (B, T) padded
        for j, k in enumerate(rows):
            x[j, :len(pieces[k])] = torch.as_tensor(pieces[k], dtype=torch.long, device=device)
        grammar, ruled = GrammarMask(tok, device), GrammarMask(tok, device, controls)
        found = [[] for _ in rows]  # per row: (position, forbidden, broken)
        for t in range(1, x.size(1)):
            forbidden = grammar(x[:, :t]) & ~ruled(x[:, :t])                # (B, V)
            broken = forbidden.gather(1, x[:, t:t + 1])[:, 0]
            for j in torch.nonzero(forbidden.any(1) & (lengths > t))[:, 0].tolist():
                found[j].append((t, forbidden[j].cpu().numpy(), bool(broken[j])))
        for j, k in enumerate(rows):
            at, rows_, broke = zip(*found[j]) if found[j] else ((), np.zeros((0, V), dtype=bool), ())
            out[k] = (np.array(at, dtype=np.int64), np.packbits(np.array(rows_, dtype=bool).reshape(-1, V), axis=1),
                      np.array(broke, dtype=bool))
        if progress is not None:
            progress(len(rows))
    return out


@torch.no_grad()
def draw_styles(model, tok, n, seed, temperature=1.0, top_k=None, top_p=None, piece=None, min_parts=1):
    """Each of n samples' style, drawn as the first token after START would be (the model's choice among the run's
    styles) but before the rest, so that the style's defaults can hold for what follows; with `piece`, weighed by it
    (style_logits). Same seed, same styles."""
    logits = style_logits(model, tok, piece, min_parts)
    device = logits.device
    picks = sample_logits(logits.expand(n, -1), temperature, top_k, top_p, torch.Generator(device).manual_seed(seed))
    return [tok.spec.styles[i] for i in picks.tolist()]


@torch.no_grad()
def style_logits(model, tok, piece=None, min_parts=1):
    """(1, S) the log odds of the run's styles (tok.spec.styles) as the first token after START. With `piece` (the
    tokens from START of a piece given, its style token any), each is weighed by how likely the model finds the piece
    under it (its first block_size tokens): P(style | START) P(piece | style), Bayes' rule. A piece that stops at its
    meter (its parts to be drawn) with `min_parts` 2 is weighed by the chance of a first part and a second (over the
    first's instrument): a harmonization's."""
    device = next(model.parameters()).device
    ids = torch.tensor([tok.stoi[f"style:{s}"] for s in tok.spec.styles], device=device)
    logits, _ = model(torch.full((1, 1), tok.stoi[START], device=device))
    logits = logits[:, -1].float()[:, ids]
    if piece is not None and len(piece) > 2:
        x = torch.tensor([tok.encode(piece[:model.cfg.block_size])], device=device).repeat(len(ids), 1)
        x[:, 1] = ids  # the piece under each style in turn
        logp = torch.log_softmax(model(x)[0].float(), -1)  # (S, T, V)
        logits = logits + logp[:, 1:-1].gather(2, x[:, 2:, None])[..., 0].sum(1)[None]  # each token after the style
        if min_parts >= 2 and kind(piece[-1]) == "meter":
            insts = torch.tensor([i for t, i in tok.stoi.items() if kind(t) == "inst"], device=device)
            first = logp[:, -1, insts]                                            # (S, I): the first part's
            y = torch.cat([x.repeat_interleave(len(insts), 0), insts.repeat(len(ids))[:, None]], 1)
            second = torch.log_softmax(model(y)[0][:, -1].float(), -1)[:, insts].logsumexp(1)  # another after it
            logits = logits + (first + second.view(len(ids), -1)).logsumexp(1)[None]
    return logits


def draw(model, tok, request, n, seed, temperature=1.0, top_k=None, top_p=None, max_new=1024, constrained=True,
         rhythm_temperature=0):
    """n samples (token lists, padded with END) of a Request: START, its prompt (forced, read in one forward pass;
    its undrawn tokens drawn under the mask, a bar line where its bar lines stand), then what the model writes under
    the mask (without `constrained`, under nothing). A length control sets the budget that lets every sample reach
    its target; else at most `max_new` tokens after the prompt. The same seed gives the same samples. A note's
    duration is drawn at `rhythm_temperature` where it is not 0 (under the mask; config.rhythm_temperature says
    why), the rest at `temperature`; at temperature 0 all is greedy."""
    device = next(model.parameters()).device
    c, spec = request.controls, tok.spec
    forced = [-1] + [-1 if t is None else tok.stoi[t] for t in request.prompt]  # (START is the start)
    n_parts = c.part_count() or spec.max_parts
    drawn_bar = ["bar" if t is None and i >= len(HEADER) + n_parts else None for i, t in enumerate(request.prompt)]
    rhythm = rhythm_temperature / temperature if rhythm_temperature and temperature else 1.0
    mask = GrammarMask(tok, device, c, [None] + drawn_bar, request.material, rhythm) if constrained else None
    torch.manual_seed(seed)
    out = model.generate(torch.full((n, 1), tok.stoi[START], device=device),
                         len(request.prompt) + c.token_budget(spec, otherwise=max_new), temperature, top_k, top_p,
                         allowed_fn=mask, stop_id=tok.stoi[END], generator=torch.Generator(device).manual_seed(seed),
                         keep=1 + len(HEADER) + n_parts, forced=forced)
    return [tok.decode(row) for row in out.tolist()]
