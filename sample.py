"""Sample new pieces from a trained run, always valid, and write them as MIDI (and token text).

python sample.py [--out_dir models/corpus] --num_samples 5 --temperature 0.9 --top_k 100 [--top_p 0.95]
    [--rhythm_temperature 1.5]                                    # a note's duration drawn at its own temperature
    [--style bach] [--tempo 90] [--meter 3/4] [--parts 4 | --instruments violin,violin,viola,cello]
    [--bars 16 | --seconds 60] [--form AABA] [--key "D minor" | --key none | --scale 0,2,4,5,7,9,11]
    [--pitch_range 48,84]
    [--prompt song.mid --prompt_bars 4] [--bpm 120] [--max_new_tokens 1024] [--seed 1] [--output_dir midi-samples]
    [--musicxml] [--wav] [--list_styles]
python sample.py --melody tune.mid [--style bach] [--parts 3]     # harmonize: the tune is the top part, exactly
python sample.py --prompt piece.mid --infill 5-8                  # bars 5 to 8 anew, every other note kept
python sample.py --prompt piece.mid --add_part bass               # one new part against the piece's parts
    [--look_ahead true]                                           # (given material also shown ahead)
    [--voice_leading true]     # no part rests once begun, no parallel fifths or octaves, no crossing, a tonic
                               # last bar and, where the key is known before it (--key, a melody), first chord;
                               # where the mask can keep them
    [--choir true]             # four voices in their ranges, the upper ones within an octave, no leap over one
                               # (a --melody with no --parts or --instruments: four parts, a choir's)

A style's defaults (config.STYLE_DEFAULTS) fill what the command line leaves unset: `--style bach --bars 16` gets
Bach's rules (no parallels, the tonic first and last chords, and the choir's; under a --melody, --infill or
--add_part all five of part writing), a key and a form drawn from real chorales' (--key auto: its tonic triad the
first and last chords, a chromatic note only now and then, resolved; --form auto) and the sampling settings
measured best for it (Bach's durations at a temperature of their own); any flag given wins (--voice_leading false
--choir false --form none --key none --temperature 0.9 --rhythm_temperature 0 --top_p 1: the model alone). Without
--style, each sample's style is drawn first (the model's choice, having heard the piece given, if any) and its
defaults hold for it in the same way; a --prompt that is a text encoding (.txt) naming a style the run knows gives its
own, for continuing or filling in (not for --add_part).

Without --out_dir it samples from models/corpus beside this script, the model that ships in the repo
(models/corpus/MODEL.md), from whatever folder it is run. Given material (a melody, the rest of a piece, its other
parts) is written where it sounds, note for note, by the mask; with --look_ahead true (a run trained with prepare.py
--given_share) the model also sees it a bar or two ahead.
At every step only the tokens that the grammar and the controls allow can be drawn (mask.GrammarMask: lookup
tables on the device), so every sample is a well-formed piece that obeys them. Same seed, same files, byte for byte.
"""
import argparse
import shutil
import subprocess
import sys
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np

import batch
import config
import configurator
from batch import atomic_open, atomic_write, claim_stem, clean_stale, die, temp_name, writable_dir
from controls import (PER_STYLE, Controls, Request, add_part, choir_voices, form_repeats, form_setting, harmonize,
                      infill, key_setting, minor_key_note, named_key, pitch_class, style_defaults_problem,
                      style_settings, top_line)
from encoding_decoding import DRUMS, END, HEADER, START, finish, kind, notes_to_tokens, tokens_to_notes, tokens_to_text
from mask import draw, draw_styles
from midi_io import (instrument_name, instrument_number, named_style, notes_to_midi, notes_to_score, read_piece,
                     write_musicxml)
from model import autocast
from runs import learnt_given, load_run, pick_device

SHIPPED = str(Path(__file__).resolve().parent / config.shipped_run)  # found from whatever folder sample.py runs in
SOUNDFONTS = ["/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2",
              "/usr/share/soundfonts/default.sf2", "/usr/share/sounds/sf2/default-GM.sf2"]


def read_prompt(path, spec, bars, meter=None):
    """(tokens after START, Header) of the first `bars` bars of a MIDI file or score: its header and its bars, bar
    lines included, ready to be continued. With `meter`, its bars are laid in that meter (the notes keep their
    time)."""
    notes, header = read_piece(path, "--prompt", spec, meter, one_meter=False)
    cut = header.bar_lines(spec.sample_freq, bars)[-1]
    notes = [n for n in notes if n.start < cut]
    if not notes:
        die(f"--prompt {path}: no notes in its first {bars} bars")
    tokens = notes_to_tokens(notes, spec, header)
    return tokens[1:-1], header


def prompt_controls(args, spec, controls):
    """(the prompt's tokens after START, controls with the prompt's header, the prompt's bars as read: tokens from
    START) for --prompt: the header takes the prompt's tempo, meter and parts unless --tempo or --meter force others
    (a forced meter lays the prompt's bars anew), the MIDI is written at the prompt's own tempo (unless --tempo or
    --bpm), and the bar lines' countdown is left to the mask (--bars or the model). What changes is said in a
    note."""
    if controls.part_count() is not None:
        die("--prompt brings its own parts: give --parts/--instruments only without a prompt")
    tokens, header = read_prompt(args.prompt, spec, args.prompt_bars, controls.meter)
    controls = replace(controls, tempo=controls.tempo or header.bpm, meter=controls.meter or header.meter,
                       bpm=controls.bpm or (header.bpm if controls.tempo is None else None),
                       instruments=header.parts)
    if controls.bpm == header.bpm and spec.bucket_bpm(header.bpm) != round(header.bpm):
        print(f"note: --prompt {args.prompt} is at {header.bpm:g} BPM: the header's tempo token is the nearest this "
              f"run knows ({spec.bucket_bpm(header.bpm)}), and the MIDI keeps {header.bpm:g} BPM")
    check_pitches(tokens_to_notes([START] + tokens + [END], spec)[0], header, controls, f"--prompt {args.prompt}")
    plan = controls.bars_at(spec.bucket_bpm(controls.tempo), header.bar_lines(spec.sample_freq, 1)[1], spec.sample_freq)
    bars = sum(kind(t) == "bar" for t in tokens)
    if plan is not None and bars >= plan:
        die(f"--prompt {args.prompt}: its {bars} bars already reach the --bars/--seconds target ({plan} bars)")
    # the header's values and every bar line are drawn under the mask (which forces the header to the prompt's)
    return [None if kind(t) in HEADER + ("inst", "bar") else t for t in tokens], controls, [START] + tokens


VOICE_RANGES = {"soprano": (60, 81), "alto": (53, 74), "tenor": (48, 69), "bass": (40, 64)}  # a choir's, MIDI


def given_controls(args, tok, controls, run):
    """(prompt tokens after START, controls, Given, the melody, the piece) for --melody, --infill or --add_part: the
    piece read whole, its tempo, meter and length (and, for --infill and --add_part, its parts) held by the controls,
    its given notes checked against --key/--scale/--pitch_range; the melody is (notes, header) of the line a --melody
    gives, as it is kept (None otherwise); the piece, its tokens as read from START, that the samples' style is
    drawn by (for a --melody of one part, only its tempo and meter and --instruments: alone, a line sounds like a
    folk song to the model, whatever its style). With --look_ahead, it is also shown ahead (a run trained so)."""
    spec, flag, ahead = tok.spec, "--melody" if args.melody else "--prompt", args.look_ahead
    if ahead and not learnt_given(tok, run):
        die(f"{run} was trained without given material: --look_ahead needs a run whose data prepare.py wrote with "
            f"--given_share > 0 (tokenizer version 4); retrain on data prepared now, or leave --look_ahead off")
    if controls.has_length:
        die("--melody, --infill and --add_part take their length from the piece: drop --bars/--seconds")
    if (args.infill or args.add_part) and controls.part_count() is not None:
        die("--infill and --add_part keep the piece's parts: give --parts/--instruments only with --melody")
    notes, header = read_piece(args.melody or args.prompt, flag, spec, controls.meter)
    piece, melody = notes_to_tokens(notes, spec, header), None
    if args.melody and len(header.parts) == 1:  # the header, with the parts that --instruments gives, if it does
        piece = [START] + spec.header_tokens(replace(header, parts=controls.instruments or ()))
    check_pitches([n for n in notes if not args.melody or n.part == 0], header, controls,
                  f"{flag} {args.melody or args.prompt}")
    if args.melody:
        if header.parts[0] == DRUMS:
            die(f"--melody {args.melody}: its first part is a drum part, not a melody; give a file whose first part "
                f"is pitched")
        line, changed = top_line([n for n in notes if n.part == 0])
        if changed:
            print(f"note: --melody {args.melody} has chords or overlapping notes in its first part; its top line "
                  f"is taken ({len(line)} notes)")
        prompt, given, bars = harmonize(line, header, spec, ahead, form_repeats(args.form))
        if controls.part_count() is not None and controls.part_count() < 2:
            die("--melody: a harmonization has at least 2 parts (the melody and one more)")
        melody = (line, replace(header, parts=header.parts[:1], bars=bars))
    elif args.infill:
        span = infill_bars(args.infill, header.bars_needed(notes, spec.sample_freq))
        prompt, given, bars = infill(notes, header, spec, *span, ahead)
        # its header is drawn under the mask, which forces the controls' (the sample's style, not the file's)
        prompt = [None if kind(t) in HEADER + ("inst",) else t for t in prompt]
        controls = replace(controls, instruments=header.parts)
    else:
        if len(header.parts) >= spec.max_parts:
            die(f"--prompt {args.prompt} has {len(header.parts)} parts already: a part added would be part "
                f"{len(header.parts) + 1}, one more than the {spec.max_parts} this run writes")
        inst, voice = add_part_instrument(args.add_part, header)
        if voice and not controls.pitch_range:
            controls = replace(controls, pitch_range=VOICE_RANGES[voice])
        prompt, given, bars = add_part(notes, header, spec, ahead, voice == "bass", form_repeats(args.form))
        controls = replace(controls, instruments=header.parts + (inst,))
    controls = replace(controls, bars=bars, tempo=controls.tempo or header.bpm, meter=header.meter,
                       bpm=controls.bpm or (header.bpm if controls.tempo is None else None))
    return prompt, controls, given, melody, piece


def infill_bars(text, bars):
    """'5-8' (or '5') -> (5, 8) for a piece of `bars` bars, or one line."""
    first, _, last = text.partition("-")
    try:
        first, last = int(first), int(last or first)
    except ValueError:
        die(f"--infill {text!r}: wants FIRST-LAST bars, e.g. 5-8")
    if first > last:
        die(f"--infill {text}: wants FIRST-LAST with FIRST <= LAST, e.g. {last}-{first}")
    if not 1 <= first <= last <= bars:
        die(f"--infill {text}: bars outside the piece, which has bars 1 to {bars}")
    return first, last


def add_part_instrument(name, header):
    """(instrument, voice or None) of --add_part: a voice (soprano, alto, tenor, bass) sings in the given parts'
    instrument where they share one (else choir aahs) and in its range; other names are instruments."""
    if name.strip().lower() in VOICE_RANGES:
        shared = set(header.parts) - {DRUMS}
        return (shared.pop() if len(shared) == 1 else instrument_number("choir")), name.strip().lower()
    try:
        return instrument_number(name), None
    except ValueError as e:
        die(f"--add_part: {e}; or a voice: {', '.join(VOICE_RANGES)}")


def check_pitches(notes, header, controls, what):
    """One line if a given note of a pitched part is outside --key/--scale/--pitch_range."""
    drum = lambda n: header.parts[min(n.part, len(header.parts) - 1)] == DRUMS
    if bad := [n for n in notes if not drum(n) and not controls.allows_pitch(n.pitch)]:
        die(f"{what}: note {bad[0].pitch} at step {bad[0].start} is outside --key/--scale/--pitch_range")


def render_wav(mid, wav, peak_db=-1.0):
    """FluidSynth with a General MIDI soundfont, each part with its instrument, then scaled so that its loudest
    sample is `peak_db` dBFS (FluidSynth alone peaks near -30 dBFS); None when they are not installed."""
    font = next((f for f in SOUNDFONTS if Path(f).is_file()), None)
    if not shutil.which("fluidsynth") or font is None:
        return None
    raw = Path(wav).parent / temp_name(Path(wav).name, "raw.tmp")
    try:
        subprocess.run(["fluidsynth", "-ni", "-F", str(raw), "-T", "wav", "-r", "44100", font, str(mid)], check=True,
                       capture_output=True)
        with wave.open(str(raw), "rb") as f:
            params, audio = f.getparams(), np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)
    finally:
        raw.unlink(missing_ok=True)
    peak = int(np.abs(audio.astype(np.int32)).max(initial=0))
    gain = 32767 * 10 ** (peak_db / 20) / peak if peak else 1.0
    with atomic_open(wav) as f, wave.open(f, "wb") as out:
        out.setparams(params)
        out.writeframes(np.clip(np.round(audio * gain), -32768, 32767).astype(np.int16).tobytes())
    return wav


def parse_controls(args):
    """Controls from sample.py's arguments, or one clear line on what is wrong with them."""
    try:
        key = chosen_key(args)[0]
        if args.scale:
            key["scale"] = tuple(sorted({pitch_class(p.strip()) for p in args.scale.split(",")}))
    except ValueError as e:
        die(f"--key/--scale: {e}")
    try:
        instruments = tuple(map(instrument_number, args.instruments.split(","))) if args.instruments else None
    except ValueError as e:
        die(f"--instruments: {e}")
    return Controls(style=args.style, tempo=args.tempo, meter=args.meter, bars=args.bars, seconds=args.seconds,
                    pitch_range=args.pitch_range, bpm=args.bpm or args.tempo, parts=args.parts,
                    instruments=instruments, voice_leading=args.voice_leading,
                    voice_leading_rules=args.voice_leading_rules, choir=args.choir, choir_rules=args.choir_rules,
                    form=chosen_form(args), **key)


def chosen_form(args):
    """--form as Controls takes it (controls.form_setting): --form auto draws one per sample from the style's real
    pieces, none without --style, --bars or --seconds, with a prompt or given material (whose own repeats it takes:
    controls.form_repeats), or for a style whose row of config.STYLE_DEFAULTS lists no forms."""
    return form_setting(args.form, args.style, args.num_samples, args.seed, args.bars,
                        free=bool(args.bars or args.seconds) and not (args.prompt or args.melody))


def chosen_key(args):
    """--key as Controls takes it (controls.key_setting): (its fields, the keys drawn); auto draws one per sample
    from the keys of the style's real pieces, none without --style, with --scale, a prompt or given material, or for
    a style whose row of config.STYLE_DEFAULTS lists no keys."""
    return key_setting(args.key, args.style, args.num_samples, args.seed,
                       free=not (args.scale or args.prompt or args.melody))


def style_groups(args, model, tok, controls, chosen, with_given, piece=None, material=None):
    """(sample numbers, controls, settings) for each style the samples take: --style's for all of them, else the
    style a --prompt text encoding names, for continuing or filling it in (midi_io.named_style), else each sample's
    drawn first (mask.draw_styles: the model's choice, weighed by the likelihood of the `piece` given, tokens from
    START, and of the parts the given `material` needs), so that the style's defaults (config.STYLE_DEFAULTS: its
    rules, form and sampling settings) fill what the command line leaves unset for it too, as they would under
    --style (`with_given`: given material)."""
    if args.style:
        return [(list(range(args.num_samples)), controls, args)]
    named = named_style(args.prompt, tok.spec) if args.prompt and not args.add_part else None
    if named:  # a sample's own style, or one encode_all.py wrote: it holds for what continues or fills it
        print(f"note: --prompt {args.prompt} names its style, {named}: the samples take it and its defaults "
              f"(--style for another)")
    styles = [named] * args.num_samples if named else draw_styles(
        model, tok, args.num_samples, args.seed, args.temperature, args.top_k or None, args.top_p, piece,
        material.min_parts if material else 1)
    groups = []
    for style in dict.fromkeys(styles):  # in the order first drawn
        rows = [i for i, s in enumerate(styles) if s == style]
        settings = argparse.Namespace(**{**vars(args), **style_settings(style, chosen, with_given), "style": style,
                                         "num_samples": len(rows)})
        key, drawn = chosen_key(settings)  # (a key named, or none, is the command line's, in `controls` already)
        groups.append((rows, replace(controls, style=style, voice_leading=settings.voice_leading,
                                     voice_leading_rules=settings.voice_leading_rules, choir=settings.choir,
                                     form=chosen_form(settings), **(key if drawn else {})), settings))
    return groups


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="file in the run folder (default: best.pt, else checkpoint.pt)")
    parser.add_argument("--prompt", help="a MIDI file or score whose opening bars the samples continue (or, with "
                                         "--infill or --add_part, the piece they work on)")
    parser.add_argument("--melody", help="a MIDI file or score whose first part (its top line) every sample keeps "
                                         "as its top part, note for note, writing the other parts under it")
    parser.add_argument("--infill", help="FIRST-LAST: write these bars of --prompt anew, keeping every other note")
    parser.add_argument("--add_part", help="write one new part against all of --prompt's: a voice (soprano, alto, "
                                           "tenor, bass) or an instrument name or number")
    configurator.option(parser, "prompt_bars", "bars of the prompt, in its own meter")
    configurator.option(parser, "output_dir", "where the samples go", key="samples_dir")
    parser.add_argument("--musicxml", action="store_true", help="also write each sample as a score (MusicXML)")
    parser.add_argument("--wav", action="store_true", help="also render WAV audio with FluidSynth")
    parser.add_argument("--overwrite", action="store_true", help="replace a sample of the same name that another "
                                                                 "command wrote (without it: beside it, as NAME-2)")
    parser.add_argument("--list_styles", action="store_true", help="print the styles this run knows and exit")
    control = parser.add_argument_group("controls (each enforced by the sampling mask)")
    control.add_argument("--style", help="the style token to start with, and its defaults (default: each sample's "
                                         "drawn first, the model's choice having heard the piece given, if any, "
                                         "with that style's defaults)")
    control.add_argument("--tempo", type=configurator.typed("tempo", 90.0),
                         help="BPM: force the tempo token of its bucket; the MIDI plays at this BPM exactly")
    control.add_argument("--meter", help="time signature, e.g. 3/4 (see --list_styles for the known ones)")
    control.add_argument("--parts", type=configurator.typed("parts", 4), help="how many parts (voices, instruments)")
    control.add_argument("--instruments", help="each part's instrument, names or General MIDI numbers: "
                                               "violin,violin,viola,cello or 40,40,41,42 (drums for a drum part)")
    control.add_argument("--bars", type=configurator.typed("bars", 16),
                         help="a piece of this many bars of its meter, planned from its first bar line")
    control.add_argument("--seconds", type=configurator.typed("seconds", 60.0),
                         help="as many bars as last about this many seconds at the piece's tempo")
    configurator.option(control, "form", "phrases as letters, e.g. AABA or AABB: the bars shared out among them, a "
                                         "letter seen before repeating its first phrase note for note (needs --bars "
                                         "or --seconds); auto: each sample's drawn from the forms of the style's "
                                         "real pieces, or with --melody or --add_part the given notes' own: where "
                                         "they repeat a run of bars (config.repeat_bars or more), the parts written "
                                         "repeat theirs; none: no form", per_style=True)
    configurator.option(control, "voice_leading", "true: no part rests once begun, no parallel fifths or octaves, no "
                                                  "crossing, a tonic last bar and, where the key is known before "
                                                  "it (--key, a melody), first chord (where the mask can keep them)",
                        per_style=True)
    configurator.option(control, "choir", "true: for four voices, each in its range (config.choir_ranges), the "
                                          "upper voices within an octave, no leap over an octave (where the mask can "
                                          "keep them)", per_style=True)
    configurator.option(control, "look_ahead", "true: given material also shown a bar or two ahead (a run trained "
                                               "with prepare.py --given_share)")
    configurator.option(control, "key", 'only pitches of this scale, its tonic triad the first and last chords under '
                                        '--voice_leading, e.g. "D minor", "F# major", "G dorian"; auto: each sample\'s '
                                        'key drawn from the keys of the style\'s real pieces, its tonic triad the '
                                        'first and last chords, its notes in it but for a chromatic one in 30 that '
                                        'moves on by a semitone; none: no key')
    control.add_argument("--scale", help="only these pitch classes, e.g. 0,2,4,7,9 or C,D,E,G,A")
    control.add_argument("--pitch_range", type=configurator.typed("pitch_range", (48, 84)),
                         help="LOW,HIGH: only MIDI pitches inside it, e.g. 48,84")
    control.add_argument("--bpm", type=configurator.typed("bpm", 120.0),
                         help="write the MIDI at this tempo instead of the header's")
    args = configurator.cli(parser, ["out_dir", "num_samples", "temperature", "rhythm_temperature", "top_k", "top_p",
                                     "max_new_tokens", "seed", "device", "dtype", "voice_leading_rules", "choir_rules"],
                            argv,
                            own={"out_dir": SHIPPED})
    if why := style_defaults_problem(config.STYLE_DEFAULTS):
        die(why)
    own = {"voice_leading", "choir", "form"}  # None where the command line leaves them unset
    chosen = {k: getattr(args, k) for k in PER_STYLE if k in own or k in args.given}  # what the command line set
    with_given = bool(args.melody or args.infill or args.add_part)
    vars(args).update(style_settings(args.style, chosen, with_given))
    if named_key(args.key) and args.scale:
        die("give --key or --scale, not both")
    if (args.infill or args.add_part) and not args.prompt:
        die("--infill and --add_part work on a piece: give it with --prompt")
    if sum(map(bool, (args.melody, args.infill, args.add_part))) > 1 or (args.melody and args.prompt):
        die("give one of --melody, --prompt ... --infill, --prompt ... --add_part, or a plain --prompt")
    written = {a.split("=")[0] for a in (sys.argv[1:] if argv is None else map(str, argv))}  # (no flag cut short)
    if "--prompt_bars" in written and (not args.prompt or with_given):
        die(f"--prompt_bars {args.prompt_bars} counts the opening bars of a plain --prompt that the samples continue "
            f"(--infill and --add_part keep the whole piece): give it with --prompt song.mid, or drop it")
    controls = parse_controls(args)
    if controls.form and (args.melody or args.infill or args.add_part):
        die(f"--form {args.form}: letters repeat a sample's own phrases; with --melody, --infill or --add_part "
            f"give auto (the given notes' own repeats) or none")
    out_dir = writable_dir(args.output_dir, "--output_dir", create=False)  # checked before any work is spent,
    clean_stale(out_dir)  # made when the first sample is written; what a killed run left half written goes
    run = Path(args.out_dir)
    device, dtype = pick_device(args.device, args.dtype)
    model, tok, _ = load_run(run, device, args.checkpoint)
    spec = tok.spec
    if args.list_styles:
        print(f"styles: {' '.join(spec.styles)}\nmeters: {' '.join(spec.meters)}\n"
              f"tempos (BPM buckets): {' '.join(map(str, spec.tempo_bpms()))}")
        return
    if errors := controls.errors(spec):
        die("; ".join(errors))
    prompt, material, piece = [], None, None  # what comes after START before anything is drawn; the piece given
    if args.melody or args.infill or args.add_part:
        prompt, controls, material, melody, piece = given_controls(args, tok, controls, run)
    elif args.prompt:
        prompt, controls, piece = prompt_controls(args, spec, controls)
    if controls.has_length and "max_new_tokens" in args.given:  # (the planned length sets the budget: draw)
        die("--max_new_tokens caps a piece of no planned length; this one's is planned (by --bars/--seconds or the "
            "piece given), and it ends there: drop --max_new_tokens")
    out, forms, keys = ([None] * args.num_samples, [""] * args.num_samples,  # each sample's tokens, form and key
                        [""] * args.num_samples)                              # drawn, in its place
    groups = style_groups(args, model, tok, controls, chosen, with_given, piece, material)
    if note := minor_key_note(args.key, {settings.style for _, _, settings in groups}):
        print(note)
    for rows, c, settings in groups:
        with autocast(device, dtype):
            drawn = draw(model, tok, Request(choir_voices(c, material), tuple(prompt), material), len(rows), args.seed,
                         settings.temperature, args.top_k or None, settings.top_p, args.max_new_tokens,
                         rhythm_temperature=settings.rhythm_temperature)
        drawn_keys = chosen_key(settings)[1]
        for j, (i, row) in enumerate(zip(rows, drawn)):
            out[i], forms[i] = row, c.forms()[j % len(c.forms())] if c.forms() else ""
            keys[i] = drawn_keys[j % len(drawn_keys)] if drawn_keys else ""
    source = args.melody or args.prompt if args.melody or args.infill or args.add_part else None
    task = "harmonized" if args.melody else "infill" if args.infill else "added" if args.add_part else ""
    task = f"{task}_{Path(source).stem}_" if source else ""  # named after the piece given
    name = f"{run.name}_{args.style + '_' if args.style else ''}{task}seed{args.seed}"
    if args.melody:  # the melody as it is kept, to hear beside the harmonizations
        notes, header = melody
        midi = notes_to_midi(notes, spec, replace(header, bpm=controls.bpm or header.bpm))
        stem = claim_stem(out_dir, f"{name}_melody", midi, ext=".mid", beside=(), overwrite=args.overwrite)
        print(f"{stem}.mid: the melody given, {len(notes)} notes")
    for i, row in enumerate(out):
        tokens = finish(row)
        notes, header, bad = tokens_to_notes(tokens, spec)
        header = replace(header, bpm=controls.bpm or header.bpm)
        # claimed by its MIDI file, what is heard: the same tokens at another --bpm are another sample
        stem = claim_stem(out_dir, f"{name}_{i}", notes_to_midi(notes, spec, header), ext=".mid", beside=(".txt",),
                          overwrite=args.overwrite)
        path = lambda ext: stem.parent / (stem.name + ext)  # (a name may hold dots: bwv244.15_soprano)
        atomic_write(path(".txt"), tokens_to_text(tokens))
        bars = max(header.bars, header.bars_needed(notes, spec.sample_freq))
        silent = sorted(set(range(len(header.parts))) - {n.part for n in notes})  # parts the header names, unheard
        line = (f"{stem}.mid: {header.style}, {header.bpm:g} BPM, {header.meter}, "
                f"{', '.join(map(instrument_name, header.parts))}, {len(notes)} notes, {bars} bars, "
                f"{len(tokens)} tokens" + (f", {bad} bad groups" if bad else "")
                + (f", form {forms[i]}" if forms[i] else "") + (f", key {keys[i]}" if keys[i] else "")
                + (f", silent: {', '.join(f'part {k + 1}' for k in silent)}" if silent else ""))
        if args.musicxml:
            write_musicxml(notes_to_score(notes, spec, header), path(".musicxml"))
            line += f", {stem}.musicxml"
        if args.wav:
            wav = render_wav(path(".mid"), path(".wav"))
            line += f", {wav}" if wav else ""
            if wav is None:
                print("--wav needs FluidSynth and a General MIDI soundfont: on Debian/Ubuntu "
                      "`sudo apt-get install fluidsynth fluid-soundfont-gm`; on macOS `brew install fluid-synth` "
                      f"and a .sf2 file at one of {', '.join(SOUNDFONTS)}")
                args.wav = False
        print(line)


if __name__ == "__main__":
    batch.main(main)
