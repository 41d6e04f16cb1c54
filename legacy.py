"""The first edition of the token grammar (tokenizer version 2: one part, no bar lines, `sepxx d{steps}` rests),
kept only so that a run trained on it still samples: the shipped models/corpus, until it is retrained on the second
edition. Sampling alone (no prompts, no training, no evaluation); remove this file with the last such run. The code
below is the first edition's as it was, trimmed to what sampling needs.

    START style:bach tempo:96 meter:3/4 n72 d4 v80 n64 d4 v70 sepxx d4 n74 d2 v82 ... END
"""
from dataclasses import dataclass, replace

import torch

import config
import controls
import encoding_decoding
from controls import grammar_tables
from encoding_decoding import END, START, Header, Note, Tokenizer, bar_steps, canonical, value

SEP = "sepxx"
HEADER = ("style", "tempo", "meter")
OPENING = ("begin",) + HEADER


def kind(token):
    """The second edition's kinds, and sepxx."""
    return SEP if token == SEP else encoding_decoding.kind(token)


GRAMMAR = {
    "begin": {START: "style"},
    "style": {"style": "tempo"},
    "tempo": {"tempo": "meter"},
    "meter": {"meter": "event"},
    "event": {"n": "note_dur", SEP: "rest_dur", END: "end"},
    "note_dur": {"d": "note_vel"},
    "note_vel": {"v": "event"},
    "rest_dur": {"d": "event"},
    "end": {},
}


@dataclass(frozen=True)
class Spec(encoding_decoding.Spec):
    """The first edition's vocabulary: the second's ranges and checks, its own meters (any other is meter:other)
    and tokens. A first-edition tokenizer JSON holds no max_parts or max_countdown: they keep their defaults."""
    meters: tuple = ("2/4", "3/4", "4/4", "6/8", "2/2", "3/8", "12/8", "9/8", "3/2", "6/4", "5/4", "4/2")

    def meter_token(self, meter):
        return f"meter:{meter}" if meter in self.meters else "meter:other"

    def header_tokens(self, header):
        return [f"style:{header.style}", self.tempo_token(header.bpm), self.meter_token(header.meter)]

    def vocab(self):
        """The closed vocabulary, in id order (the styles last, so that a new style only appends)."""
        (p0, p1), (v0, v1) = self.pitch_range, self.velocity_range
        return ([START, END, SEP] + [f"n{p}" for p in range(p0, p1 + 1)]
                + [f"d{d}" for d in range(1, self.max_dur + 1)] + [f"v{v}" for v in range(v0, v1 + 1)]
                + [f"tempo:{b}" for b in self.tempo_bpms()] + [self.meter_token(m) for m in self.meters]
                + ["meter:other"] + [f"style:{s}" for s in self.styles])


def finish(tokens):
    """Cut a sample at END, or after its last complete group, then close it."""
    return encoding_decoding.finish(tokens, GRAMMAR, ("event",), kind)


def tokens_to_notes(tokens, spec):
    """Any token list -> (canonical notes, Header, number of broken groups and stray tokens skipped). Never
    raises; reads the header and the groups by GRAMMAR and stops at END. A missing START or header part is no
    error (the header takes defaults): text from before the header decodes as it did."""
    vocab, notes, now, group, state, bad, head = set(spec.vocab()), [], 0, [], "begin", 0, []
    for tok in tokens:
        k = kind(tok) if tok in vocab else None
        nxt = GRAMMAR[state].get(k)
        if nxt is None and state in OPENING:  # no START or a header cut short: go on with the events
            state = "event"
            nxt = GRAMMAR[state].get(k)
        if nxt is None and state != "event":  # a group broken off: drop it, read this token afresh
            bad, group, state = bad + 1, [], "event"
            nxt = GRAMMAR[state].get(k)
        if nxt is None:  # a stray token: junk, a lone d or v, a START
            bad += 1
            continue
        if nxt == "end":
            break
        if state in OPENING:
            head.append(tok)
            state = nxt
            continue
        group.append(tok)
        state = nxt
        if state == "event":  # a group is complete
            if group[0] == SEP:
                now += int(group[1][1:])
            else:
                notes.append(Note(now, int(group[0][1:]), int(group[1][1:]), int(group[2][1:])))
            group = []
    return canonical(notes, spec), Header.of_tokens(head), bad + bool(group)


def token_values(itos, spec):
    """Per token id, the numbers the sampler's mask reads, as lists: pitch (n tokens, else -1), steps (d, else 0),
    the steps a token needs before a length target (a note 1, sepxx 2, d its steps; a rest's d one more, added by
    the mask), the steps of one bar (meter tokens, else 0; meter:other in 4/4) and the BPM (tempo tokens, else 0)."""
    values = {"pitch": [], "steps": [], "need": [], "bar": [], "bpm": []}
    for t in itos:
        k, v = kind(t), value(t)
        values["pitch"].append(int(t[1:]) if k == "n" else -1)
        values["steps"].append(int(t[1:]) if k == "d" else 0)
        values["need"].append({"n": 1, SEP: 2, "d": values["steps"][-1]}.get(k, 0))
        values["bar"].append(bar_steps(v, spec.sample_freq) if k == "meter" else 0)
        values["bpm"].append(float(v) if k == "tempo" else 0.0)
    return values


@dataclass(frozen=True)
class Controls(controls.Controls):
    """The second edition's controls as the first edition's mask reads them: a meter outside its list is
    meter:other (laid in 4/4 bars), and a length is a target in grid steps, not a plan."""

    def errors(self, spec):
        out = controls.Controls.errors(replace(self, meter=None), spec)
        if self.meter is not None and self.meter not in spec.meters + ("other",):
            out.insert(int(bool(out) and out[0].startswith("unknown style")),
                       f"unknown meter {self.meter!r}; this run knows: {', '.join(spec.meters + ('other',))}")
        return out

    def length_steps(self, bar, bpm, sample_freq):
        """The target length in grid steps for a piece whose bar has `bar` steps and whose header says `bpm`;
        None without a length control."""
        if self.bars is not None:
            return self.bars * bar
        if self.seconds is not None:
            return max(1, round(self.seconds * (self.bpm or bpm) / 60 * sample_freq))
        return None

    @property
    def has_length(self):
        return self.bars is not None or self.seconds is not None

    def token_budget(self, spec, otherwise):
        """With a length control: the most new tokens a sample can take before the mask forces its END (every
        step of the longest possible target filled with every pitch, highest first), header included; without
        one, `otherwise`."""
        if not self.has_length:
            return otherwise
        longest_bar = max(bar_steps(m, spec.sample_freq) for m in spec.meters + ("other",))
        steps = self.length_steps(longest_bar, spec.tempo_range[1], spec.sample_freq)
        return len(HEADER) + steps * (3 * (spec.pitch_range[1] - spec.pitch_range[0] + 1) + 2) + 1

    def token_mask(self, itos, spec):
        """Per token id, whether these controls let it appear at all (header values, pitches)."""
        forced = {"style": self.style and f"style:{self.style}", "tempo": self.tempo and spec.tempo_token(self.tempo),
                  "meter": self.meter and spec.meter_token(self.meter)}
        return [(not forced.get(k := kind(t)) or t == forced[k]) and (k != "n" or self.allows_pitch(int(t[1:])))
                for t in itos]


class GrammarMask:
    """allowed_fn for GPT.generate: the grammar and the sampling controls as one mask over the next token.

    Each sequence carries its grammar state, its clock (the onset step), the end of its longest note and, once its
    header is read, its bar length and tempo; every rule is a lookup or a comparison over (B, V) on the device, so
    rows of one batch may be in different states. Given tokens (a prompt, which GPT.generate takes as `forced`) are
    read like sampled ones. With a length control (Controls.bars / .seconds) no note may outlast the
    target, no rest may reach it, END comes only when a note ends exactly there, and on the last step that can hold
    an onset it comes as soon as it may; without one, END is held back until a sequence has `min_len` tokens.

    On top, the mask keeps samples in the canonical form the training data has, so that decoding drops nothing:
    notes that start together come highest first, a key is not struck again while it sounds, and a rest shorter
    than max_dur is followed by a note. Where those leave a row nothing (a narrow --pitch_range), it falls back to
    the grammar and the controls alone."""

    def __init__(self, tok, device, min_len=0, controls=Controls()):
        tensor = lambda x, **kw: torch.tensor(x, device=device, **kw)
        states, allowed, next_state = grammar_tables(tok.itos, GRAMMAR, kind)
        self.allowed = tensor(allowed) & tensor(controls.token_mask(tok.itos, tok.spec))  # (S, V) bool
        self.next_state = tensor(next_state)                                               # (S, V) state index
        values = token_values(tok.itos, tok.spec)
        self.pitch, self.steps, self.need, self.bar = (tensor(values[k]) for k in ("pitch", "steps", "need", "bar"))
        self.bpm = tensor(values["bpm"])
        # with --seconds: per tempo token (and for a piece without one), the target in steps as Controls reckons it,
        # in Python floats, so that the mask and the reckoning round a half step alike
        steps_at = lambda bpm: controls.length_steps(0, bpm, tok.spec.sample_freq) or 0  # 0: no --seconds
        self.seconds_at = tensor([steps_at(b or config.default_bpm) for b in values["bpm"]])
        self.seconds_default = steps_at(config.default_bpm)
        self.begin, self.event, self.note_dur, self.rest_dur, self.finished = (
            states.index(s) for s in ("begin", "event", "note_dur", "rest_dur", "end"))
        self.end, self.sep, self.min_len = tok.stoi[END], tok.stoi[SEP], min_len
        self.controls, self.spec = controls, tok.spec
        self.seen = 0
        self.only_end = torch.arange(len(tok.itos), device=device) == self.end
        self.default_bar = bar_steps("4/4", tok.spec.sample_freq)

    def reset(self, batch_size, device):
        zeros = lambda: torch.zeros(batch_size, dtype=torch.long, device=device)
        self.state = torch.full((batch_size,), self.begin, device=device)
        self.clock, self.last_end = zeros(), zeros()
        self.floor = torch.full((batch_size,), 1 << 30, device=device)
        self.until = torch.zeros(batch_size, self.spec.pitch_range[1] + 1, dtype=torch.long, device=device)
        self.rest = torch.zeros(batch_size, dtype=torch.long, device=device)  # after a rest: 1 short, 2 max_dur
        self.bar_len = torch.full((batch_size,), self.default_bar, device=device)
        self.seconds_target = torch.full((batch_size,), self.seconds_default, device=device)

    def consume(self, tok):
        """Advance every sequence by its tokens `tok` (B, n): one sampled token, or a whole prompt at once. Only the
        grammar state is stepped token by token; the clock and the note ends are running sums and maxima, and what
        the latest token of a kind sets (floor, rest, bar, tempo) is read at its position."""
        n, positions = tok.size(1), torch.arange(tok.size(1), device=tok.device)
        if n == 0:
            return
        before, state = [], self.state  # the grammar state before each token
        for t in range(n):
            before.append(state)
            state = self.next_state[state, tok[:, t]]
        before = torch.stack(before, 1)
        steps, pitch = self.steps[tok], self.pitch[tok]
        in_rest, in_note = before == self.rest_dur, before == self.note_dur  # a rest's or a note's duration token

        def latest(where, value, old):  # (B, n): after each token, `value` at the latest position `where` holds
            if n == 1:  # a sampled token: no running maximum to take
                return torch.where(where, value, old[:, None])
            at = torch.where(where, positions, -1).cummax(1).values
            return torch.where(at >= 0, value.gather(1, at.clamp(min=0)), old[:, None])

        clock = self.clock[:, None] + torch.where(in_rest, steps, 0).cumsum(1)  # the onset step after each token
        ends = clock + steps                                                     # at a note's duration: its end
        self.last_end = torch.maximum(self.last_end, torch.where(in_note, ends, 0).amax(1))
        floor = latest(in_rest | (pitch >= 0), torch.where(in_rest, 1 << 30, pitch), self.floor)
        floor_before = torch.cat([self.floor[:, None], floor[:, :-1]], 1)  # at a note's duration: its pitch
        key = floor_before.clamp(max=self.until.size(1) - 1)
        last = torch.full_like(self.until, -1).scatter_reduce(1, key, torch.where(in_note, positions, -1), "amax")
        self.until = torch.where(last >= 0, ends.gather(1, last.clamp(min=0)), self.until)
        self.rest = latest(in_rest | (pitch >= 0), torch.where(in_rest, 1 + (steps == self.spec.max_dur).long(), 0),
                           self.rest)[:, -1]
        self.floor, self.clock, self.state = floor[:, -1], clock[:, -1], state
        self.bar_len = latest(self.bar[tok] > 0, self.bar[tok], self.bar_len)[:, -1]
        self.seconds_target = latest(self.bpm[tok] > 0, self.seconds_at[tok], self.seconds_target)[:, -1]

    def target(self):
        """(B,) the length each sequence must end at, in steps (from its own meter and tempo); None if free."""
        if self.controls.bars is not None:
            return self.controls.bars * self.bar_len
        return self.seconds_target if self.controls.seconds is not None else None

    def __call__(self, idx):
        if self.seen == 0:
            self.reset(idx.size(0), idx.device)
        self.consume(idx[:, self.seen:])  # the tokens added since the last call (the prompt, then one at a time)
        self.seen = idx.size(1)
        allowed = self.allowed[self.state]
        target = self.target()
        if target is None:
            end_ok = torch.full_like(self.clock, idx.size(1) >= self.min_len, dtype=torch.bool)
        else:  # the steps left before the target; a rest's duration must leave one for a note after it
            room = target - self.clock - (self.state == self.rest_dur).long()
            allowed = allowed & (self.need <= room[:, None])
            end_ok = self.last_end >= target
            # at the last step that can hold an onset, once a note reaches the target and one starts here, the piece
            # ends: no pile of one-step notes on the final sixteenth
            closing = end_ok & (room < 2) & (self.state == self.event) & (self.rest == 0)
            allowed = torch.where(closing[:, None], self.only_end, allowed)
        allowed[:, self.end] &= end_ok | (self.state == self.finished)
        note = self.pitch >= 0
        sounding = self.until.gather(1, self.pitch.clamp(min=0).expand(idx.size(0), -1)) > self.clock[:, None]
        canonical = allowed & (self.pitch < self.floor[:, None]) & ~(sounding & note)  # pitch -1 passes the floor
        canonical[:, self.sep] &= self.rest != 1
        canonical[:, self.end] &= (self.rest == 0) | (self.state == self.finished)
        return torch.where(canonical.any(1, keepdim=True), canonical, allowed)


def load_tokenizer(path, d):
    """The Tokenizer of a version-2 tokenizer JSON `d` (read from `path`), checked as Tokenizer.load checks."""
    try:
        tok = Tokenizer(Spec.of(d["spec"]))
    except ValueError as e:
        raise ValueError(f"{path}: its spec is not one this code can use: {e}") from None
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"{path}: tokenizer JSON lacks or garbles its spec (edited by hand?)") from None
    if d.get("itos") != tok.itos or d.get("vocab_size") != tok.vocab_size:
        raise ValueError(f"{path}: vocabulary does not match its spec (edited by hand?)")
    tok.version = 2
    return tok


def decode(tokens, spec):
    """(notes, second-edition Header, bad groups) of a first-edition sample: one piano part."""
    notes, header, bad = tokens_to_notes(tokens, spec)
    return [Note(*n) for n in notes], Header(style=header.style, bpm=header.bpm, meter=header.meter), bad
