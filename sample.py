"""Sample new pieces from a trained run, always valid, and write them as MIDI (and token text).

python sample.py --out_dir models/my_run --num_samples 5 --temperature 0.9 --top_k 100 [--top_p 0.95]
    [--max_new_tokens 1024] [--min_new_tokens 128] [--seed 1] [--prompt song.mid --prompt_bars 4] [--bpm 120] [--output_dir midi-samples]
    [--wav]

At every step only the tokens that the grammar allows can be drawn (encoding_decoding.GRAMMAR as a lookup table on
the device), so every sample is a well-formed piece. Same seed, same files, byte for byte.
"""
import argparse
import shutil
import subprocess
from pathlib import Path

import torch

import config
from batch import atomic_write, die
from encoding_decoding import (END, GRAMMAR, START, grammar_tables, kind, midi_to_notes, notes_to_midi,
                               notes_to_tokens, tokens_to_notes, tokens_to_text)
from first_silence_cleaner import strip_leading_silence
from model import load_checkpoint
from simple_tokenizer import Tokenizer
from train import autocast, pick_device

SOUNDFONTS = ["/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2",
              "/usr/share/soundfonts/default.sf2", "/usr/share/sounds/sf2/default-GM.sf2"]


class GrammarMask:
    """allowed_fn for GPT.generate: tracks each sequence's grammar state and masks what may not come next."""

    def __init__(self, tok, device, min_len=0):
        states, allowed, next_state = grammar_tables(tok.itos)
        self.allowed = torch.tensor(allowed, device=device)        # (S, V) bool
        self.next_state = torch.tensor(next_state, device=device)  # (S, V) state index
        self.begin, self.event = states.index("begin"), states.index("event")
        self.state, self.seen, self.min_len, self.end = None, 0, min_len, tok.stoi[END]

    def __call__(self, idx):
        if self.state is None:
            self.state = torch.full((idx.size(0),), self.begin, device=idx.device)
        for t in range(self.seen, idx.size(1)):  # the tokens added since the last call (the prompt, then one)
            self.state = self.next_state[self.state, idx[:, t]]
        self.seen = idx.size(1)
        allowed = self.allowed[self.state]
        if idx.size(1) < self.min_len:  # not yet: END is held back
            allowed = allowed.clone()
            allowed[:, self.end] = False
        return allowed


def load_run(run, device, checkpoint="best.pt"):
    """(model in eval mode, tokenizer, checkpoint path) from a run folder, or one clear line on what is missing."""
    run = Path(run)
    if not run.is_dir():
        die(f"{run}: no such run folder")
    ckpt = next((p for p in (run / checkpoint, run / "checkpoint.pt") if p.is_file()), None)
    if ckpt is None:
        die(f"{run}: no {checkpoint} or checkpoint.pt (train a model first)")
    if not (run / "tokenizer.json").is_file():
        die(f"{run}/tokenizer.json is missing: a run folder must hold the tokenizer it was trained with")
    tok = Tokenizer.load(run / "tokenizer.json")
    model, _ = load_checkpoint(ckpt, device)
    if model.cfg.vocab_size != tok.vocab_size:
        die(f"{ckpt} has {model.cfg.vocab_size} tokens but {run}/tokenizer.json has {tok.vocab_size}")
    return model.eval(), tok, ckpt


def finish(tokens):
    """Cut a sample at END, or, if it ran out of tokens first, after its last complete group, then close it."""
    state, cut = "begin", 0
    for i, t in enumerate(tokens):
        state = GRAMMAR[state].get(kind(t))
        if state is None:  # a constrained sample never breaks the grammar; keep what came before
            break
        if state == "end":
            return tokens[:i + 1]
        cut = i + 1 if state == "event" else cut
    return tokens[:cut] + [END]


def prompt_tokens(path, spec, bars):
    """START and the notes of the first `bars` bars (4/4 assumed) of a MIDI file, ready to be continued."""
    notes, _ = midi_to_notes(Path(path).read_bytes(), spec)
    notes = [n for n in notes if n[0] < bars * 4 * spec.sample_freq]
    if not notes:
        die(f"{path}: no notes in its first {bars} bars")
    return strip_leading_silence(notes_to_tokens(notes, spec))[:-1]  # drop END: the model goes on


def render_wav(mid, wav):
    """FluidSynth with a General MIDI soundfont; None when they are not installed."""
    font = next((f for f in SOUNDFONTS if Path(f).is_file()), None)
    if not shutil.which("fluidsynth") or font is None:
        return None
    subprocess.run(["fluidsynth", "-ni", "-F", str(wav), "-r", "44100", font, str(mid)], check=True,
                   capture_output=True)
    return wav


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="best.pt", help="file in the run folder (falls back to checkpoint.pt)")
    parser.add_argument("--prompt", help="a MIDI file whose opening bars the samples continue")
    parser.add_argument("--prompt_bars", type=int, default=4)
    parser.add_argument("--output_dir", default="midi-samples")
    parser.add_argument("--wav", action="store_true", help="also render WAV audio with FluidSynth")
    args = config.cli(parser, ["out_dir", "num_samples", "temperature", "top_k", "top_p", "max_new_tokens",
                               "min_new_tokens", "seed", "bpm", "device", "dtype"], argv)
    run = Path(args.out_dir)
    device, dtype = pick_device(args.device, args.dtype)
    model, tok, _ = load_run(run, device, args.checkpoint)
    torch.manual_seed(args.seed)
    prompt = prompt_tokens(args.prompt, tok.spec, args.prompt_bars) if args.prompt else [START]
    idx = torch.tensor([tok.encode(prompt)] * args.num_samples, device=device)
    mask = GrammarMask(tok, device, min_len=idx.size(1) + args.min_new_tokens)
    with autocast(device, dtype):
        out = model.generate(idx, args.max_new_tokens, args.temperature, args.top_k or None, args.top_p,
                             allowed_fn=mask, stop_id=tok.stoi[END], generator=torch.Generator(device).manual_seed(args.seed))
    out_dir = Path(args.output_dir)
    for i, row in enumerate(out.tolist()):
        tokens = finish(tok.decode(row))
        notes, bad = tokens_to_notes(tokens, tok.spec)
        stem = out_dir / f"{run.name}_seed{args.seed}_{i}"
        atomic_write(stem.with_suffix(".txt"), tokens_to_text(tokens))
        atomic_write(stem.with_suffix(".mid"), notes_to_midi(notes, tok.spec, args.bpm))
        line = f"{stem}.mid: {len(notes)} notes, {len(tokens)} tokens" + (f", {bad} bad groups" if bad else "")
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
    main()
