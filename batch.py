"""Per-file batch work, written once: find inputs, write outputs atomically, map over files in parallel with a
per-file timeout (a hung or crashed worker costs one file, not the batch), keep a resumable journal."""
import atexit
import errno
import io
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

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

_UMASK = os.umask(0)
os.umask(_UMASK)


def die(message):
    """One clear line on stderr and a non-zero exit."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colours and the like, which some libraries put in messages


def reason(e):
    """An exception as one short line: its message's first line, or its type when it has none."""
    text = TERMINAL_CODES.sub("", str(e)).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


class DiskFull(OSError):
    """No room left to write a file: the script stops with one line (batch.main) instead of a traceback."""


NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def no_room(e, path, kept="nothing older was replaced"):
    """`e` as a DiskFull naming what was being written, if it says the disk (or quota) is full; else `e`."""
    if isinstance(e, OSError) and e.errno in NO_ROOM:
        return DiskFull(e.errno, f"the disk is full ({e.strerror}) while writing {path}; {kept}")
    return e


def why_not_written(e):
    """Why a write failed, in a few words: the full disk said plainly, else the error's own line."""
    if isinstance(e, DiskFull) or getattr(e, "errno", None) in NO_ROOM:
        return "the disk is full"
    return e.strerror if isinstance(e, OSError) and e.strerror else reason(e)


def main(script_main):
    """Run a script's main(): a full disk ends it with one line, wherever the write was, and so do a file the file
    system refuses and Ctrl-C (each file is written whole or not at all: atomic_open)."""
    try:
        script_main()
    except DiskFull as e:
        die(e.strerror)
    except OSError as e:  # a file that cannot be written or read where the script found it could (it changed meanwhile)
        if e.filename is None:
            raise
        die(f"{e.filename}: {e.strerror or reason(e)}")
    except KeyboardInterrupt:
        print("\ninterrupted: every file written so far is whole, none is left half-written", file=sys.stderr)
        sys.exit(130)


def find_files(dirs, suffixes, problems=None):
    """Sorted (dir, path) for every file under `dirs` whose suffix (any case) is in `suffixes`. Links are followed,
    but each real folder and file is taken once: a link back up to a folder being walked (a loop) or to one already
    walked, and a second link to a file already found, are skipped and reported. A folder that cannot be listed and
    a link that leads nowhere are reported too: appended to `problems` as (path, reason), or, without a list, on
    stderr."""
    found, seen, walked, files_seen = [], [], set(), {}
    def unlisted(e):
        seen.append((e.filename, f"cannot list this folder ({e.strerror})"))
    for d in map(Path, dirs):
        if not d.is_dir():
            die(f"{d}: no such folder")
        if (real := os.path.realpath(d)) in walked:
            seen.append((str(d), "a folder already walked (given twice, or inside another one given)"))
            continue
        walked.add(real)
        here = []
        for root, subdirs, files in os.walk(d, onerror=unlisted, followlinks=True):
            real_root = os.path.realpath(root)
            # a fixed order, real folders before links: the same path is the one taken on every run
            subdirs.sort(key=lambda name: (os.path.islink(Path(root, name)), name))
            for name in list(subdirs):
                real = os.path.realpath(Path(root, name))
                if real == real_root or real_root.startswith(real.rstrip(os.sep) + os.sep):
                    why = f"a link back up to {real} (a loop)"
                elif real in walked:
                    why = (f"a link to {real}, which is walked already" if os.path.islink(Path(root, name)) else
                           "walked already, through a link to it")
                else:
                    walked.add(real)
                    continue
                subdirs.remove(name)
                seen.append((str(Path(root, name)), f"{why}, not followed"))
            for p in (Path(root, name) for name in sorted(files) if Path(name).suffix.lower() in suffixes):
                if not p.is_file():
                    seen.append((str(p), "a link to a file that does not exist" if p.is_symlink() else "not a file"))
                elif (real := os.path.realpath(p)) in files_seen:
                    seen.append((str(p), f"the same file as {files_seen[real]} (a link)"))
                else:
                    files_seen[real] = p
                    here.append((d, p))
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


def within(path, folder):
    """Whether `path` is `folder` or lies inside it (links and ".." resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def writable_dir(path, what="output folder", create=True):
    """Make sure `path` is (or can become) a folder we can write into; else one clear line and exit. Without
    `create`, a missing folder is only checked (a file can be made in its nearest existing parent): a refused run
    then leaves no empty folder behind, and the first file written there makes it (atomic_open)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        die(f"{what} {path} is a file, not a folder")
    if not create and not path.exists():
        parent = next(p for p in path.absolute().parents if p.exists())
        if not parent.is_dir():
            die(f"{what} {path} cannot be created ({parent} is a file)")
        if why := cannot_write_in(parent):
            die(f"{what} {path} cannot be created (nothing can be written in {parent}: {why})")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        die(f"{what} {path} cannot be created ({e.strerror})")
    if why := cannot_write_in(path):
        die(f"{what} {path} is not writable ({why})")
    return path


def cannot_write_in(folder):
    """Why no file can be made in `folder` (its error's words), or None: a file is made there and removed, as
    os.access answers yes to root on any folder not mounted read-only (and /proc, say, refuses root too)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=temp_name("write-probe", ""), suffix=".tmp")  # (clean_stale's)
    except OSError as e:
        return e.strerror or reason(e)
    os.close(fd)
    os.unlink(probe)
    return None


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


def clean_stale(folder, name=None):
    """Remove what a killed run left in `folder` (of `name` only, if given): hidden temp files and folders
    (.name.pidN.*tmp) of processes that no longer run. A dataset folder set aside for a swap (.name.pidN.old) goes
    back in place if the swap never finished; else it is removed. Returns the paths removed or restored."""
    folder, done = Path(folder), []
    if not folder.is_dir():
        return done
    for p in sorted(folder.glob(".*")):
        if not (m := STALE.fullmatch(p.name)) or name not in (None, m["name"]) or _pid_alive(int(m["pid"])):
            continue
        target = folder / m["name"]
        if m["kind"] == "old" and not target.exists():
            os.replace(p, target)
        else:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        done.append(p)
    return done


def recover(folder):
    """Put `folder` back if a run that was swapping it (swap_in) was killed between its two renames: readers call
    this, so the folder is never missing for them longer than that run lived."""
    folder = Path(folder)
    if not folder.exists() and (old := [p for p in clean_stale(folder.parent, folder.name) if p.name.endswith(".old")]):
        print(f"note: {folder} was put back from {old[0].name}, left by a killed run", file=sys.stderr)
    return folder


_LOCKS = []  # (fd, path) of the lock files this process holds, open until it exits


def lock(folder, what):
    """Hold `folder` for this process until it exits, through a hidden .NAME.lock beside it that holds our PID (a
    lock inside the folder would go with it when prepare.py swaps a dataset folder whole). If another live process
    holds it, one clear line naming that process. The lock goes with its holder, even after kill -9, and a holder
    that exits (not killed) removes the file, so that no .NAME.lock is left in a user's folder for good."""
    folder, real = Path(folder), Path(folder).resolve()  # resolved: "." and "runs/x/.." name their folder too
    real.parent.mkdir(parents=True, exist_ok=True)
    path = real.parent / f".{real.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fcntl:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            die(f"{folder} is in use by another {what} (PID {holder}): wait for it to finish, or stop it first")
        if _same_file(fd, path):
            break
        os.close(fd)  # its holder removed it as it exited, after we opened it: lock the file that is there now
    try:  # the PID is for the message of a second process; a full disk may leave it out
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass
    if not _LOCKS:
        atexit.register(_unlock_all, os.getpid())
    _LOCKS.append((fd, path))
    return folder


def _same_file(fd, path):
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _unlock_all(pid):
    """At a clean exit: remove each lock file while still holding it (a process waiting on it then sees it gone and
    takes a fresh one), then let it go."""
    if os.getpid() != pid:  # a forked child does not own its parent's locks
        return
    while _LOCKS:
        fd, path = _LOCKS.pop()
        try:
            if _same_file(fd, path):
                path.unlink()
        except OSError:  # Windows keeps an open file; a read-only folder keeps it: it is only a name
            pass
        os.close(fd)


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
def atomic_open(path, exclusive=False):
    """A binary file that appears at `path` only when the block ends without error (temp file + os.replace),
    so a reader, or a kill, never sees it half written. A full disk raises DiskFull, naming `path`. `exclusive`:
    never replace a file there, even one another process makes meanwhile (FileExistsError, nothing written)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_name(path.name, ""), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; give it the permissions open() would
        if exclusive:
            publish_new(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(full := no_room(e, path), DiskFull):
            raise full from None
        raise


def publish_new(tmp, path):
    """Rename the whole file `tmp` to `path` unless a file is there (FileExistsError, `tmp` kept): a hard link, which
    the kernel refuses over an existing name; where the file system has none, the name is taken first (O_EXCL)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # (no hard links here: FAT, some network shares)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write(path, data, exclusive=False):
    with atomic_open(path, exclusive) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def claim_stem(out_dir, name, data, ext=".txt", beside=(".mid",), overwrite=False):
    """Where a sample whose `ext` file holds `data` (its MIDI file) goes, that file written there: out_dir/name, unless
    another sample is there (another command with the same seed, whose files a user may keep: its `ext` or `beside`
    files), then name-2, name-3, ..., the first free or holding this one. A name is taken by writing the file without
    replacing (atomic_write exclusive), so two commands at once never take the same one. `overwrite`: name, its
    file replaced."""
    data = data.encode() if isinstance(data, str) else data
    if overwrite:
        atomic_write(out_dir / (name + ext), data)
        return out_dir / name

    def holds_this(path):
        try:
            return path.read_bytes() == data
        except OSError:
            return False
    for k in range(1, 10_000):
        stem = out_dir / (name if k == 1 else f"{name}-{k}")
        path, *others = (stem.parent / (stem.name + e) for e in (ext, *beside))
        if holds_this(path):
            return stem
        if not (path.exists() or any(p.exists() for p in others)):
            try:
                atomic_write(path, data, exclusive=True)
                return stem
            except FileExistsError:  # taken by another command this instant
                if holds_this(path):
                    return stem
    die(f"{out_dir}: 10,000 samples named {name}-*: give another --seed or --output_dir")


def figure_png(fig):
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return png.getvalue()


def save_figure(fig, path):
    """A matplotlib figure as a PNG file, written atomically, and closed."""
    atomic_write(path, figure_png(fig))


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
        except DiskFull as e:  # not this file's fault: parallel_map stops the batch
            conn.send((i, None, e.strerror))
        except Exception as e:  # reported per file by parallel_map
            conn.send((i, False, f"{type(e).__name__}: {e}"))


# A worker that waits (on a pipe, a lock, a network file) uses no CPU time: past this many times its CPU limit in
# wall time it is stopped all the same.
WALL_SLACK = 10


def cpu_seconds(process):
    """The CPU time (user + system) a process has used so far; 0 where it cannot be read (gone already)."""
    import psutil
    try:
        t = psutil.Process(process.pid).cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system


def parallel_map(fn, items, num_processes=0, timeout=60.0, desc=None):
    """Yield (item, ok, result or reason) for every item, in completion order.

    Each worker holds one item at a time, so a worker that spends more than `timeout` seconds of CPU time on it (a
    number, or a function of the item) is killed and a worker that dies (segfault, out of memory) is noticed; either
    way its item is reported and a fresh worker goes on. CPU time, not wall time: on a machine busy with other work a
    file gets the computing it needs (a worker that only waits is stopped after WALL_SLACK times its limit).
    """
    items = list(items)
    todo = list(enumerate(items))[::-1]
    busy = {}  # connection -> (process, index, CPU seconds it had used before this item, wall deadline)
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
        busy[conn] = (p, i, cpu_seconds(p), time.monotonic() + WALL_SLACK * limit(item))

    def retire(conn):
        p, i, _, _ = busy.pop(conn)
        p.kill()
        p.join()
        conn.close()
        spawn()
        return i

    def over(p, i, cpu_before, wall_end):
        """Why the worker's item has run out of time, or None."""
        if (used := cpu_seconds(p) - cpu_before) > limit(items[i]):
            return f"timed out after {limit(items[i]):g} s of CPU time"
        if time.monotonic() > wall_end:
            return f"timed out after {WALL_SLACK * limit(items[i]):g} s, most of it waiting ({used:.1f} s of CPU time)"
        return None

    for _ in range(n):
        spawn()
    try:
        with tqdm(total=len(items), desc=desc, unit="file", disable=None) as bar:
            while todo or busy:
                while todo and idle:
                    give(*idle.pop())
                # CPU time grows no faster than wall time (one thread a worker): look again when the nearest limit
                # could be reached, but at least every 2 s
                left = min(limit(items[i]) - (cpu_seconds(p) - cpu) for p, i, cpu, _ in busy.values())
                ready = wait(list(busy) + [p.sentinel for p, _, _, _ in busy.values()], min(2.0, max(0.05, left)))
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
                        if ok is None:
                            raise DiskFull(errno.ENOSPC, result)
                        yield items[i], ok, result
                    bar.update()
                for conn, (p, i, cpu, end) in list(busy.items()):
                    if not p.is_alive() and conn not in ready:
                        yield items[retire(conn)], False, f"worker crashed (exit code {p.exitcode})"
                        bar.update()
                    elif why := over(p, i, cpu, end):
                        yield items[retire(conn)], False, why
                        bar.update()
    finally:  # on the way out (done, Ctrl-C, an error in the caller) no worker is left behind
        for p in [p for _, p in idle] + [p for p, _, _, _ in busy.values()]:
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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps({"key": key, "value": value}) + "\n")
        except OSError as e:
            raise no_room(e, self.path, "what is done is kept, and a rerun resumes") from None
        self.done[key] = value
