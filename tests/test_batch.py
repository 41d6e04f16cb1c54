import os
import time

from batch import Journal, atomic_write, parallel_map


def slow_or_crash(x):
    if x == "hang":
        time.sleep(60)
    if x == "crash":
        os._exit(3)
    if x == "raise":
        raise ValueError("bad item")
    return x.upper()


def test_parallel_map_survives_hangs_crashes_and_errors():
    items = ["a", "hang", "b", "crash", "raise", "c"]
    results = {item: (ok, res) for item, ok, res in parallel_map(slow_or_crash, items, 2, timeout=2)}
    assert results["a"] == (True, "A") and results["c"] == (True, "C")
    assert results["hang"] == (False, "timed out after 2 s")
    assert results["crash"] == (False, "worker crashed (exit code 3)")
    assert results["raise"] == (False, "ValueError: bad item")


def nap(x):
    time.sleep(x)
    return x


def test_a_timeout_can_depend_on_the_item():
    """encode_all gives a big file more time: 1.5 s of work passes with a 3 s limit and times out with a 0.5 s one."""
    results = {item: ok for item, ok, _ in parallel_map(nap, [1.5, 1.6], 2, timeout=lambda x: 3 if x == 1.5 else 0.5)}
    assert results == {1.5: True, 1.6: False}


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write(tmp_path / "a" / "x.txt", "hello")
    assert (tmp_path / "a" / "x.txt").read_text() == "hello"
    assert os.listdir(tmp_path / "a") == ["x.txt"]


def test_journal_ignores_a_line_cut_by_a_kill(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.add("a", 1)
    j.add("b", [2])
    with open(tmp_path / "j.jsonl", "a") as f:
        f.write('{"key": "c", "val')
    assert Journal(tmp_path / "j.jsonl").done == {"a": 1, "b": [2]}
