"""The request a sample must obey: `Controls` (style, tempo, meter, parts and instruments, length, form, key, pitch
range, the rules of part writing), checked against a vocabulary; `Given` material (a melody to harmonize, bars to
fill in, a part to add) and the functions that make it; keys and scales by name. mask.py turns a request into the
sampler's mask and draws from it.
"""
import random
import re
from dataclasses import dataclass, replace

import config
import configurator
from encoding_decoding import HEADER, ahead_blocks, as_note, kind, notes_to_tokens
from midi_io import instrument_number


KEY_MODES = {  # semitones above the tonic
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
    "melodic minor": (0, 2, 3, 5, 7, 9, 11), "dorian": (0, 2, 3, 5, 7, 9, 10), "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11), "mixolydian": (0, 2, 4, 5, 7, 9, 10), "locrian": (0, 1, 3, 5, 6, 8, 10),
    "major pentatonic": (0, 2, 4, 7, 9), "minor pentatonic": (0, 3, 5, 7, 10), "blues": (0, 3, 5, 6, 7, 10),
}


# The pitch classes of a key above its tonic, as a listener hears them in a piece: major, and minor with its raised
# sixth and seventh (the melodic and harmonic minor's leading tone belongs to the key)
KEY_STEPS = {"major": {0, 2, 4, 5, 7, 9, 11}, "minor": {0, 2, 3, 5, 7, 8, 9, 10, 11}}


NOTE_NAMES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


def pitch_class(name):
    """'F#' / 'Bb' / 'c' / '7' -> 0..11; ValueError otherwise."""
    if name.isdigit() and int(name) < 12:
        return int(name)
    m = re.fullmatch(r"([A-Ga-g])([#b]*)", name)
    if not m:
        raise ValueError(f"{name!r} is not a pitch class (C, F#, Bb, or 0..11)")
    return (NOTE_NAMES[m[1].lower()] + m[2].count("#") - m[2].count("b")) % 12


def parse_key(key):
    """'D minor', 'F# major', 'Bb dorian', 'A' (major) -> (the tonic's pitch class, the mode's steps above it)."""
    tonic, _, mode = key.strip().partition(" ")
    mode = " ".join(mode.lower().split()) or "major"
    if mode not in KEY_MODES:
        raise ValueError(f"unknown mode {mode!r} in key {key!r}; known: {', '.join(KEY_MODES)}")
    return pitch_class(tonic), KEY_MODES[mode]


def key_pitch_classes(key):
    """'D minor' -> the sorted pitch classes of that scale."""
    tonic, steps = parse_key(key)
    return tuple(sorted((tonic + k) % 12 for k in steps))


def key_triad(key):
    """'D minor' -> (2, 5, 9): the pitch classes of the key's tonic triad (tonic, third, fifth), the third and
    fifth as its mode has them (a minor third where the mode has one, a diminished fifth in locrian)."""
    t, steps = parse_key(key)
    return t, (t + (3 if 3 in steps else 4)) % 12, (t + (7 if 7 in steps else 6)) % 12


@dataclass(frozen=True)
class Controls:
    """What samples must obey, all enforced by the sampler's mask: header values to force (style, tempo, meter,
    the number of parts or each part's instrument), a length (in bars of the piece's meter, or in seconds at its
    tempo or at `bpm`), and the pitch classes and range that the notes of pitched parts may take."""
    style: str = None
    tempo: float = None        # BPM: forces the tempo token of its bucket
    meter: str = None
    bars: int = None
    seconds: float = None
    scale: tuple = None        # pitch classes
    pitch_range: tuple = None  # (lowest, highest) MIDI pitch, inclusive
    bpm: float = None          # the tempo the MIDI is written at, instead of the header's
    parts: int = None          # how many parts
    instruments: tuple = None  # each part's instrument (GM program or DRUMS), in order
    voice_leading: bool = False  # part writing's first rules: every part sounds from the first onset to the end
                                 # (no rests), no two parts move in parallel fifths, octaves or unisons, no part
                                 # crosses its neighbours, and the last bar is the tonic triad, the tonic in the bass
                                 # (and the first onset, where the key is known before it: --key, or a melody's)
    triad: tuple = None        # that triad's pitch classes (tonic, third, fifth), from --key, or a tuple of them, one
                               # per sample in turn (--key auto's, drawn); None: the key that the notes so far and all
                               # given ones (a melody) suggest
    in_key: bool = False       # with `triad`: every pitched part's notes in its key (the mode of its third: major, or
                               # minor with its raised sixth and seventh, mask.InKey), a note outside it only where
                               # its part moves on by a semitone (a chromatic note resolved, as a raised fourth leads
                               # into the dominant) and no more than one note in 30 outside (Bach's chorales: 3.3 %);
                               # soft
    form: str = None           # phrases as letters, e.g. "AABA": the planned bars shared out among them in order, and
                               # a letter seen before repeats its first phrase note for note in every part (but the
                               # piece's last bar, its cadence, and a bar its model phrase is too short for), while
                               # a new letter does not open as an earlier phrase did (soft: mask.Contrast); or a
                               # tuple of forms, one per sample in turn ("" for none), as --form auto draws them
    voice_leading_rules: tuple = config.voice_leading_rules  # which of those voice_leading keeps
    choir_rules: tuple = config.choir_rules  # which of the choir's rules (below) it keeps
    choir: bool = False        # for four voices: each in its range (config.choir_ranges), the alto within an octave
                               # under the soprano and the tenor under the alto, no leap over an octave, no voice
                               # striking one pitch a fourth time running or rocking between two (a b a a
                               # third time in five notes)

    def errors(self, spec):
        """A list of what is wrong with these controls for a vocabulary of `spec`, each naming what is wanted."""
        out = []
        if self.style is not None and self.style not in spec.styles:
            out.append(f"unknown style {self.style!r}; this run knows: {', '.join(spec.styles)}")
        if self.meter is not None and self.meter not in spec.meters:
            out.append(f"unknown meter {self.meter!r}; this run knows: {', '.join(spec.meters)}")
        if self.bars is not None and self.seconds is not None:
            out.append("give --bars or --seconds, not both")
        (p0, p1) = spec.pitch_range
        if self.pitch_range is not None and not (len(self.pitch_range) == 2 and p0 <= self.pitch_range[0]
                                                 <= self.pitch_range[1] <= p1):
            out.append(f"--pitch_range wants LOW,HIGH with {p0} <= LOW <= HIGH <= {p1}, got {self.pitch_range}")
        if not any(self.allows_pitch(p) for p in range(spec.pitch_range[0], spec.pitch_range[1] + 1)):
            out.append("no pitch is left that both --key/--scale and --pitch_range allow")
        n = self.part_count()
        if n is not None and not 1 <= n <= getattr(spec, "max_parts", 1):
            out.append(f"--parts/--instruments: {n} parts, this run writes 1 to {getattr(spec, 'max_parts', 1)}")
        if self.parts is not None and self.instruments is not None and self.parts != len(self.instruments):
            out.append(f"--parts {self.parts} but --instruments names {len(self.instruments)}")
        for form in self.forms():
            if not re.fullmatch(r"[A-Za-z]*", form) or not form and isinstance(self.form, str):
                out.append(f"--form wants one letter per phrase, e.g. AABA, got {form!r}")
            elif not self.has_length:
                out.append("--form shares a planned length out among its phrases: give --bars or --seconds too")
            elif self.bars is not None and self.bars < len(form):
                out.append(f"--form {form} names {len(form)} phrases, more than --bars {self.bars}")
        return list(dict.fromkeys(out))

    def forms(self):
        """The forms asked for, one per sample in turn: () for none."""
        return () if self.form is None else (self.form,) if isinstance(self.form, str) else tuple(self.form)

    def triads(self):
        """The tonic triads asked for, one per sample in turn: () for none."""
        t = self.triad
        return () if t is None else (tuple(t),) if isinstance(t[0], int) else tuple(map(tuple, t))

    def part_count(self):
        return len(self.instruments) if self.instruments is not None else self.parts

    def allows_pitch(self, pitch):
        lo, hi = self.pitch_range or (0, 127)
        return lo <= pitch <= hi and (self.scale is None or pitch % 12 in self.scale)

    @property
    def has_length(self):
        return self.bars is not None or self.seconds is not None

    def bars_at(self, bpm, bar, sample_freq):
        """The bars a sample must have when its header says `bpm` and its bar has `bar` steps; None if free."""
        if self.bars is not None:
            return self.bars
        if self.seconds is not None:
            return max(1, round(self.seconds * (self.bpm or bpm) / 60 * sample_freq / bar))
        return None

    def token_budget(self, spec, otherwise):
        """With a length control: the most new tokens a sample can take before the mask forces its END (every
        step of every bar of the longest plan filled with every pitch of every part), header included; without one,
        `otherwise`."""
        if not self.has_length:
            return otherwise
        bars = self.bars_at(spec.tempo_range[1], 1, spec.sample_freq)
        pitches = spec.pitch_range[1] - spec.pitch_range[0] + 1
        per_bar = 2 + spec.max_bar_steps() * (1 + spec.max_parts * (1 + 3 * pitches))
        return len(HEADER) + spec.max_parts + bars * per_bar + 1

    def token_mask(self, itos, spec):
        """Per token id, whether these controls let it appear at all (the forced header values)."""
        forced = {"style": self.style and f"style:{self.style}", "tempo": self.tempo and spec.tempo_token(self.tempo),
                  "meter": self.meter and f"meter:{self.meter}"}
        return [not forced.get(kind(t)) or t == forced[kind(t)] for t in itos]


@dataclass(frozen=True)
class Given:
    """Material every sample holds exactly, for GrammarMask: `notes` (canonical, all after any prompt) are written
    at their onsets, note for note; new notes go only in `free_parts` and start inside `span` (steps [lo, hi)),
    ending by its end; with `blocks` (per bar, the token lists of encoding_decoding.ahead_blocks) the notes are
    also shown ahead of their place, as the model was trained to see them. A harmonized melody is part 0 given,
    the other parts free; an added part is every other part given; an infill is the notes after the gap given,
    every part free inside it. The blocks are laid in one meter and length: the controls must hold them (sample.py
    sets Controls.meter and .bars from the piece). With `on_top`, that given part is the top voice at every one of
    its notes: nothing written sounds above it."""
    notes: tuple
    free_parts: tuple
    span: tuple = (0, 1 << 30)
    blocks: tuple = None
    min_parts: int = 1
    on_top: int = None         # a given part no other pitched part sounds above (a harmonized melody: part 0)
    bass: int = None           # a free part that is the bass (an added bass), whose first and last notes voice
                               # leading's tonic chords root; None: the lowest of several free parts
    repeats: tuple = ()        # (bar, model bar) pairs, from 0 (given_repeats): where the given notes repeat earlier
                               # bars, the free parts repeat theirs too (mask.Form)


@dataclass(frozen=True)
class Request:
    """All a sample is asked to be, as sample.py and evaluate.py hand it to mask.draw: the controls, the tokens after
    START that come before anything is drawn (a prompt: token strings, or None where the mask draws the token, as it
    does a prompt's header and bar lines), and given material."""
    controls: Controls = Controls()
    prompt: tuple = ()
    material: Given = None


def top_line(notes):
    """(the highest note of each onset, each cut where the next begins; whether anything was dropped or cut)."""
    line = []
    for n in sorted(map(as_note, notes), key=lambda n: (n.start, -n.pitch)):
        if line and line[-1].start == n.start:
            continue
        if line and line[-1].end > n.start:
            line[-1] = line[-1]._replace(dur=n.start - line[-1].start)
        line.append(n._replace(part=0))
    return line, line != sorted(as_note(n)._replace(part=0) for n in notes)


def harmonize(melody, header, spec, ahead=True, repeats=0):
    """(prompt tokens after START, Given, bars) that write the parts under a melody: its notes are part 0, every
    other part is free from the melody's first note on (a pickup is the choir's, not an introduction before it), and
    the piece is as long as the melody (laid in the header's meter). With `repeats` (a number of bars), where the
    melody repeats a run of so many bars or more, the parts under it repeat theirs (given_repeats)."""
    bars = header.bars_needed(melody, spec.sample_freq)
    lines = header.bar_lines(spec.sample_freq, bars)
    blocks = tuple(map(tuple, ahead_blocks(melody, lines))) if ahead else None
    return [], Given(tuple(melody), tuple(range(1, spec.max_parts)), (first_onset(melody), 1 << 30), blocks,
                     min_parts=2, on_top=0, repeats=given_repeats(melody, lines, repeats)), bars


def add_part(notes, header, spec, ahead=True, bass=False, repeats=0):
    """(prompt tokens after START, Given, bars) that write one new part, after the header's, against all of them,
    from their first note on; with `bass`, the new part is the bass; with `repeats`, it repeats itself where they
    repeat a run of so many bars or more (given_repeats)."""
    bars = max(header.bars, header.bars_needed(notes, spec.sample_freq))
    lines = header.bar_lines(spec.sample_freq, bars)
    blocks = tuple(map(tuple, ahead_blocks(notes, lines))) if ahead else None
    n = len(header.parts)
    return [], Given(tuple(notes), (n,), (first_onset(notes), 1 << 30), blocks, min_parts=n + 1,
                     bass=n if bass else None, repeats=given_repeats(notes, lines, repeats)), bars


def given_repeats(notes, lines, least):
    """The bars where given notes repeat earlier ones, as Given.repeats: ((bar, model bar), ...), from 0, for the
    bars of `lines` (each bar's first step, then the end). A run of at least `least` bars (0: none) whose notes
    (onset in the bar, part, pitch, duration) are those of as many earlier bars, each bar holding some and the
    piece's last bar left out (its cadence); the longest run from each bar on, the earliest model on a tie. No given
    note is tied into a run or its model, nor rings out of a run's last bar: the free parts' notes are cut at a
    run's ends, where a given one could not be (in Bach's chorales, where the melody repeats a run of 3 bars or
    more, the whole harmony repeats in 77 % of the bars: README, "Defaults per style")."""
    notes, n = list(map(as_note, notes)), len(lines) - 2  # (bars but the last)
    if least < 1 or n < least:
        return ()
    bar = [tuple(sorted((x.start - lo, x.part, x.pitch, x.dur) for x in notes if lo <= x.start < hi))
           for lo, hi in zip(lines, lines[1:])]
    tied = [any(x.start < line < x.start + x.dur for x in notes) for line in lines]  # a note sounds across the line
    out, t = [], 1
    while t < n:
        best = (0, 0)  # (run, model)
        for s in range(t):
            if tied[s] or tied[t]:
                continue
            k = 0
            while t + k < n and bar[t + k] and bar[t + k] == bar[s + k]:
                k += 1
            while k and tied[t + k]:  # (a run's last given note ends by its bar line)
                k -= 1
            best = max(best, (k, -s))
        k, s = best[0], -best[1]
        if k >= least:
            out += [(t + j, s + j) for j in range(k)]
            t += k
        else:
            t += 1
    return tuple(out)


def first_onset(notes):
    """The step of the earliest note's onset (0 for none)."""
    return min((as_note(n).start for n in notes), default=0)


def infill(notes, header, spec, first, last, ahead=True):
    """(prompt tokens after START, Given, bars) that write bars first..last (from 1) anew: the notes before them are
    the prompt, those after them are given, every part is free inside the gap and no new note rings past it."""
    bars = max(header.bars, header.bars_needed(notes, spec.sample_freq))
    lines = header.bar_lines(spec.sample_freq, bars)
    lo, hi = lines[first - 1], lines[last]
    after = [n for n in notes if n.start >= hi]
    tokens = notes_to_tokens([n for n in notes if n.start < lo] + after, spec, replace(header, bars=bars),
                             given=after if ahead else None)
    # the prompt runs through the gap's first bar line, so that no velocity token can change its last note
    cut = [i for i, t in enumerate(tokens) if kind(t) == "bar"][first - 1] + 1
    blocks = tuple(map(tuple, ahead_blocks(after, lines))) if ahead else None
    return tokens[1:cut], Given(tuple(after), tuple(range(len(header.parts))), (lo, hi), blocks,
                                len(header.parts)), bars


# --- the defaults of a style

PER_STYLE = ("voice_leading", "voice_leading_rules", "choir", "form", "temperature", "rhythm_temperature",
             "top_p")  # what
# config.STYLE_DEFAULTS sets per style


def style_defaults_problem(table):
    """None where `table` (config.STYLE_DEFAULTS, which a user edits) sets only what a style's row may: PER_STYLE, each
    of its kind and within its bounds (configurator.kind_problem, check), `forms` and `keys` (form or key
    -> how often it is drawn) and `with_given` (PER_STYLE again); else one line naming the first entry that is not."""
    def setting(where, key, value, more=()):
        if key not in PER_STYLE:
            return f"{where} is not a setting per style: one of {', '.join((*PER_STYLE, *more))}"
        why = configurator.kind_problem(key, value) or configurator.check(key, value)
        return why and f"{where} = {value!r} wants {why}"

    for style, row in table.items():
        if not isinstance(row, dict):
            return f"config.STYLE_DEFAULTS[{style!r}] wants a dict of settings"
        for key, value in row.items():
            where = f"config.STYLE_DEFAULTS[{style!r}][{key!r}]"
            if key in ("forms", "keys"):
                if not isinstance(value, dict) or not all(
                        isinstance(f, str) and type(p) in (int, float) and p >= 0 for f, p in value.items()):
                    what = 'forms (letters, "" for none)' if key == "forms" else 'keys ("G major", "A minor")'
                    return f"{where} wants a dict of {what} to how often each is drawn (%)"
                try:
                    list(map(key_triad, value)) if key == "keys" else None
                except ValueError as e:
                    return f"{where}: {e}"
            elif key == "with_given":
                if not isinstance(value, dict):
                    return f"{where} wants a dict of settings"
                if why := next((w for k, v in value.items() if (w := setting(f"{where}[{k!r}]", k, v))), None):
                    return why
            elif why := setting(where, key, value, ("forms", "keys", "with_given")):
                return why
    return None


def style_settings(style, given, with_given=False):
    """The settings PER_STYLE for a sample of `style`: each as `given` (name -> value, None or absent where the
    command line leaves it unset), else as the style's row of config.STYLE_DEFAULTS has it (its `with_given` over it
    where the sample is given material), else as config.py."""
    row = config.STYLE_DEFAULTS.get(style, {}) if style else {}
    row = {**row, **row.get("with_given", {})} if with_given else row
    return {k: given[k] if given.get(k) is not None else row.get(k, getattr(config, k)) for k in PER_STYLE}


def named_key(key):
    """A --key setting's key name, or None for none and auto (no key named: auto draws its own, key_setting)."""
    return None if key is None or key.strip().lower() in ("", "none", "auto") else key


def key_setting(key, style, n, seed, free=True):
    """A --key setting as Controls takes it: (the fields of Controls it sets, the keys drawn). A key's name holds
    every sample to its scale and its tonic triad (the first and last chords, under voice leading's rules); auto draws
    a key for each of n samples of `style` where the sample is `free` (no prompt, given material or --scale: they
    bring their own pitches; drawn_keys), its tonic triad held and its notes in it, a chromatic one resolved
    (Controls.in_key); none, or auto where the style lists no keys: no key. ValueError for a name that is not a key."""
    if named_key(key):
        return dict(scale=key_pitch_classes(key), triad=key_triad(key), in_key=False), ()
    drawn = drawn_keys(style, n, seed) if free and key is not None and key.strip().lower() == "auto" else ()
    return dict(scale=None, triad=tuple(map(key_triad, drawn)) or None, in_key=bool(drawn)), drawn


def drawn_keys(style, n, seed):
    """--key auto: a key's name for each of n samples, drawn by `seed` (a stream apart from the forms') with the
    weights of the style's keys in config.STYLE_DEFAULTS (how often the key analysis hears each in its real pieces);
    () where the style lists none."""
    keys = config.STYLE_DEFAULTS.get(style, {}).get("keys", {}) if style else {}
    return tuple(random.Random(f"keys {seed}").choices(list(keys), list(keys.values()), k=n)) if keys else ()


def minor_key_note(key, styles):
    """A note for a chorale asked for in a natural minor key (--key "D minor" under Bach's style, one of `styles`):
    it has no leading tone, and Bach's chorales close on one (48 chorales of --key "D minor" began and ended on the
    tonic in 58 %, of "D harmonic minor" in 90 %: README, "Defaults per style"); None for any other key or style."""
    if not named_key(key) or "bach" not in styles or parse_key(key)[1] != KEY_MODES["minor"]:
        return None
    tonic = key.split()[0]
    return (f'note: --key "{key}" is the natural minor, without the raised seventh that Bach\'s chorales close on; '
            f'--key "{tonic} harmonic minor" has it')


def choir_voices(controls, material):
    """The controls of a sample under Controls.choir, whose rules are for four voices: a melody harmonized (given on
    top) with no --parts or --instruments takes four parts, as a chorale has them, sung by a choir (left free, the
    shipped model gave 5 of 16 harmonizations of chorale sopranos five or eight parts, a piano's beside the voices,
    and the choir's rules held for none of them; held to four, 6 of 24 harmonizations of validation chorales'
    sopranos, sung, had the melody and two voices under it on a piano, the bass in the choir); any other sample as it
    is."""
    if controls.choir and material is not None and material.on_top == 0 and controls.part_count() is None:
        return replace(controls, instruments=(instrument_number("choir"),) * 4)  # (363 of Bach's 410 chorales in
        # music21's corpus are four choir parts)
    return controls


def style_rules(style):
    """The Controls that hold only the rules of part writing a sample of `style` takes by default where it takes
    the most (config.STYLE_DEFAULTS' voice_leading and choir, under given material), or None where it takes none:
    the rules that prepare.py --rule_styles trains towards and evaluate.py --rules counts."""
    s = style_settings(style, {}, with_given=True)
    if not (s["voice_leading"] or s["choir"]):
        return None
    return Controls(voice_leading=s["voice_leading"], voice_leading_rules=s["voice_leading_rules"], choir=s["choir"],
                    choir_rules=config.choir_rules)


def form_setting(form, style, n, seed, bars=None, free=True):
    """A form setting ("" or none, letters, or auto) as Controls takes it: None for none, the letters, or auto's
    forms drawn for n samples of `style` (drawn_forms); auto is none without a length or where the sample is not
    `free` (a prompt or given material holds its own phrases)."""
    if form.lower() in ("", "none"):
        return None
    if form.lower() != "auto":
        return form
    return drawn_forms(style, n, seed, bars) if free else None


def form_repeats(form):
    """The `repeats` of harmonize and add_part under a form setting: auto takes the given notes' own form, where they
    repeat config.repeat_bars bars or more; none (or letters, which a sample with given material may not take) none."""
    return config.repeat_bars if form.lower() == "auto" else 0


def drawn_forms(style, n, seed, bars=None):
    """--form auto: a form for each of n samples ("" for none), drawn by `seed` with the weights of the style's
    forms in config.STYLE_DEFAULTS (how often each is found in its real pieces), those of more phrases than `bars`
    left out; None where the style lists none, or none but "" is drawn."""
    forms = config.STYLE_DEFAULTS.get(style, {}).get("forms", {}) if style else {}
    forms = {f: w for f, w in forms.items() if bars is None or len(f) <= bars}
    drawn = tuple(random.Random(seed).choices(list(forms), list(forms.values()), k=n)) if forms else ()
    return drawn if any(drawn) else None
