"""Write the closed vocabulary as a tokenizer JSON (encoding_decoding.Tokenizer), checked against the encodings.

python simple_tokenizer.py --dirs data/text --output tokenizers/simple_tokenizer.json

The vocabulary comes from the config ranges and lists (encoding_decoding.Spec), never from the data, except for
the style tokens: their names are collected from the encodings' headers (without folders to scan: the styles of
config.corpus_styles). Any other token outside the vocabulary fails the run with a list of (token, file).
"""
import argparse
import sys
from dataclasses import replace
from pathlib import Path

import batch
import configurator
from batch import die, find_files, read_text, write_json
from encoding_decoding import STYLE_NAME, FirstEdition, Spec, Tokenizer, check_edition, kind, text_to_tokens, value


def read_encodings(files):
    """({file: tokens} of the readable files, [(problem, file)] for the ones that are not UTF-8 text)."""
    tokens, bad = {}, []
    for p in files:
        try:
            tokens[p] = text_to_tokens(read_text(p))
            check_edition(tokens[p], p)
        except FirstEdition as e:  # a folder of them: one line, not a list of every token
            die(e)
        except ValueError as e:
            bad.append((str(e), str(p)))
    return tokens, bad


def styles_of(encodings):
    """The style names that the encodings' headers use, sorted."""
    return sorted({value(t) for tokens in encodings.values() for t in tokens[:4]
                   if kind(t) == "style" and STYLE_NAME.fullmatch(value(t))})


def unknown_tokens(encodings, vocab):
    """(token, file) for every distinct token of each encoding that is not in `vocab`."""
    return [(t, str(p)) for p, tokens in encodings.items() for t in sorted(set(tokens) - vocab)]


def check_output(out):
    """One line, before any work, where --output would replace what is not a tokenizer of its own: a folder, another
    file, or the copy a run folder or a dataset holds (its weights or its ids were made with that one)."""
    if out.is_dir():
        die(f"--output {out} is a folder: name the JSON file, e.g. {out / 'tokenizer.json'}")
    for holder, whose in (("config.json", "a run folder's, which its weights were trained"),
                          ("meta.json", "a dataset's, which its ids were written")):
        if out.name == "tokenizer.json" and (out.parent / holder).is_file():
            die(f"--output {out} is {whose} with: write the new one elsewhere (e.g. data/mine/tokenizer.json)")
    if out.exists():
        try:
            Tokenizer.load(out)
        except (OSError, ValueError):
            die(f"--output {out} is there and is not a tokenizer JSON: name another file")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dirs", nargs="+", default=[], help="folders of .txt encodings to check against it")
    configurator.option(parser, "output", "the tokenizer JSON it writes", key="tokenizer_path")
    parser.add_argument("--base", help="a run folder (or tokenizer JSON) to extend: its vocabulary stays as it is and "
                                       "the new styles are appended, so train.py --init_from can fine-tune that run")
    args = configurator.cli(parser, ["sample_freq", "pitch_range", "velocity_range", "max_dur", "tempo_range",
                                     "tempo_buckets", "meters", "max_parts", "max_countdown"], argv)
    try:
        spec = Spec.of(args)
    except ValueError as e:
        die(e)
    check_output(Path(args.output))
    files = [p for _, p in find_files(args.dirs, {".txt"})]
    encodings, unreadable = read_encodings(files)
    if args.base:
        path = Path(args.base) / "tokenizer.json" if Path(args.base).is_dir() else Path(args.base)
        try:
            spec = Tokenizer.load(path).spec
        except (OSError, ValueError) as e:
            die(f"--base: {e}")
        spec = replace(spec, styles=spec.styles + tuple(s for s in styles_of(encodings) if s not in spec.styles))
    elif encodings:
        spec = Spec.of({**spec.to_dict(), "styles": styles_of(encodings)})
    tok = Tokenizer(spec)
    if bad := unreadable + unknown_tokens(encodings, set(tok.itos)):
        print(f"error: {len(bad)} tokens outside the vocabulary or unreadable files (encoded with other ranges?):",
              file=sys.stderr)
        for t, f in bad[:50]:
            print(f"  {t}\t{f}", file=sys.stderr)
        sys.exit(1)
    write_json(args.output, tok.to_dict())
    print(f"{args.output}: {tok.vocab_size} tokens, styles {', '.join(spec.styles)}; {len(files)} files checked, "
          f"all in the vocabulary")


if __name__ == "__main__":
    batch.main(main)
