"""The closed vocabulary as a tokenizer JSON, and the encode/decode between tokens and ids.

python simple_tokenizer.py --dirs data/text --output tokenizers/simple_tokenizer.json

The vocabulary comes from the config ranges (encoding_decoding.Spec), never from the data; the folders given are
only scanned, and any token outside the vocabulary fails the run with a list of (token, file).
"""
import argparse
import json
import sys
from pathlib import Path

import config
from batch import find_files, write_json
from encoding_decoding import Spec, text_to_tokens

VERSION = 1


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
        d = json.loads(path.read_text())
        if d.get("version") != VERSION:
            raise ValueError(f"{path}: tokenizer version {d.get('version')!r}, this code reads version {VERSION}")
        tok = cls(Spec.of(d["spec"]))
        if d["itos"] != tok.itos or d["vocab_size"] != tok.vocab_size or d["stoi"] != tok.stoi:
            raise ValueError(f"{path}: vocabulary does not match its spec {d['spec']} (edited by hand?)")
        return tok


def unknown_tokens(files, vocab):
    """(token, file) for every distinct token of each file that is not in `vocab`."""
    return [(t, str(p)) for p in files for t in sorted(set(text_to_tokens(p.read_text())) - vocab)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dirs", nargs="+", default=[], help="folders of .txt encodings to check against it")
    parser.add_argument("--output", default="tokenizers/simple_tokenizer.json")
    args = config.cli(parser, ["sample_freq", "pitch_range", "velocity_range", "max_dur"], argv)
    tok = Tokenizer(Spec.of(args))
    files = [p for _, p in find_files(args.dirs, {".txt"})]
    if bad := unknown_tokens(files, set(tok.itos)):
        print(f"error: {len(bad)} tokens outside the vocabulary (encoded with other ranges?):", file=sys.stderr)
        for t, f in bad[:50]:
            print(f"  {t}\t{f}", file=sys.stderr)
        sys.exit(1)
    write_json(args.output, tok.to_dict())
    print(f"{args.output}: {tok.vocab_size} tokens; {len(files)} files checked, all in the vocabulary")


if __name__ == "__main__":
    main()
