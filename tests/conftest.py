"""Shared fixtures: MIDI files built byte by byte, so tests need no data beyond music21's bundled corpus."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def vlq(n):
    """A MIDI variable-length quantity."""
    out = [n & 0x7F]
    while n := n >> 7:
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


def on(pitch, vel=90, ch=0, delta=0):
    return vlq(delta) + bytes([0x90 | ch, pitch, vel])


def off(pitch, ch=0, delta=0, zero_velocity_on=False):
    """A note-off, or the common note-on with velocity 0."""
    return vlq(delta) + bytes([(0x90 if zero_velocity_on else 0x80) | ch, pitch, 0 if zero_velocity_on else 64])


def track(*events):
    data = b"".join(events) + vlq(0) + b"\xff\x2f\x00"
    return b"MTrk" + len(data).to_bytes(4, "big") + data


def midi_file(*tracks, fmt=1, division=480):
    header = b"MThd" + (6).to_bytes(4, "big") + fmt.to_bytes(2, "big") + len(tracks).to_bytes(2, "big")
    return header + division.to_bytes(2, "big") + b"".join(tracks)


def scale(n=12, start=60, ch=0, step=240):
    """A track of `n` eighth notes going up (480 ticks per quarter)."""
    return track(*[on(start + i, 80, ch) + off(start + i, ch, delta=step) for i in range(n)])
