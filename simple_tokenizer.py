"""The closed vocabulary as a tokenizer JSON, and the encode/decode between tokens and ids.

python simple_tokenizer.py --dirs data/text --output tokenizers/simple_tokenizer.json

The vocabulary comes from the config ranges and lists (encoding_decoding.Spec), never from the data, except for
the style tokens: their names are collected from the encodings' headers (without folders to scan: the styles of
config.corpus_styles). Any other token outside the vocabulary fails the run with a list of (token, file).
"""
import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import batch
import config
from batch import die, find_files, read_text, write_json
from encoding_decoding import STYLE_NAME, Spec, kind, text_to_tokens, value

VERSION = 2  # 2: the piece header (style, tempo, meter) after START


class Tokenizer:
    def __init__(self, spec):
        self.spec = spec
        self.itos = spec.vocab()
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.vocab_size = len(self.itos)

    def encode(self, tokens):
        try:
            return [self.stoi[t] for t in tokens]
        except KeyError as e:
            raise ValueError(f"unknown token {e.args[0]!r} (not in the {self.vocab_size}-token vocabulary)") from None

    def decode(self, ids):
        if bad := [i for i in ids if not 0 <= i < self.vocab_size]:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (size {self.vocab_size})")
        return [self.itos[i] for i in ids]

    def to_dict(self):
        return {"version": VERSION, "vocab_size": self.vocab_size, "spec": self.spec.to_dict(),
                "itos": self.itos, "stoi": self.stoi}

    @classmethod
    def load(cls, path):
        """Read a tokenizer JSON and check that it is whole and matches the grammar of this code."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such tokenizer file")
        try:
            d = json.loads(path.read_text())
            d.get("version")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            raise ValueError(f"{path}: not a tokenizer JSON (truncated or corrupt file?)") from None
        if d.get("version") == 1:
            raise ValueError(f"{path}: this tokenizer predates the piece header (style, tempo, meter) that samples "
                             f"now start with; re-encode the data and retrain the run with this code")
        if d.get("version") != VERSION:
            raise ValueError(f"{path}: tokenizer version {d.get('version')!r}, this code reads version {VERSION}")
        try:
            spec = Spec.of(d["spec"])
        except ValueError as e:
            raise ValueError(f"{path}: its spec is not one this code can use: {e}") from None
        except (KeyError, TypeError, AttributeError):
            raise ValueError(f"{path}: tokenizer JSON lacks or garbles its spec (edited by hand?)") from None
        tok = cls(spec)
        if tok.vocab_size > 2**16:
            raise ValueError(f"{path}: its spec makes {tok.vocab_size} tokens, more than uint16 token ids can hold")
        try:
            whole = d["itos"] == tok.itos and d["vocab_size"] == tok.vocab_size and d["stoi"] == tok.stoi
        except KeyError:
            raise ValueError(f"{path}: tokenizer JSON lacks its vocabulary (edited by hand?)") from None
        if not whole:
            raise ValueError(f"{path}: vocabulary does not match its spec {d['spec']} (edited by hand?)")
        return tok


def read_encodings(files):
    """({file: tokens} of the readable files, [(problem, file)] for the ones that are not UTF-8 text)."""
    tokens, bad = {}, []
    for p in files:
        try:
            tokens[p] = text_to_tokens(read_text(p))
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dirs", nargs="+", default=[], help="folders of .txt encodings to check against it")
    parser.add_argument("--output", default="tokenizers/simple_tokenizer.json")
    parser.add_argument("--base", help="a run folder (or tokenizer JSON) to extend: its vocabulary stays as it is and "
                                       "the new styles are appended, so train.py --init_from can fine-tune that run")
    args = config.cli(parser, ["sample_freq", "pitch_range", "velocity_range", "max_dur", "tempo_range",
                               "tempo_buckets", "meters"], argv)
    files = [p for _, p in find_files(args.dirs, {".txt"})]
    encodings, unreadable = read_encodings(files)
    spec = Spec.of(args)
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
