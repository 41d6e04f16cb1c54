import os
import time

import pytest

import batch
from batch import Journal, atomic_write, parallel_map


def spin(seconds):
    """Work (CPU time) for `seconds` of this process's own CPU time."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def slow_or_crash(x):
    if x == "hang":
        spin(60)
    if x == "crash":
        os._exit(3)
    if x == "raise":
        raise ValueError("bad item")
    return x.upper()


def test_parallel_map_survives_hangs_crashes_and_errors():
    items = ["a", "hang", "b", "crash", "raise", "c"]
    results = {item: (ok, res) for item, ok, res in parallel_map(slow_or_crash, items, 2, timeout=2)}
    assert results["a"] == (True, "A") and results["c"] == (True, "C")
    assert results["hang"] == (False, "timed out after 2 s of CPU time")
    assert results["crash"] == (False, "worker crashed (exit code 3)")
    assert results["raise"] == (False, "ValueError: bad item")


def work(x):
    spin(x)
    return x


def test_a_timeout_can_depend_on_the_item():
    """encode_all gives a big file more time: 1 s of work passes with a 3 s limit and times out with a 0.3 s one."""
    results = {item: ok for item, ok, _ in parallel_map(work, [1.0, 1.1], 2, timeout=lambda x: 3 if x == 1.0 else 0.3)}
    assert results == {1.0: True, 1.1: False}


def wait_then_work(x):
    time.sleep(x)  # a busy machine: the worker waits for a core most of this wall time
    spin(0.1)
    return x


def test_the_limit_is_cpu_time_so_a_busy_machine_times_nothing_out():
    """Wall time a worker spends waiting does not count (25 of 80 files timed out on a busy machine when it did), up
    to WALL_SLACK times the limit: a worker that only waits is stopped then."""
    results = {x: (ok, why) for x, ok, why in parallel_map(wait_then_work, [1.5, 5.0], 2, timeout=0.4)}
    assert results[1.5] == (True, 1.5)
    assert results[5.0][0] is False and results[5.0][1].startswith("timed out after 4 s, most of it waiting")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write(tmp_path / "a" / "x.txt", "hello")
    assert (tmp_path / "a" / "x.txt").read_text() == "hello"
    assert os.listdir(tmp_path / "a") == ["x.txt"]


def test_an_exclusive_write_never_replaces_a_file(tmp_path, monkeypatch):
    atomic_write(tmp_path / "x.txt", "mine")
    with pytest.raises(FileExistsError):
        atomic_write(tmp_path / "x.txt", "theirs", exclusive=True)
    assert (tmp_path / "x.txt").read_text() == "mine" and os.listdir(tmp_path) == ["x.txt"]
    atomic_write(tmp_path / "y.txt", "new", exclusive=True)
    assert (tmp_path / "y.txt").read_text() == "new"

    def no_links(a, b):  # a file system without hard links: the name is taken with O_EXCL instead
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(FileExistsError):
        atomic_write(tmp_path / "x.txt", "theirs", exclusive=True)
    atomic_write(tmp_path / "z.txt", "new", exclusive=True)
    assert (tmp_path / "x.txt").read_text() == "mine" and (tmp_path / "z.txt").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["x.txt", "y.txt", "z.txt"]


def test_journal_ignores_a_line_cut_by_a_kill(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.add("a", 1)
    j.add("b", [2])
    with open(tmp_path / "j.jsonl", "a") as f:
        f.write('{"key": "c", "val')
    assert Journal(tmp_path / "j.jsonl").done == {"a": 1, "b": [2]}


def test_ctrl_c_in_a_script_is_one_line_and_leaves_no_half_written_file(tmp_path, capsys):
    def script():
        atomic_write(tmp_path / "done.txt", "whole")
        with batch.atomic_open(tmp_path / "half.txt") as f:
            f.write(b"half")
            raise KeyboardInterrupt  # Ctrl-C in the middle of a write
    with pytest.raises(SystemExit) as stop:
        batch.main(script)
    assert stop.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted: every file written so far is whole, none is left half-written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.txt"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, a folder no one can write in")
def test_a_folder_nothing_can_be_written_in_is_refused_before_the_work(tmp_path, capsys):
    # os.access says yes to root in /proc; a file made there says no (the check must not pass and the write fail later)
    for create in (True, False):
        with pytest.raises(SystemExit) as stop:
            batch.writable_dir("/proc/no-such-folder", "--output_dir", create=create)
        assert stop.value.code == 2
        assert capsys.readouterr().err.startswith("error: --output_dir /proc/no-such-folder cannot be created (")
    assert batch.writable_dir(tmp_path / "new", create=False) == tmp_path / "new"
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing behind, and no folder is made without `create`


def test_a_write_the_file_system_refuses_is_one_line(tmp_path, capsys):
    def script():
        atomic_write(tmp_path / "a-file" / "sample.mid", b"MThd")  # a file where its folder should be
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as stop:
        batch.main(script)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'a-file'}: File exists"
    with pytest.raises(ValueError):  # not a file system's refusal: a bug, with its traceback
        batch.main(lambda: int("x"))
