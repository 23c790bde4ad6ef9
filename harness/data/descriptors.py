"""Face descriptors from the face ResNet port (``descriptor_engine`` other than dlib).

dlib computes a descriptor a face at a time, about 100 ms each on these cores and never
on a GPU. The port splits the work where it parallelises: every core decodes, detects
and aligns faces into 150×150 chips (a memory-mapped file beside the entry being built),
then one backend worker runs the network over the chips in batches with every core (or
the GPU its engine sees), and the descriptors go into the entry's rows. Which engine
computed an entry is part of its preprocessing, so of its fingerprint: an entry built by
dlib is never taken for one built by the port, or the other way round.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from harness.data.cache import SKIPPED, UNALIGNED
from harness.data.images import ImageError, Preprocessing, aligned_chip

__all__ = ["chip_into", "describe_chips", "CHIPS_FILE"]

CHIPS_FILE = "chips.npy"


def chip_into(chips_file: str, start: int, paths: list[str], prep_json: str) -> list[tuple[int, str, str]]:
    """Decode and align one chunk of images into the chips file -> (row, kind, reason) of
    every skip or note (a pool worker's job, as cache._decode_into is for pixels)."""
    from harness.data.faces import descriptor_chip

    del prep_json   # the chip is the same whatever else the preprocessing says
    chips = np.load(chips_file, mmap_mode="r+")
    events = []
    for offset, path in enumerate(paths):
        row = start + offset
        try:
            chip, note = aligned_chip(path)
            chips[row] = descriptor_chip(chip)
            if note:
                events.append((row, UNALIGNED, note))
        except ImageError as err:
            events.append((row, SKIPPED, str(err)))
        except Exception as err:   # one bad item never takes the build down
            events.append((row, SKIPPED, f"cannot process: {type(err).__name__}: {err}"))
    del chips
    return events


def describe_chips(chips_file: Path, out_file: Path, prep: Preprocessing, progress: bool = False) -> None:
    """The engine's descriptors of every chip, written to ``out_file`` by a backend worker
    that dies with this process."""
    from harness.processes import die_with_parent, worker_command, worker_env

    if progress:
        count = len(np.load(chips_file, mmap_mode="r"))
        what = {"embedding": "face descriptors", "pooled": "pooled face features"}.get(
            prep.descriptor_features, f"face ResNet activations at {prep.descriptor_features}")
        print(f"computing {count} {what} with the face ResNet on {prep.descriptor_engine}",
              file=sys.stderr, flush=True)
    command = worker_command("describe", prep.descriptor_engine, chips_file, out_file,
                             "--features", prep.descriptor_features, *(["--flip"] if prep.embedding_flip else []))
    result = subprocess.run(command, capture_output=True, text=True, env=worker_env(), preexec_fn=die_with_parent)
    if result.returncode or not Path(out_file).is_file():
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"computing face descriptors with {prep.descriptor_engine} failed: {last[0]}")
