"""Per-file batch work, written once: find inputs, write outputs atomically, map over files in parallel with a
per-file timeout (a hung or crashed worker costs one file, not the batch), keep a resumable journal."""
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from multiprocessing.connection import wait
from pathlib import Path

from tqdm import tqdm

_UMASK = os.umask(0)
os.umask(_UMASK)


def die(message):
    """One clear line on stderr and a non-zero exit."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def reason(e):
    """An exception as one short line: its message's first line, or its type when it has none."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def find_files(dirs, suffixes, problems=None):
    """Sorted (dir, path) for every file under `dirs` whose suffix (any case) is in `suffixes`. A folder that
    cannot be listed and a link that leads nowhere are appended to `problems` as (path, reason), or, without a
    list, reported on stderr."""
    found, seen = [], []
    def unlisted(e):
        seen.append((e.filename, f"cannot list this folder ({e.strerror})"))
    for d in map(Path, dirs):
        if not d.is_dir():
            die(f"{d}: no such folder")
        here = []
        for root, _, files in os.walk(d, onerror=unlisted, followlinks=True):
            for p in (Path(root, name) for name in files if Path(name).suffix.lower() in suffixes):
                if p.is_file():
                    here.append((d, p))
                else:
                    seen.append((str(p), "a link to a file that does not exist" if p.is_symlink() else "not a file"))
        found += sorted(here)
    if problems is None:
        for path, why in seen:
            print(f"warning: {path}: {why}; skipped", file=sys.stderr)
    else:
        problems += seen
    return found


def read_text(path):
    """A text file's contents, or ValueError naming why it cannot be read as UTF-8 text."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})") from None
    except OSError as e:
        raise ValueError(f"cannot read it ({e.strerror})") from None


def writable_dir(path, what="output folder"):
    """Make sure `path` is (or can become) a folder we can write into; else one clear line and exit."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        die(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        die(f"{what} {path} cannot be created ({e.strerror})")
    if not os.access(path, os.W_OK | os.X_OK):
        die(f"{what} {path} is not writable")
    return path


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return True


def temp_name(name, suffix):
    """The hidden name of a temp file or folder for `name`, owned by this process: .name.pidN[.suffix]."""
    return f".{name}.pid{os.getpid()}.{suffix}"


STALE = re.compile(r"\.(?P<name>.+)\.pid(?P<pid>\d+)\.(?:[^.]*\.)?(?P<kind>tmp|old)")


def clean_stale(folder):
    """Remove what a killed run left in `folder`: hidden temp files and folders (.name.pidN.*tmp) of processes
    that no longer run. A dataset folder set aside for a swap (.name.pidN.old) goes back in place if the swap never
    finished; else it is removed. Returns the paths removed or restored."""
    folder, done = Path(folder), []
    if not folder.is_dir():
        return done
    for p in sorted(folder.glob(".*")):
        if not (m := STALE.fullmatch(p.name)) or _pid_alive(int(m["pid"])):
            continue
        target = folder / m["name"]
        if m["kind"] == "old" and not target.exists():
            os.replace(p, target)
        else:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        done.append(p)
    return done


def swap_in(new, out):
    """Replace the folder `out` by the folder `new` as a whole: the old one is set aside, the new one renamed into
    place, the old one removed. A kill between the two renames leaves the old one set aside, and the next run
    (batch.clean_stale) puts it back."""
    old = out.parent / temp_name(out.name, "old")
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_open(path):
    """A binary file that appears at `path` only when the block ends without error (temp file + os.replace),
    so a reader, or a kill, never sees it half written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_name(path.name, ""), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; give it the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path, data):
    with atomic_open(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def write_json(path, obj):
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _orphan_watch(parent):
    """Exit as soon as the parent is gone (killed with -9, say): a worker must not outlive its batch."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker(fn, conn):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    threading.Thread(target=_orphan_watch, args=(os.getppid(),), daemon=True).start()
    while (job := conn.recv()) is not None:
        i, item = job
        try:
            conn.send((i, True, fn(item)))
        except Exception as e:  # reported per file by parallel_map
            conn.send((i, False, f"{type(e).__name__}: {e}"))


def parallel_map(fn, items, num_processes=0, timeout=60.0, desc=None):
    """Yield (item, ok, result or reason) for every item, in completion order.

    Each worker holds one item at a time, so a worker that hangs past `timeout` seconds (a number, or a function
    of the item) is killed and a worker
    that dies (segfault, out of memory) is noticed; either way its item is reported and a fresh worker goes on.
    """
    items = list(items)
    todo = list(enumerate(items))[::-1]
    busy = {}  # connection -> (process, index, start time)
    idle = []
    n = min(num_processes or os.cpu_count() or 1, len(items))

    def spawn():
        mine, theirs = mp.Pipe()
        p = mp.Process(target=_worker, args=(fn, theirs), daemon=True)
        p.start()
        theirs.close()
        idle.append((mine, p))

    limit = timeout if callable(timeout) else lambda item: timeout

    def give(conn, p):
        i, item = todo.pop()
        conn.send((i, item))
        busy[conn] = (p, i, time.monotonic() + limit(item))  # its deadline

    def retire(conn):
        p, i, _ = busy.pop(conn)
        p.kill()
        p.join()
        conn.close()
        spawn()
        return i

    for _ in range(n):
        spawn()
    try:
        with tqdm(total=len(items), desc=desc, unit="file", disable=None) as bar:
            while todo or busy:
                while todo and idle:
                    give(*idle.pop())
                now = time.monotonic()
                deadline = min(end for _, _, end in busy.values())
                ready = wait(list(busy) + [p.sentinel for p, _, _ in busy.values()], max(0.0, deadline - now))
                for conn in [c for c in busy if c in ready]:
                    try:
                        i, ok, result = conn.recv()
                    except EOFError:  # the worker died mid-item
                        p = busy[conn][0]
                        p.join()
                        code = p.exitcode
                        yield items[retire(conn)], False, f"worker crashed (exit code {code})"
                    else:
                        p = busy.pop(conn)[0]
                        idle.append((conn, p))
                        yield items[i], ok, result
                    bar.update()
                for conn, (p, i, end) in list(busy.items()):
                    if not p.is_alive() and conn not in ready:
                        yield items[retire(conn)], False, f"worker crashed (exit code {p.exitcode})"
                        bar.update()
                    elif time.monotonic() > end:
                        yield items[retire(conn)], False, f"timed out after {limit(items[i]):g} s"
                        bar.update()
    finally:  # on the way out (done, Ctrl-C, an error in the caller) no worker is left behind
        for p in [p for _, p in idle] + [p for p, _, _ in busy.values()]:
            p.kill()
            p.join()


def read_jsonl(path, key):
    """(record, line) for each line of an append-only JSON-lines file whose records all hold `key`. A last line cut
    short by a kill is dropped; any other bad line is one clear error that names it."""
    path = Path(path)
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
            row[key]
        except (json.JSONDecodeError, KeyError, TypeError):
            if i == len(lines) - 1:  # cut short while it was appended
                break
            die(f"{path}: line {i + 1} is not a record (corrupt file?); fix or remove that line")
        rows.append((row, line))
    return rows


class Journal:
    """An append-only JSON-lines record of finished items, so a killed batch resumes where it stopped."""

    def __init__(self, path):
        self.path = Path(path)
        self.done = {row["key"]: row["value"] for row, _ in read_jsonl(self.path, "key")}  # a cut item is redone

    def add(self, key, value):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"key": key, "value": value}) + "\n")
        self.done[key] = value
