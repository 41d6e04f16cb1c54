"""Turn text encodings into train.bin / val.bin (uint16 token ids) and meta.json.

python prepare.py --main_data_path data/text --augmented_data_path data/aug --output_base_dir data/bin \
    --tokenizer_paths tokenizers/simple_tokenizer.json --augmented_percentage 30 [--val_fraction 0.05] [--seed 1337] \
    [--given_share 0.25 [--given_kinds melody]] [--rule_styles bach,fiddle [--rule_scale key]] [--overwrite]

The split is by piece and made before augmentation, from a stable hash of the piece id, so no copy of a validation
piece reaches train.bin; val.bin holds originals only. With --given_share, that seeded share of the training
pieces is written with some of it given and shown ahead (a melody, all parts but one, the bars after a gap:
encoding_decoding.given_variant; --given_kinds melody writes only the first), for a run that samples given material
with --look_ahead (off by default: see the README's "Given material"). With --rule_styles, train_rules.npz holds
what the rules of part writing of those styles forbid at each token of train.bin where the piece keeps them (for
train.py --rule_weight); with --rule_scale, each piece's own scale is among them, at every pitch: "used", the pitch
classes it uses, or "key", its key signature's nine (config.py).
Pieces stream to disk one at a time. A rerun replaces the dataset in --output_base_dir where it was prepared from the
same folders with the same settings; from other ones, only with --overwrite.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np

import batch
import config
import configurator
from batch import (DiskFull, atomic_write, clean_stale, die, find_files, lock, no_room, read_text, swap_in, temp_name,
                   within, writable_dir, write_json)
from controls import style_rules
from dataset import META_VERSION, piece_id, split, write_rules, write_split
from encoding_decoding import Tokenizer, text_to_tokens


def check_rule_styles(styles, tok):
    """One line and exit unless every style of --rule_styles is the tokenizer's and takes rules of part writing."""
    for style in styles:
        if style not in tok.spec.styles:
            die(f"--rule_styles: {style!r} is not a style of this tokenizer ({', '.join(tok.spec.styles)})")
        if style_rules(style) is None:
            with_rules = [s for s in tok.spec.styles if style_rules(s) is not None]
            die(f"--rule_styles: {style!r} takes no rules of part writing by default (config.STYLE_DEFAULTS); those "
                f"that do: {', '.join(with_rules)}")


DATASET_FILES = {"train.bin", "val.bin", "meta.json", "tokenizer.json", "train_rules.npz"}  # what a dataset holds


def check_dataset_folder(out, inputs):
    """The dataset folder is replaced whole (batch.swap_in): one line where that would delete what prepare.py did not
    write, an input folder (or one holding it) or any other file, before any work."""
    for given in filter(None, inputs):
        if within(given, out):
            same = within(out, given)
            die(f"--output_base_dir {out} {'is' if same else 'holds'} the input folder {given}: the dataset would "
                f"replace it and delete the encodings; give it a folder of its own, e.g. "
                f"{out.parent / 'bin' if same else out / 'bin'}")
    if out.is_dir() and (others := sorted(p.name for p in out.iterdir() if p.name not in DATASET_FILES)):
        die(f"--output_base_dir {out} holds files prepare.py did not write ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}), and the dataset replaces the folder whole: give a new or empty "
            f"folder, or a dataset's")


def settings_of(meta):
    """What a dataset was prepared from and with (meta.json's own keys); a key an older meta.json lacks is None."""
    rules = meta.get("rules")
    return {"inputs": meta.get("inputs"), "tokenizer": (meta.get("tokenizer") or {}).get("sha256"),
            "seed": meta.get("seed"), "val_fraction": meta.get("val_fraction"),
            "augmented_percentage": meta.get("augmented_percentage"), "given_share": meta.get("given_share"),
            "given_kinds": meta.get("given_kinds") if meta.get("given_share") else None,
            "rule_styles": sorted(rules) if isinstance(rules, dict) else None if "rules" not in meta else [],
            "rule_scale": meta.get("rule_scale")}


def check_replaced_dataset(out, new, overwrite):
    """A rerun into a dataset's folder replaces it where it was prepared from the same folders with the same
    settings (new encodings are read in, as the Makefile's reruns want); from other ones, only with --overwrite: a
    run resumed on it would go on with other training and validation pieces. One line before any work."""
    if overwrite or not (out / "meta.json").exists():
        return
    try:
        old = settings_of(json.loads((out / "meta.json").read_text()))
    except (OSError, ValueError, AttributeError) as e:
        die(f"--output_base_dir {out} holds a dataset whose meta.json cannot be read ({e}): give --overwrite to "
            f"replace it, or another folder")
    now = settings_of(new)
    differ = [k for k, v in now.items() if old[k] is not None and old[k] != v
              and not (k == "given_kinds" and old["given_share"] != now["given_share"])]
    if differ:
        said = lambda v: ", ".join(filter(None, v)) or "none" if isinstance(v, list) else v  # noqa: E731
        shown = "; ".join("another tokenizer" if k == "tokenizer" else f"{k} {said(old[k])} there, {said(now[k])} now"
                          for k in differ[:3])
        die(f"--output_base_dir {out} holds a dataset prepared with other settings ({shown}): give --overwrite to "
            f"replace it (a run trained on it would resume on other data), or another folder")


def check_augmented_path(args):
    """One line and exit where --augmented_data_path would add nothing but copies of the originals, or read its
    variants as originals (the same folder as --main_data_path, or one inside the other), or where an
    --augmented_percentage is given without it."""
    aug, main = args.augmented_data_path, args.main_data_path
    if not aug:
        if "augmented_percentage" in args.given and args.augmented_percentage > 0:
            die(f"--augmented_percentage {args.augmented_percentage} is a share of augment_all.py's variants: give "
                f"their folder too (--augmented_data_path)")
        return
    if within(aug, main) or within(main, aug):
        where = "is" if within(main, aug) and within(aug, main) else "lies inside" if within(aug, main) else "holds"
        die(f"--augmented_data_path {aug} {where} --main_data_path {main}: give the folder augment_all.py wrote its "
            f"variants into, beside the originals")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    configurator.option(parser, "main_data_path", "folder of original .txt encodings", key="text_dir")
    parser.add_argument("--augmented_data_path", help="folder written by augment_all.py (optional)")
    configurator.option(parser, "output_base_dir", "the dataset folder it writes", key="data_dir")
    configurator.option(parser, "tokenizer_paths", "tokenizer JSON", key="tokenizer_path")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset in --output_base_dir prepared from other folders or settings")
    args = configurator.cli(parser, ["val_fraction", "augmented_percentage", "given_share", "given_kinds", "seed",
                                     "rule_styles", "rule_scale"], argv)
    try:
        tok = Tokenizer.load(args.tokenizer_paths)
    except (OSError, ValueError) as e:
        die(e)
    check_rule_styles(args.rule_styles, tok)
    if args.given_share > 0 and not args.given_kinds:
        die(f"--given_share {args.given_share} writes pieces with some of them given: --given_kinds needs one of "
            f"melody, parts, bars")
    if args.rule_scale != "none" and not args.rule_styles:
        die(f"--rule_scale {args.rule_scale} puts each piece's own scale among its rules: it needs --rule_styles "
            f"(e.g. bach,fiddle)")
    check_augmented_path(args)
    tok_bytes = Path(args.tokenizer_paths).read_bytes()
    out = Path(args.output_base_dir)
    if out.exists() and not out.is_dir():
        die(f"--output_base_dir {out} is a file, not a folder")
    check_dataset_folder(out, [args.main_data_path, args.augmented_data_path])
    given = (args.given_share, args.seed, args.given_kinds) if tok.version >= 4 else None
    settings = {  # meta.json's record of what the dataset is made from and with
        # (from the dataset folder: a tree moved whole, or reached by another path, is the same dataset)
        "inputs": [os.path.relpath(Path(p).resolve(), out.resolve()) if p else None
                   for p in (args.main_data_path, args.augmented_data_path)],
        "tokenizer": {"source": str(args.tokenizer_paths), "path": "tokenizer.json",
                      "sha256": hashlib.sha256(tok_bytes).hexdigest()},
        "seed": args.seed, "val_fraction": args.val_fraction, "augmented_percentage": args.augmented_percentage,
        "given_share": args.given_share if given else 0.0, "given_kinds": list(args.given_kinds),
        "rules": dict.fromkeys(args.rule_styles) if args.rule_styles else None,
        "rule_scale": args.rule_scale if args.rule_styles else "none"}
    check_replaced_dataset(out, settings, args.overwrite)
    writable_dir(out.parent, "the folder of --output_base_dir")
    lock(out, "prepare.py")
    for p in clean_stale(out.parent):
        print(f"  cleaned up after a killed run: {p}")
    main_root = Path(args.main_data_path)
    originals = {piece_id(p, main_root): p for _, p in find_files([main_root], {".txt"})}
    if len(originals) < 2:
        die(f"{main_root}: {len(originals)} encodings found; need at least 2 to split train from val")
    val_ids = split(originals, args.seed, args.val_fraction)
    val_set = set(val_ids)
    train_ids = sorted(set(originals) - val_set)

    # Augmented copies of training pieces, drawn in a seeded order until they make up the asked share of the
    # training tokens. A copy has exactly as many tokens as its original, so the originals' counts suffice.
    sizes, rejected = {}, []
    for pid in train_ids:
        try:
            sizes[pid] = len(text_to_tokens(read_text(originals[pid])))
        except ValueError as e:
            rejected.append({"file": str(originals[pid]), "reason": str(e)})
    rejected += [{"file": str(originals[pid]), "reason": "empty file (no tokens)"} for pid, n in sizes.items() if not n]
    sizes = {pid: n for pid, n in sizes.items() if n}
    chosen, aug_tokens, orphans = [], 0, 0
    if args.augmented_data_path and args.augmented_percentage > 0:
        aug_root = Path(args.augmented_data_path)
        copies = [(piece_id(p, aug_root), p) for _, p in find_files([aug_root], {".txt"})]
        orphans = sum(pid not in originals for pid, _ in copies)
        copies = [(pid, p) for pid, p in copies if pid in sizes]  # never a copy of a validation piece
        random.Random(args.seed).shuffle(copies)
        budget = args.augmented_percentage / (100 - args.augmented_percentage) * sum(sizes.values())
        for pid, p in copies:
            if aug_tokens >= budget:
                break
            chosen.append(p)
            aug_tokens += sizes[pid]

    train_files = [originals[pid] for pid in train_ids if pid in sizes] + chosen
    copied = set(chosen)
    random.Random(args.seed + 1).shuffle(train_files)
    # Everything is built in a hidden folder beside the output, then swapped in whole: a failed or killed run
    # leaves the old dataset as it was, and a reader never sees train.bin of one dataset beside meta.json of another.
    tmp, rss = out.parent / temp_name(out.name, "tmp"), [0]
    try:
        tmp.mkdir()
        n_train = write_split(tmp / "train.bin", train_files, tok, rejected, rss, given)
        n_val = write_split(tmp / "val.bin", [originals[pid] for pid in val_ids], tok, rejected, rss)
        if not n_train[1] or not n_val[1]:
            first = f": first {rejected[0]['file']}: {rejected[0]['reason']}" if rejected else ""
            die(f"no valid pieces left for {'train' if not n_train[1] else 'val'} ({len(rejected)} rejected{first}); "
                f"{out} is left as it was")
        rules = write_rules(tmp / "train_rules.npz", np.memmap(tmp / "train.bin", dtype=np.uint16, mode="r"), tok,
                            args.rule_styles, args.rule_scale) if args.rule_styles else None
        meta = {
            "version": META_VERSION, "dtype": "uint16", "vocab_size": tok.vocab_size, **settings,
            "train": {"tokens": n_train[0], "pieces": n_train[1], "augmented_pieces": len(chosen),
                      "augmented_tokens": aug_tokens, "given_pieces": n_train[2],
                      # where train.bin's copies are (its n-th piece, from 0): the rest are the originals
                      "augmented_at": [i for i, p in enumerate(n_train[3]) if p in copied]},
            "val": {"tokens": n_val[0], "pieces": n_val[1]},
            "val_pieces": val_ids, "rejected": rejected,
            # per style: [pieces, tokens where its rules forbid some, tokens where the piece breaks them]
            "rules": rules,  # (in place of settings' list of the styles)
        }
        atomic_write(tmp / "tokenizer.json", tok_bytes)  # the data carries its tokenizer
        write_json(tmp / "meta.json", meta)
        swap_in(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(full := no_room(e, tmp, f"{out} is left as it was"), DiskFull):
            raise full from None
        raise
    print(f"train.bin: {n_train[0]:,} tokens in {n_train[1]} pieces ({len(chosen)} augmented, "
          f"{aug_tokens / max(n_train[0], 1):.0%} of tokens; {n_train[2]} with given material); val.bin: {n_val[0]:,} tokens in {n_val[1]} pieces")
    share = aug_tokens / max(n_train[0], 1)
    if args.augmented_data_path and abs(share * 100 - args.augmented_percentage) > 0.1 * args.augmented_percentage:
        print(f"  note: {share:.0%} of the training tokens are augmented, not the {args.augmented_percentage:g} % "
              f"asked for: " + ("there are too few augmented copies" if share * 100 < args.augmented_percentage else
                               "copies come whole, and a few long pieces overshoot the share"))
    for name, (tokens, *_) in (("train", n_train), ("val", n_val)):
        if tokens <= config.block_size + 1:  # (train.py would refuse it at the default window)
            print(f"  note: {name}.bin's {tokens:,} tokens are too few for train.py's windows of block_size="
                  f"{config.block_size} tokens: " + ("raise --val_fraction, or train" if name == "val" else "train")
                  + f" with --block_size under {tokens - 1}")
    if orphans:
        print(f"  {orphans} augmented files have no original in {main_root} and were left out")
    for r in rejected:
        print(f"  rejected {r['file']}: {r['reason']}")
    print(f"  peak RSS {rss[0] / 2**20:.0f} MiB -> {out}/train.bin, val.bin, meta.json, tokenizer.json")


if __name__ == "__main__":
    batch.main(main)
