"""Sample new pieces from a trained run, always valid, and write them as MIDI (and token text).

python sample.py [--out_dir models/corpus] --num_samples 5 --temperature 0.9 --top_k 100 [--top_p 0.95]
    [--style bach] [--tempo 90] [--meter 3/4] [--bars 16 | --seconds 60] [--key "D minor" | --scale 0,2,4,5,7,9,11]
    [--pitch_range 48,84] [--prompt song.mid --prompt_bars 4] [--bpm 120] [--max_new_tokens 1024]
    [--min_new_tokens 128] [--seed 1] [--output_dir midi-samples] [--wav] [--list_styles]

Without --out_dir it samples from models/corpus beside this script, the model that ships in the repo
(models/corpus/MODEL.md), from whatever folder it is run.
At every step only the tokens that the grammar and the controls allow can be drawn (controls.GrammarMask: lookup
tables on the device), so every sample is a well-formed piece that obeys them. Same seed, same files, byte for byte.
"""
import argparse
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import torch

import batch
import config
import configurator
from batch import atomic_write, clean_stale, die, reason, writable_dir
from controls import Controls, GrammarMask, key_pitch_classes, pitch_class
from encoding_decoding import (END, HEADER, START, bar_steps, finish, header_end, midi_to_notes, notes_to_midi,
                               notes_to_tokens, strip_leading_silence, tokens_to_notes, tokens_to_text)
from model import autocast
from runs import load_run, pick_device

SHIPPED = str(Path(__file__).resolve().parent / config.shipped_run)  # found from whatever folder sample.py runs in
SOUNDFONTS = ["/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2",
              "/usr/share/soundfonts/default.sf2", "/usr/share/sounds/sf2/default-GM.sf2"]


def read_prompt(path, spec, bars):
    """(events, Header) of the first `bars` bars (in the prompt's own meter) of a MIDI file: the events without
    START, header and END, leading silence dropped, ready to be continued."""
    try:
        notes, header, _ = midi_to_notes(Path(path).read_bytes(), spec)
    except OSError as e:
        die(f"--prompt {path}: cannot read it ({e.strerror})")
    except Exception as e:  # music21's reader raises its own kinds on a damaged file
        die(f"--prompt {path}: not a readable MIDI file ({reason(e)})")
    notes = [n for n in notes if n.start < bars * bar_steps(header.meter, spec.sample_freq)]
    if not notes:
        die(f"--prompt {path}: no notes in its first {bars} bars")
    tokens = strip_leading_silence(notes_to_tokens(notes, spec, header))
    return tokens[header_end(tokens):-1], header


def prompt_controls(args, spec, controls):
    """(the prompt's events, controls with its tempo and meter) for --prompt: the header takes them unless --tempo or
    --meter force others, the MIDI is written at the prompt's own tempo (unless --tempo or --bpm), and a meter the
    run has no token for is meter:other, counted and written as the prompt's. What changes is said in a note."""
    events, header = read_prompt(args.prompt, spec, args.prompt_bars)
    own_meter = header.meter in spec.meters
    controls = replace(controls, tempo=controls.tempo or header.bpm, meter=controls.meter or (
                           header.meter if own_meter else "other"),
                       bpm=controls.bpm or (header.bpm if controls.tempo is None else None),
                       other_meter=header.meter if not controls.meter and not own_meter else None)
    if controls.other_meter:
        print(f"note: --prompt {args.prompt} is in {header.meter}, which this run has no token for: its header says "
              f"meter:other, and --bars counts and the MIDI keeps bars of {header.meter}")
    if controls.bpm == header.bpm and spec.bucket_bpm(header.bpm) != round(header.bpm):
        print(f"note: --prompt {args.prompt} is at {header.bpm:g} BPM: the header's tempo token is the nearest this "
              f"run knows ({spec.bucket_bpm(header.bpm)}), and the MIDI keeps {header.bpm:g} BPM")
    notes = tokens_to_notes([START] + events + [END], spec)[0]
    if bad := [n for n in notes if not controls.allows_pitch(n.pitch)]:
        die(f"--prompt {args.prompt}: note {bad[0].pitch} at step {bad[0].start} is outside "
            f"--key/--scale/--pitch_range")
    target = controls.length_steps(controls.bar_steps(controls.meter, spec.sample_freq),
                                   spec.bucket_bpm(controls.tempo), spec.sample_freq)
    if target is not None and max(n.end for n in notes) > target:
        die(f"--prompt {args.prompt}: its {args.prompt_bars} bars already last past the --bars/--seconds target "
            f"({target} steps)")
    return events, controls


def render_wav(mid, wav):
    """FluidSynth with a General MIDI soundfont; None when they are not installed."""
    font = next((f for f in SOUNDFONTS if Path(f).is_file()), None)
    if not shutil.which("fluidsynth") or font is None:
        return None
    subprocess.run(["fluidsynth", "-ni", "-F", str(wav), "-r", "44100", font, str(mid)], check=True,
                   capture_output=True)
    return wav


def parse_controls(args):
    """Controls from sample.py's arguments, or one clear line on what is wrong with them."""
    try:
        scale = (key_pitch_classes(args.key) if args.key else
                 tuple(sorted({pitch_class(p.strip()) for p in args.scale.split(",")})) if args.scale else None)
    except ValueError as e:
        die(f"--key/--scale: {e}")
    return Controls(style=args.style, tempo=args.tempo, meter=args.meter, bars=args.bars, seconds=args.seconds,
                    scale=scale, pitch_range=args.pitch_range, bpm=args.bpm)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="file in the run folder (default: best.pt, else checkpoint.pt)")
    parser.add_argument("--prompt", help="a MIDI file whose opening bars the samples continue")
    configurator.option(parser, "prompt_bars", "bars of the prompt, in its own meter")
    configurator.option(parser, "output_dir", "where the samples go", key="samples_dir")
    parser.add_argument("--wav", action="store_true", help="also render WAV audio with FluidSynth")
    parser.add_argument("--list_styles", action="store_true", help="print the styles this run knows and exit")
    control = parser.add_argument_group("controls (each enforced by the sampling mask)")
    control.add_argument("--style", help="the style token to start with (default: the model picks)")
    control.add_argument("--tempo", type=configurator.typed("tempo", 90.0),
                         help="BPM: force the tempo token of its bucket")
    control.add_argument("--meter", help="time signature, e.g. 3/4 (see --list_styles for the known ones)")
    control.add_argument("--bars", type=configurator.typed("bars", 16),
                         help="end exactly after this many bars of the piece's meter")
    control.add_argument("--seconds", type=configurator.typed("seconds", 60.0),
                         help="end exactly after this many seconds at the piece's tempo")
    control.add_argument("--key", help='only pitches of this scale, e.g. "D minor", "F# major", "G dorian"')
    control.add_argument("--scale", help="only these pitch classes, e.g. 0,2,4,7,9 or C,D,E,G,A")
    control.add_argument("--pitch_range", type=configurator.typed("pitch_range", (48, 84)),
                         help="LOW,HIGH: only MIDI pitches inside it, e.g. 48,84")
    control.add_argument("--bpm", type=configurator.typed("bpm", 120.0),
                         help="write the MIDI at this tempo instead of the header's")
    args = configurator.cli(parser, ["out_dir", "num_samples", "temperature", "top_k", "top_p", "max_new_tokens",
                                     "min_new_tokens", "seed", "device", "dtype"], argv, own={"out_dir": SHIPPED})
    if args.key and args.scale:
        die("give --key or --scale, not both")
    controls = parse_controls(args)
    out_dir = writable_dir(args.output_dir, "--output_dir")  # before any work is spent
    clean_stale(out_dir)  # what a killed run left half written
    run = Path(args.out_dir)
    device, dtype = pick_device(args.device, args.dtype)
    model, tok, _ = load_run(run, device, args.checkpoint)
    spec = tok.spec
    if args.list_styles:
        print(f"styles: {' '.join(spec.styles)}\nmeters: {' '.join(spec.meters)} other\n"
              f"tempos (BPM buckets): {' '.join(map(str, spec.tempo_bpms()))}")
        return
    if errors := controls.errors(spec):
        die("; ".join(errors))

    events = []
    if args.prompt:
        events, controls = prompt_controls(args, spec, controls)
    forced = [-1] * (1 + len(HEADER)) + tok.encode(events)  # START and the header, then the prompt's events
    max_new = len(forced) - 1 + controls.token_budget(spec, otherwise=args.max_new_tokens)

    torch.manual_seed(args.seed)
    idx = torch.full((args.num_samples, 1), tok.stoi[START], device=device)
    mask = GrammarMask(tok, device, min_len=len(forced) + args.min_new_tokens, controls=controls)
    with autocast(device, dtype):
        out = model.generate(idx, max_new, args.temperature, args.top_k or None, args.top_p, allowed_fn=mask,
                             stop_id=tok.stoi[END], generator=torch.Generator(device).manual_seed(args.seed),
                             keep=1 + len(HEADER), forced=forced)  # START and the header stay when the window slides
    for i, row in enumerate(out.tolist()):
        tokens = finish(tok.decode(row))
        notes, header, bad = tokens_to_notes(tokens, spec)
        header = replace(header, bpm=controls.bpm or header.bpm, meter=controls.time_signature(header.meter))
        stem = out_dir / (f"{run.name}_{args.style + '_' if args.style else ''}seed{args.seed}_{i}")
        atomic_write(stem.with_suffix(".txt"), tokens_to_text(tokens))
        atomic_write(stem.with_suffix(".mid"), notes_to_midi(notes, spec, header))
        line = (f"{stem}.mid: {header.style}, {header.bpm:g} BPM, {header.meter}, {len(notes)} notes, "
                f"{max((n.end for n in notes), default=0) / bar_steps(header.meter, spec.sample_freq):g} bars, "
                f"{len(tokens)} tokens" + (f", {bad} bad groups" if bad else ""))
        if args.wav:
            wav = render_wav(stem.with_suffix(".mid"), stem.with_suffix(".wav"))
            line += f", {wav}" if wav else ""
            if wav is None:
                print("--wav needs FluidSynth and a General MIDI soundfont: on Debian/Ubuntu "
                      "`sudo apt-get install fluidsynth fluid-soundfont-gm`; on macOS `brew install fluid-synth` "
                      f"and a .sf2 file at one of {', '.join(SOUNDFONTS)}")
                args.wav = False
        print(line)


if __name__ == "__main__":
    batch.main(main)
