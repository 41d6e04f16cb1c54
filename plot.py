"""Pictures of a run and of its music.

python plot.py --out_dir models/my_run          -> loss.png (train/val loss) and expert_load.png in the run folder
python plot.py --midi midi-samples/x.mid [...]  -> x.png beside each file: a piano roll, a colour per part
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

import batch  # noqa: E402
from batch import clean_stale, die, read_jsonl, reason, save_figure, why_not_written  # noqa: E402
from configurator import one_line_errors  # noqa: E402
from encoding_decoding import Spec  # noqa: E402
from midi_io import midi_to_notes, part_names  # noqa: E402


def plot_run(run):
    path = run / "metrics.jsonl"
    if not path.is_file():
        die(f"{path}: no such file (is {run} a run folder?)")
    rows = [row for row, _ in read_jsonl(path, "iter")]
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    steps = [r for r in rows if number(r.get("lm_loss"))]  # rows of another version or hand-made ones may lack it
    evals = [r for r in rows if number(r.get("val_loss")) and number(r.get("train_loss"))]
    if not steps and not evals:
        die(f"{path}: no training or validation losses in it yet ({len(rows)} rows): nothing to plot")
    clean_stale(run)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([r["iter"] for r in steps], [r["lm_loss"] for r in steps], lw=0.8, alpha=0.6, label="train (batch)")
    ax.plot([r["iter"] for r in evals], [r["train_loss"] for r in evals], "o-", label="train (eval)")
    ax.plot([r["iter"] for r in evals], [r["val_loss"] for r in evals], "o-", label="val")
    ax.set(xlabel="iteration", ylabel="cross-entropy (nats/token)", title=f"{run.name}: loss", yscale="log")
    for axis_set in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_set(matplotlib.ticker.FormatStrFormatter("%g"))  # 0.6, 1, 2 rather than 6x10^-1
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, run / "loss.png")
    keys = sorted({k for r in steps for k in r if k.startswith("expert_load/")})
    layers = sorted({k.split("/")[1] for k in keys})
    fig, axes = plt.subplots(len(layers) or 1, 1, figsize=(8, 2.2 * max(1, len(layers))), sharex=True, squeeze=False)
    for ax, layer in zip(axes[:, 0], layers):
        for k in (k for k in keys if k.split("/")[1] == layer):
            ax.plot([r["iter"] for r in steps if k in r], [r[k] for r in steps if k in r], label=k.split("/")[2])
        ax.set(ylabel=f"{layer}\nshare of tokens", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    axes[-1, 0].set_xlabel("iteration")
    axes[0, 0].set_title(f"{run.name}: routed expert load per layer")
    save_figure(fig, run / "expert_load.png")
    return [run / "loss.png", run / "expert_load.png"]


def plot_piano_roll(mid, spec):
    """Draw a MIDI file's piano roll beside it; ValueError saying why it cannot be drawn."""
    if not Path(mid).is_file():
        raise ValueError(f"{mid}: a folder, not a MIDI file (give its files: {Path(mid) / '*.mid'})"
                         if Path(mid).is_dir() else f"{mid}: no such file")
    try:
        notes, header, _ = midi_to_notes(Path(mid).read_bytes(), spec)
    except Exception as e:  # a damaged file is a ValueError; any other failure of the reader is told the same way
        raise ValueError(f"{mid}: cannot be read as MIDI ({reason(e)})") from None
    if not notes:
        raise ValueError(f"{mid}: no notes to draw")
    fig, ax = plt.subplots(figsize=(12, 4.5))
    beats, colours = spec.sample_freq, plt.get_cmap("tab10" if len(header.parts) <= 10 else "tab20")
    for n in notes:  # louder notes are drawn more opaque
        ax.add_patch(plt.Rectangle((n.start / beats, n.pitch - 0.4), n.dur / beats, 0.8, lw=0,
                                   color=colours(n.part % colours.N), alpha=0.35 + 0.65 * n.vel / 127))
    end = max(n.end for n in notes) / beats
    pitches = [n.pitch for n in notes]
    lines = header.bar_lines(spec.sample_freq, header.bars_needed(notes, spec.sample_freq))
    for line in lines[1:]:
        ax.axvline(line / beats, color="0.85", lw=0.6, zorder=0)
    ax.set(xlim=(0, end), ylim=(min(pitches) - 2, max(pitches) + 2), xlabel="beats (quarter notes); lines: bars",
           ylabel="MIDI pitch", title=f"{Path(mid).name}: {header.bpm:g} BPM, {header.meter}")
    ax.grid(alpha=0.2)
    for k, name in enumerate(part_names(header.parts)):
        ax.plot([], [], lw=6, color=colours(k % colours.N), label=name)
    ax.legend(loc="upper right", fontsize="small", ncol=min(len(header.parts), 4))
    out = Path(mid).with_suffix(".png")
    save_figure(fig, out)
    return out


def main(argv=None):
    parser = one_line_errors(argparse.ArgumentParser(description=__doc__,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--out_dir", help="a run folder: draw its loss curves and expert load")
    parser.add_argument("--midi", nargs="+", default=[], help="MIDI files: draw a piano roll of each")
    args = parser.parse_args(argv)
    if not args.out_dir and not args.midi:
        die("give --out_dir RUN and/or --midi FILE ...")
    written, failed = plot_run(Path(args.out_dir)) if args.out_dir else [], []
    for mid in args.midi:  # one bad file is reported, the others are drawn
        try:
            written.append(plot_piano_roll(mid, Spec()))
        except ValueError as e:
            failed.append(str(e))
        except OSError as e:  # its picture cannot be written (a folder of that name, a full disk, no permission)
            failed.append(f"{mid}: its piano roll cannot be written ({why_not_written(e)})")
        except Exception as e:  # matplotlib's own kinds, on a piece it cannot draw
            failed.append(f"{mid}: cannot be drawn ({reason(e)})")
    if written:
        print("wrote " + ", ".join(map(str, written)))
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    if failed:
        sys.exit(2)


if __name__ == "__main__":
    batch.main(main)
