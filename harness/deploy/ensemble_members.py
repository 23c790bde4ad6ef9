"""An ensemble round as a predictor: each member in a process of its own, answers kept in step.

TFLearn and Keras cannot share a process, so every member runs in one, fed face inputs
computed once per preprocessing here. Each request carries an id and every answer names
the id it answers: a reply left over from a request that failed elsewhere is drained,
never averaged into a later one. A member whose process died is started again and asked
again; one that cannot be started makes :meth:`EnsemblePredictor.health` (and the
server's ``/healthz``) report it.
"""
from __future__ import annotations

import contextlib
import itertools
import multiprocessing
from pathlib import Path

import numpy as np

from harness.deploy.predictors import FrameworkPredictor, _check_tta, _finished_run, model_batches, stored_gate
from harness.runs.ensemble import member_dirs
from harness.runs.trial import read_config

__all__ = ["EnsemblePredictor"]

# A member process that has not answered in this long is taken for dead.
REPLY_TIMEOUT_S = 600


class MemberError(ValueError):
    """A member could not answer; says which member (by its place and trial) and why."""


class Member:
    """One member's process and its pipe."""

    def __init__(self, index: int, run_dir: Path):
        self.index, self.run_dir = index, run_dir
        self.label = f"member {index} ({run_dir.name})"
        self.process = self.connection = None
        self.problem: str | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.process = context.Process(target=_serve_member, args=(str(self.run_dir), child), daemon=True)
        self.process.start()
        child.close()
        self.connection = parent
        status, _, detail = self.receive()
        self.problem = None if status == "ready" else f"{self.label}: {detail}"
        if self.problem:
            self.stop()
            raise MemberError(self.problem)

    def send(self, request_id: int, batches) -> None:
        self.connection.send((request_id, batches))

    def receive(self) -> tuple[str, int | None, object]:
        """(status, request id, detail); a dead process is ("dead", None, why)."""
        try:
            if not self.connection.poll(REPLY_TIMEOUT_S):
                return "dead", None, f"no answer in {REPLY_TIMEOUT_S} s"
            status, request_id, detail = self.connection.recv()
            return status, request_id, detail
        except (EOFError, OSError):
            return "dead", None, "its process ended unexpectedly"

    def answer(self, request_id: int) -> tuple[str, object]:
        """This request's answer, draining any older one still in the pipe."""
        while True:
            status, answered, detail = self.receive()
            if status == "dead" or answered == request_id:
                return status, detail
            # A reply to an earlier request (one that failed in another member): never this one's.

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def stop(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(OSError):
                self.connection.send(None)
        if self.process is not None:
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=5)


class EnsemblePredictor:
    """An ensemble round (see :mod:`harness.runs.ensemble`): its members' mean scores."""

    def __init__(self, run_dir: str | Path, tta: str | None = None):
        self.run_dir = _finished_run(run_dir)
        self.tta = _check_tta(tta)
        members, _ = member_dirs(self.run_dir)
        self.configs = [read_config(_finished_run(m)) for m in members]
        self._members = [Member(index, Path(m)) for index, m in enumerate(members)]
        self._ids = itertools.count(1)
        try:
            for member in self._members:
                member.start()
        except MemberError as err:
            self.close()
            raise ValueError(f"ensemble {self.run_dir}: {err}") from None

    @property
    def calibrated_gate(self) -> dict | None:
        return stored_gate(self.run_dir)

    def readouts(self, chips) -> np.ndarray:
        batches: dict[str, list[np.ndarray]] = {}
        for config in self.configs:
            key = config.preprocessing.model_dump_json()
            if key not in batches:
                batches[key] = model_batches(chips, config.preprocessing, self.tta)
        inputs = [batches[config.preprocessing.model_dump_json()] for config in self.configs]
        request_id = next(self._ids)
        for member, member_inputs in zip(self._members, inputs):
            if not member.alive:
                self._restart(member)
            with contextlib.suppress(OSError):   # a dead pipe shows when its answer is read
                member.send(request_id, member_inputs)
        results, failure = [], None
        for member, member_inputs in zip(self._members, inputs):
            status, detail = member.answer(request_id)
            if status == "dead":
                # Started again and asked again, once: the request still gets every member's answer.
                self._restart(member)
                member.send(request_id, member_inputs)
                status, detail = member.answer(request_id)
            if status != "ok":
                failure = failure or f"ensemble {self.run_dir.name}, {member.label}: {detail}"
                continue   # the other members' answers to this request are still read
            results.append(detail)
        if failure:
            raise MemberError(failure)
        return np.mean(results, axis=0)

    def _restart(self, member: Member) -> None:
        member.stop()
        try:
            member.start()
        except MemberError as err:
            raise MemberError(f"ensemble {self.run_dir.name}: {err}") from None

    def health(self) -> str | None:
        for member in self._members:
            if member.problem:
                return member.problem
            if not member.alive:
                return f"{member.label}: its process is not running (it is started again on the next photo)"
        return None

    def close(self) -> None:
        for member in self._members:
            member.stop()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()


def _serve_member(run_dir: str, connection) -> None:
    """A member's process: load its model once, then answer (id, input batches) with (status, id, scores)."""
    import signal

    from harness.processes import die_with_parent

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        predictor = FrameworkPredictor(run_dir)
    except Exception as err:
        connection.send(("error", None, str(err)))
        return
    connection.send(("ready", None, None))
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        if request is None:
            return
        request_id, batches = request
        try:
            connection.send(("ok", request_id, predictor.readouts_of(batches)))
        except Exception as err:
            connection.send(("error", request_id, f"{type(err).__name__}: {err}"))
