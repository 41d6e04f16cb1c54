"""Per-file batch work, written once: find inputs, write outputs atomically, map over files in parallel with a
per-file timeout (a hung or crashed worker costs one file, not the batch), keep a resumable journal."""
import json
import multiprocessing as mp
import os
import sys
import tempfile
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


def find_files(dirs, suffixes):
    """Sorted (dir, path) for every file under `dirs` whose suffix (any case) is in `suffixes`."""
    found = []
    for d in map(Path, dirs):
        if not d.is_dir():
            die(f"{d}: no such folder")
        found += [(d, p) for p in sorted(d.rglob("*")) if p.suffix.lower() in suffixes and p.is_file()]
    return found


@contextmanager
def atomic_open(path):
    """A binary file that appears at `path` only when the block ends without error (temp file + os.replace),
    so a reader, or a kill, never sees it half written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def _worker(fn, conn):
    while (job := conn.recv()) is not None:
        i, item = job
        try:
            conn.send((i, True, fn(item)))
        except Exception as e:  # reported per file by parallel_map
            conn.send((i, False, f"{type(e).__name__}: {e}"))


def parallel_map(fn, items, num_processes=0, timeout=60.0, desc=None):
    """Yield (item, ok, result or reason) for every item, in completion order.

    Each worker holds one item at a time, so a worker that hangs past `timeout` seconds is killed and a worker
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

    def give(conn, p):
        i, item = todo.pop()
        conn.send((i, item))
        busy[conn] = (p, i, time.monotonic())

    def retire(conn):
        p, i, _ = busy.pop(conn)
        p.kill()
        p.join()
        conn.close()
        spawn()
        return i

    for _ in range(n):
        spawn()
    with tqdm(total=len(items), desc=desc, unit="file", disable=None) as bar:
        while todo or busy:
            while todo and idle:
                give(*idle.pop())
            now = time.monotonic()
            deadline = min(start + timeout for _, _, start in busy.values())
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
            for conn, (p, i, start) in list(busy.items()):
                if not p.is_alive() and conn not in ready:
                    yield items[retire(conn)], False, f"worker crashed (exit code {p.exitcode})"
                    bar.update()
                elif time.monotonic() - start > timeout:
                    yield items[retire(conn)], False, f"timed out after {timeout:g} s"
                    bar.update()
    for conn, p in idle:
        conn.send(None)
        p.join(timeout=5)
        p.kill()


class Journal:
    """An append-only JSON-lines record of finished items, so a killed batch resumes where it stopped."""

    def __init__(self, path):
        self.path = Path(path)
        self.done = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill: that item is simply redone
                    continue
                self.done[entry["key"]] = entry["value"]

    def add(self, key, value):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"key": key, "value": value}) + "\n")
        self.done[key] = value
