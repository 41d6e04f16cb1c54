"""A long prompt: seconds to read it into the shipped model and write 16 tokens after it, fed at once (chunked
prefill, as sample.py does) against one decode step per given token (how it was fed before).

python bench/bench_prompt.py [--notes 6700 100000] [--step_notes 6700] [--out_dir models/demo]

The prompt is a MIDI file of `notes` notes built here (four-note chords on eighths), read with the reader
sample.py --prompt uses; "read" is the MIDI reading and tokenizing (of the file's bytes, written before), "generate"
the model with the grammar mask.
The run must be of the grammar's second edition (`make demo` trains one), as prompts are.
The step-by-step row is measured only for prompts of at most --step_notes notes (it takes minutes beyond).
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from encoding_decoding import START, Spec, header_end, notes_to_tokens  # noqa: E402
from mask import GrammarMask  # noqa: E402
from midi_io import midi_to_notes, notes_to_midi  # noqa: E402
from runs import load_run  # noqa: E402


def prompt_file(path, n_notes, spec):
    notes = [(2 * (k // 4), 72 - 5 * (k % 4) + (k // 4) % 5, 2, 80) for k in range(n_notes)]
    path.write_bytes(notes_to_midi(notes, spec))
    return path


def one_token_at_a_time(mask, forced):
    """The mask of before: at a given position only the given token is allowed, so it is fed as a decode step."""
    def allowed(idx):
        out = mask(idx)
        if idx.size(1) < len(forced) and forced[idx.size(1)] >= 0:
            out = torch.zeros_like(out)
            out[:, forced[idx.size(1)]] = True
        return out
    return allowed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notes", type=int, nargs="+", default=[6700, 100_000])
    parser.add_argument("--step_notes", type=int, default=6700)
    parser.add_argument("--out_dir", default=str(Path(__file__).resolve().parents[1] / "models" / "demo"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tok, _ = load_run(args.out_dir, "cpu")
    rows = []
    for n in args.notes:
        data = prompt_file(Path(f"/tmp/bench_prompt_{n}.mid"), n, Spec()).read_bytes()
        t0 = time.perf_counter()
        notes, header, _ = midi_to_notes(data, tok.spec)
        tokens = notes_to_tokens(notes, tok.spec, header)
        keep = header_end(tokens)  # START and the header, which the model samples under the mask
        forced = [-1] * keep + tok.encode(tokens[keep:-1])
        read = time.perf_counter() - t0
        for how in ("at once", "one step per token"):
            if how != "at once" and n > args.step_notes:
                continue
            mask = GrammarMask(tok, "cpu")
            t0 = time.perf_counter()
            out = model.generate(torch.full((1, 1), tok.stoi[START]), len(forced) - 1 + 16, top_k=100, keep=keep,
                                 allowed_fn=mask if how == "at once" else one_token_at_a_time(mask, forced),
                                 forced=forced if how == "at once" else ())
            assert out[0, keep:len(forced)].tolist() == forced[keep:]
            rows.append((n, len(forced), how, read, time.perf_counter() - t0))
    print(f"\n{Path(args.out_dir).name}, torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, batch 1")
    print(f"{'notes':>7} {'tokens':>7} {'prompt fed':>19} {'read s':>7} {'generate s':>11}")
    for n, t, how, r, g in rows:
        print(f"{n:7,} {t:7,} {how:>19} {r:7.2f} {g:11.1f}")


if __name__ == "__main__":
    main()
