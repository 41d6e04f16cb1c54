"""Remove the empty bars before the first note of every encoding, in place.

python first_silence_cleaner.py --dirs data/text [--dry-run]
"""
import argparse

import batch
from batch import atomic_write, die, find_files, read_text
from configurator import one_line_errors
from encoding_decoding import FirstEdition, check_edition, strip_leading_silence, text_to_tokens, tokens_to_text


def main(argv=None):
    parser = one_line_errors(argparse.ArgumentParser(description=__doc__,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--dirs", nargs="+", required=True, help="folders of .txt encodings (searched recursively)")
    parser.add_argument("--dry-run", action="store_true", help="only count the files that would change")
    args = parser.parse_args(argv)
    files = find_files(args.dirs, {".txt"})
    changed, unreadable = 0, []
    for _, path in files:
        try:
            tokens = text_to_tokens(read_text(path))
        except ValueError as e:
            unreadable.append(f"{path}: {e}")
            continue
        try:
            check_edition(tokens, path)
        except FirstEdition as e:  # a folder of them: one line
            die(e)
        if (clean := strip_leading_silence(tokens)) != tokens:
            changed += 1
            if not args.dry_run:
                atomic_write(path, tokens_to_text(clean))
    print(f"{changed} of {len(files)} files {'would change' if args.dry_run else 'changed'}"
          + (f"; {len(unreadable)} could not be read and were left as they are:" if unreadable else ""))
    for line in unreadable:
        print(f"  {line}")


if __name__ == "__main__":
    batch.main(main)
