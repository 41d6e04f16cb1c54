"""Sample new pieces from a trained run, always valid, and write them as MIDI (and token text).

python sample.py [--out_dir models/corpus] --num_samples 5 --temperature 0.9 --top_k 100 [--top_p 0.95]
    [--style bach] [--tempo 90] [--meter 3/4] [--parts 4 | --instruments violin,violin,viola,cello]
    [--bars 16 | --seconds 60] [--key "D minor" | --scale 0,2,4,5,7,9,11] [--pitch_range 48,84]
    [--prompt song.mid --prompt_bars 4] [--bpm 120] [--max_new_tokens 1024] [--seed 1] [--output_dir midi-samples]
    [--musicxml] [--wav] [--list_styles]

Without --out_dir it samples from models/corpus beside this script, the model that ships in the repo
(models/corpus/MODEL.md), from whatever folder it is run. A run trained on the grammar's first edition (one part,
no bar lines: the shipped model until it is retrained) still samples, through legacy.py, without --prompt or
--parts/--instruments.
At every step only the tokens that the grammar and the controls allow can be drawn (controls.GrammarMask: lookup
tables on the device), so every sample is a well-formed piece that obeys them. Same seed, same files, byte for byte.
"""
import argparse
import shutil
import subprocess
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import batch
import config
import configurator
import legacy
from batch import atomic_open, atomic_write, clean_stale, die, reason, temp_name, writable_dir
from controls import Controls, GrammarMask, key_pitch_classes, pitch_class
from encoding_decoding import (DRUMS, END, HEADER, START, finish, instrument_name, instrument_number, kind,
                               midi_to_notes, notes_to_midi, notes_to_score, notes_to_tokens, strip_leading_silence,
                               tokens_to_notes, tokens_to_text)
from model import autocast
from runs import load_run, pick_device

SHIPPED = str(Path(__file__).resolve().parent / config.shipped_run)  # found from whatever folder sample.py runs in
SOUNDFONTS = ["/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2",
              "/usr/share/soundfonts/default.sf2", "/usr/share/sounds/sf2/default-GM.sf2"]


def read_prompt(path, spec, bars, meter=None):
    """(tokens after START, Header) of the first `bars` bars of a MIDI file, whole bars before the first note
    dropped: its header and its bars, bar lines included, ready to be continued. With `meter`, its bars are laid in
    that meter (the notes keep their time)."""
    try:
        notes, header, _ = midi_to_notes(Path(path).read_bytes(), spec)
    except OSError as e:
        die(f"--prompt {path}: cannot read it ({e.strerror})")
    except Exception as e:  # music21's reader raises its own kinds on a damaged file
        die(f"--prompt {path}: not a readable MIDI file ({reason(e)})")
    tokens = strip_leading_silence(notes_to_tokens(notes, spec, header))
    bpm = header.bpm  # the file's own, not its token's bucket
    notes, header, _ = tokens_to_notes(tokens, spec)
    header = replace(header, bpm=bpm, bars=0)  # as many bars as the notes kept need
    if meter:
        header = replace(header, meter=meter, changes=())
    cut = header.bar_lines(spec.sample_freq, bars)[-1]
    notes = [n for n in notes if n.start < cut]
    if not notes:
        die(f"--prompt {path}: no notes in its first {bars} bars")
    tokens = notes_to_tokens(notes, spec, header)
    return tokens[1:-1], header


def prompt_controls(args, spec, controls):
    """(the forced tokens after START, controls with the prompt's header) for --prompt: the header takes the
    prompt's tempo, meter and parts unless --tempo or --meter force others (a forced meter lays the prompt's bars
    anew), the MIDI is written at the prompt's own tempo (unless --tempo or --bpm), and the bar lines' countdown is
    left to the mask (--bars or the model). What changes is said in a note."""
    if controls.part_count() is not None:
        die("--prompt brings its own parts: give --parts/--instruments only without a prompt")
    tokens, header = read_prompt(args.prompt, spec, args.prompt_bars, controls.meter)
    controls = replace(controls, tempo=controls.tempo or header.bpm, meter=controls.meter or header.meter,
                       bpm=controls.bpm or (header.bpm if controls.tempo is None else None),
                       instruments=header.parts)
    if controls.bpm == header.bpm and spec.bucket_bpm(header.bpm) != round(header.bpm):
        print(f"note: --prompt {args.prompt} is at {header.bpm:g} BPM: the header's tempo token is the nearest this "
              f"run knows ({spec.bucket_bpm(header.bpm)}), and the MIDI keeps {header.bpm:g} BPM")
    notes = tokens_to_notes([START] + tokens + [END], spec)[0]
    if bad := [n for n in notes if header.parts[n.part] != DRUMS and not controls.allows_pitch(n.pitch)]:
        die(f"--prompt {args.prompt}: note {bad[0].pitch} at step {bad[0].start} is outside "
            f"--key/--scale/--pitch_range")
    plan = controls.bars_at(spec.bucket_bpm(controls.tempo), header.bar_lines(spec.sample_freq, 1)[1], spec.sample_freq)
    bars = sum(kind(t) == "bar" for t in tokens)
    if plan is not None and bars >= plan:
        die(f"--prompt {args.prompt}: its {bars} bars already reach the --bars/--seconds target ({plan} bars)")
    # the header's values and every bar line are drawn under the mask (which forces the header to the prompt's)
    return [-1 if kind(t) in HEADER + ("inst", "bar") else t for t in tokens], controls


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
        scale = (key_pitch_classes(args.key) if args.key else
                 tuple(sorted({pitch_class(p.strip()) for p in args.scale.split(",")})) if args.scale else None)
    except ValueError as e:
        die(f"--key/--scale: {e}")
    try:
        instruments = tuple(map(instrument_number, args.instruments.split(","))) if args.instruments else None
    except ValueError as e:
        die(f"--instruments: {e}")
    return Controls(style=args.style, tempo=args.tempo, meter=args.meter, bars=args.bars, seconds=args.seconds,
                    scale=scale, pitch_range=args.pitch_range, bpm=args.bpm, parts=args.parts, instruments=instruments)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="file in the run folder (default: best.pt, else checkpoint.pt)")
    parser.add_argument("--prompt", help="a MIDI file whose opening bars the samples continue")
    configurator.option(parser, "prompt_bars", "bars of the prompt, in its own meter")
    configurator.option(parser, "output_dir", "where the samples go", key="samples_dir")
    parser.add_argument("--musicxml", action="store_true", help="also write each sample as a score (MusicXML)")
    parser.add_argument("--wav", action="store_true", help="also render WAV audio with FluidSynth")
    parser.add_argument("--list_styles", action="store_true", help="print the styles this run knows and exit")
    control = parser.add_argument_group("controls (each enforced by the sampling mask)")
    control.add_argument("--style", help="the style token to start with (default: the model picks)")
    control.add_argument("--tempo", type=configurator.typed("tempo", 90.0),
                         help="BPM: force the tempo token of its bucket")
    control.add_argument("--meter", help="time signature, e.g. 3/4 (see --list_styles for the known ones)")
    control.add_argument("--parts", type=configurator.typed("parts", 4), help="how many parts (voices, instruments)")
    control.add_argument("--instruments", help="each part's instrument, names or General MIDI numbers: "
                                               "violin,violin,viola,cello or 40,40,41,42 (drums for a drum part)")
    control.add_argument("--bars", type=configurator.typed("bars", 16),
                         help="a piece of this many bars of its meter, planned from its first bar line")
    control.add_argument("--seconds", type=configurator.typed("seconds", 60.0),
                         help="as many bars as last about this many seconds at the piece's tempo")
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
    model, tok, _ = load_run(run, device, args.checkpoint, first_edition=True)
    spec = tok.spec
    if args.list_styles:
        print(f"styles: {' '.join(spec.styles)}\nmeters: {' '.join(spec.meters)}\n"
              f"tempos (BPM buckets): {' '.join(map(str, spec.tempo_bpms()))}")
        return
    if tok.version == 2:
        plan = first_edition_plan(args, tok, controls, device)
    else:
        if errors := controls.errors(spec):
            die("; ".join(errors))
        forced = [-1]  # START, then the header and the bars the mask or a prompt gives
        if args.prompt:
            prompt, controls = prompt_controls(args, spec, controls)
            forced += [t if t == -1 else tok.stoi[t] for t in prompt]
        n_parts = controls.part_count() or spec.max_parts
        given = ["bar" if t == -1 and i > len(HEADER) + n_parts else None for i, t in enumerate(forced)]
        plan = dict(mask=GrammarMask(tok, device, controls, given), keep=1 + len(HEADER) + n_parts,
                    decode=tokens_to_notes,
                    max_new=len(forced) - 1 + controls.token_budget(spec, otherwise=args.max_new_tokens),
                    forced=forced, finish=finish)

    torch.manual_seed(args.seed)
    idx = torch.full((args.num_samples, 1), tok.stoi[START], device=device)
    with autocast(device, dtype):  # START and the header stay when the window slides
        out = model.generate(idx, plan["max_new"], args.temperature, args.top_k or None, args.top_p,
                             allowed_fn=plan["mask"], stop_id=tok.stoi[END],
                             generator=torch.Generator(device).manual_seed(args.seed), keep=plan["keep"],
                             forced=plan["forced"])
    for i, row in enumerate(out.tolist()):
        tokens = plan["finish"](tok.decode(row))
        notes, header, bad = plan["decode"](tokens, spec)
        header = replace(header, bpm=controls.bpm or header.bpm)
        stem = out_dir / (f"{run.name}_{args.style + '_' if args.style else ''}seed{args.seed}_{i}")
        atomic_write(stem.with_suffix(".txt"), tokens_to_text(tokens))
        atomic_write(stem.with_suffix(".mid"), notes_to_midi(notes, spec, header))
        bars = max(header.bars, header.bars_needed(notes, spec.sample_freq))
        line = (f"{stem}.mid: {header.style}, {header.bpm:g} BPM, {header.meter}, "
                f"{', '.join(map(instrument_name, header.parts))}, {len(notes)} notes, {bars} bars, "
                f"{len(tokens)} tokens" + (f", {bad} bad groups" if bad else ""))
        if args.musicxml:
            write_musicxml(notes_to_score(notes, spec, header), stem.with_suffix(".musicxml"))
            line += f", {stem}.musicxml"
        if args.wav:
            wav = render_wav(stem.with_suffix(".mid"), stem.with_suffix(".wav"))
            line += f", {wav}" if wav else ""
            if wav is None:
                print("--wav needs FluidSynth and a General MIDI soundfont: on Debian/Ubuntu "
                      "`sudo apt-get install fluidsynth fluid-soundfont-gm`; on macOS `brew install fluid-synth` "
                      f"and a .sf2 file at one of {', '.join(SOUNDFONTS)}")
                args.wav = False
        print(line)


def write_musicxml(score, path):
    """A music21 Score as MusicXML, written atomically (music21 writes a file of its own choosing first)."""
    from music21.musicxml.m21ToXml import GeneralObjectExporter
    atomic_write(path, GeneralObjectExporter(score).parse())


def first_edition_plan(args, tok, controls, device):
    """How to sample a run of the grammar's first edition (legacy.py): its mask, its decoder and its budget."""
    if args.prompt or controls.part_count() is not None:
        die(f"{args.out_dir} was trained on the first edition of the token grammar (one part, no bar lines): "
            f"--prompt and --parts/--instruments need a run of the second edition (retrain on data encoded now)")
    old = legacy.Controls(style=controls.style, tempo=controls.tempo, meter=controls.meter, bars=controls.bars,
                          seconds=controls.seconds, scale=controls.scale, pitch_range=controls.pitch_range,
                          bpm=controls.bpm)
    if errors := old.errors(tok.spec):
        die("; ".join(errors))
    forced = [-1] * (1 + len(legacy.HEADER))
    return dict(mask=legacy.GrammarMask(tok, device, min_len=len(forced) + args.min_new_tokens, controls=old),
                keep=1 + len(legacy.HEADER), max_new=len(forced) - 1 + old.token_budget(tok.spec, args.max_new_tokens),
                forced=forced, decode=legacy.decode, finish=legacy.finish)


if __name__ == "__main__":
    batch.main(main)
