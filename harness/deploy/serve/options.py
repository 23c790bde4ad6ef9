"""How ``harness serve`` listens, what it accepts and the door's policy: plain options,
checked whole before the model is loaded."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from harness.deploy.batching import DEFAULT_MAX_FACES
from harness.deploy.door import DEFAULT_BORDERLINE, DEFAULT_MAX_FALSE_ACCEPT, Fitness
from harness.deploy.serve.guard import check_listen
from harness.models.gate import check_door_age

__all__ = ["ServeOptions", "DoorSettings"]

DEFAULT_MAX_UPLOAD_MB = 10
DEFAULT_MAX_MEGAPIXELS = 50     # above any phone camera's photo
DEFAULT_QUEUE_LIMIT = 32
DEFAULT_MAX_BUFFERED_MB = 64    # every upload being read or waiting for the model, together
LIVENESS_CHECKS = ("blink", "off")


@dataclass(frozen=True)
class DoorSettings:
    """The door's policy for one server: the model's measured fitness, the borderline band
    (ask for ID), the operator's limit on false accepts and the admin token."""

    fitness: Fitness | None = None        # None: measured from the predictor when asked
    borderline: float = DEFAULT_BORDERLINE
    max_false_accept: float = DEFAULT_MAX_FALSE_ACCEPT
    admin_token: str | None = None
    audit: object | None = None           # a harness.deploy.audit.AuditLog: one line per decision
    liveness: str = "blink"               # "blink": allow only after the live camera saw a blink; "off"
    borderline_source: str = "stated"     # or how it was calibrated (serve --borderline auto)


@dataclass(frozen=True)
class ServeOptions:
    """How ``harness serve`` listens and what it accepts (one object instead of a dozen
    parameters; the command line fills it, tests and scripts build their own)."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None              # required beyond loopback (see guard.check_listen)
    min_age: float = 18
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    max_buffered_mb: float = DEFAULT_MAX_BUFFERED_MB
    header_timeout_s: float = 10          # a request's head, from its first byte (or the connect)
    body_timeout_s: float = 60            # its body, from the end of its head: 10 MB at 1.5 Mbit/s
    max_connections: int = 100
    max_batch: int = DEFAULT_MAX_FACES    # faces in one network call at most
    allowed_hosts: tuple[str, ...] = ()   # Host names beyond loopback and the --host address
    cors_origins: tuple[str, ...] | None = None
    tta: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    allow_failed_parity: bool = False     # serve an export whose parity check failed (demos only)
    max_false_accept: float = DEFAULT_MAX_FALSE_ACCEPT   # the most minors let in (test faces) a model may have
    allow_unfit: bool = False             # serve a model that is not fit, as a demo the page says it is
    borderline: float | str = DEFAULT_BORDERLINE   # adult probability this close to the threshold: ask for
    #                                                ID; "auto": the band calibrated with the model's gate
    admin_token: str | None = None        # lets a request change the minimum age (X-Admin-Token)
    lan: str | None = None                # "auto" or an address: listen there with a token, HTTPS and a QR code
    audit_log: str | None = None          # one JSON line per door decision, no image (harness door-log)
    audit_max_mb: float = 10              # rotated past this size
    liveness: str = "blink"               # allow only after a blink on the live camera; "off": any photo

    def check(self) -> None:
        """Every option that can be wrong, refused before the model is loaded."""
        check_listen(self.host, self.token)
        check_door_age(self.min_age)
        for name, value in (("--max-upload-mb", self.max_upload_mb), ("--max-megapixels", self.max_megapixels),
                            ("--max-buffered-mb", self.max_buffered_mb),
                            ("--header-timeout", self.header_timeout_s), ("--body-timeout", self.body_timeout_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite positive number, got {value}")
        if self.max_buffered_mb < self.max_upload_mb:
            raise ValueError(f"--max-buffered-mb {self.max_buffered_mb:g} is less than --max-upload-mb "
                             f"{self.max_upload_mb:g}: an upload of the largest size could never be taken")
        for name, count in (("--queue", self.queue_limit), ("--max-connections", self.max_connections),
                            ("--max-batch", self.max_batch)):
            if count < 1:
                raise ValueError(f"{name} must be at least 1, got {count}")
        if not 0 <= self.max_false_accept <= 1:
            raise ValueError(f"--max-false-accept {self.max_false_accept}: a rate between 0 and 1")
        if self.borderline != "auto" and not (isinstance(self.borderline, (int, float))
                                              and 0 <= self.borderline < 0.5):
            raise ValueError(f"--borderline {self.borderline}: an adult-probability margin from 0 to below 0.5, "
                             "or auto")
        if self.liveness not in LIVENESS_CHECKS:
            raise ValueError(f"--liveness {self.liveness!r}: one of {', '.join(LIVENESS_CHECKS)}")
        if not (math.isfinite(self.audit_max_mb) and self.audit_max_mb > 0):
            raise ValueError(f"--audit-max-mb must be a finite positive number, got {self.audit_max_mb}")
        if self.audit_log and Path(self.audit_log).is_dir():
            raise ValueError(f"--audit-log {self.audit_log}: a folder; give a file path")
        if self.admin_token is not None and self.admin_token == self.token:
            raise ValueError("--admin-token must differ from --token (the phone at the door holds the token)")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"--port {self.port}: a TCP port is between 1 and 65535")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("--ssl-keyfile needs --ssl-certfile (the certificate it is the key of)")
        for name, path in (("--ssl-certfile", self.ssl_certfile), ("--ssl-keyfile", self.ssl_keyfile)):
            if path and not Path(path).is_file():
                raise ValueError(f"{name} {path}: no such file")
        if self.ssl_certfile and b"-----BEGIN CERTIFICATE-----" not in Path(self.ssl_certfile).read_bytes():
            raise ValueError(f"--ssl-certfile {self.ssl_certfile}: not a PEM certificate "
                             "(expected a '-----BEGIN CERTIFICATE-----' block)")
