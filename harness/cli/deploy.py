"""``harness export`` and ``harness serve``: a finished model as a phone file, or behind a door page."""
from __future__ import annotations

import sys

from harness.cli.options import age, finite_positive, port, positive, probability
from harness.deploy.batching import DEFAULT_MAX_FACES
from harness.deploy.door import DEFAULT_BORDERLINE, DEFAULT_MAX_FALSE_ACCEPT


def cmd_export(args) -> int:
    from harness.deploy.export import export

    manifest = export(args.run_dir, args.out, args.quantize, args.format)
    parity = manifest.parity
    change = ", ".join(f"{k.replace('_accuracy', '')} {v:+.2f}" for k, v in parity.accuracy_change_points.items())
    print(f"exported {args.run_dir} -> {args.out} ({manifest.kind}, {args.format}, quantize {args.quantize}, "
          f"{parity.bytes:,} bytes, {parity.single_face_latency_ms:.2f} ms per face with LiteRT)")
    print(f"parity on {parity.test_faces} test faces: max |probability difference| "
          f"{parity.max_abs_probability_difference:.2e}, same labels for {parity.decoded_agreement:.1%}, "
          f"accuracy change in points: {change}")
    if parity.passed is False:
        print(f"harness export: error: the float32 export differs from the framework model by more than "
              f"{parity.tolerance:g} (kept in {args.out} for inspection)", file=sys.stderr)
        return 1
    return 0


def cmd_serve(args) -> int:
    import os

    from harness.deploy.serve import ServeOptions, serve

    serve(args.model, ServeOptions(
        host=args.host, port=args.port, token=args.token or os.environ.get("HARNESS_SERVE_TOKEN") or None,
        min_age=args.min_age, max_upload_mb=args.max_upload_mb, max_megapixels=args.max_megapixels,
        queue_limit=args.queue, max_buffered_mb=args.max_buffered_mb, header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout, max_connections=args.max_connections, max_batch=args.max_batch,
        allowed_hosts=tuple(args.allow_host or ()),
        cors_origins=tuple(args.cors_origin) if args.cors_origin else None, tta=args.tta,
        ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile, allow_failed_parity=args.allow_failed_parity,
        max_false_accept=args.max_false_accept, allow_unfit=args.allow_unfit, borderline=args.borderline,
        admin_token=args.admin_token or os.environ.get("HARNESS_SERVE_ADMIN_TOKEN") or None,
        audit_log=args.audit_log, audit_max_mb=args.audit_max_mb, lan=args.lan, liveness=args.liveness))
    return 0


def _margin(text: str):
    return "auto" if text == "auto" else probability(text)


def cmd_door_log(args) -> int:
    import datetime

    from harness.deploy.audit import hourly_counts, read_log

    frame, damaged = read_log(args.path)
    if frame.empty:
        print(f"{args.path}: no decisions yet")
        return 0
    try:
        day = datetime.date.fromisoformat(args.day) if args.day else frame["time"].max().date()
    except ValueError:
        raise ValueError(f"--day {args.day}: expected a date as YYYY-MM-DD") from None
    table = hourly_counts(frame, day)
    print(f"door decisions on {day} (UTC), per hour:")
    print(table.to_string() if len(table) else "  none")
    totals = table.sum()
    print("total: " + ", ".join(f"{n} {verdict.replace('_', ' ')}" for verdict, n in totals.items()))
    if damaged:
        print(f"{damaged} damaged line(s) skipped", file=sys.stderr)
    return 0


def register(commands) -> None:
    exp = commands.add_parser("export", help="a finished run (or ensemble round) as a TFLite model folder "
                                             "with a manifest and measured parity")
    exp.add_argument("run_dir", help="a finished trial directory or an ensemble round")
    exp.add_argument("--format", choices=["tflite"], default="tflite", help="file format (default tflite)")
    exp.add_argument("--quantize", choices=["none", "dynamic", "int8"], default="none",
                     help="none: float32; dynamic: int8 weights; int8: int8 weights and activations, "
                          "calibrated on the run's training images")
    exp.add_argument("--out", required=True, help="export folder (new, empty, or an earlier export)")
    exp.set_defaults(func=cmd_export)

    srv = commands.add_parser("serve", help="an HTTP API and a phone page for a trained or exported model")
    srv.add_argument("--model", required=True, help="a finished trial, an ensemble round or an export folder")
    srv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only; "
                                                          "any other needs --token)")
    srv.add_argument("--port", type=port, default=8000, help="TCP port (default 8000)")
    srv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every /v1 call (default: "
                                     "$HARNESS_SERVE_TOKEN; keeps the token out of the process list)")
    srv.add_argument("--min-age", type=age, default=18, help="the door's age (default 18); the page shows it and "
                                                              "cannot change it")
    srv.add_argument("--max-false-accept", type=probability, default=DEFAULT_MAX_FALSE_ACCEPT, metavar="RATE",
                     help="refuse a model that let in more than this share of its test faces under --min-age at "
                          f"its calibrated threshold, or has none (default {DEFAULT_MAX_FALSE_ACCEPT})")
    srv.add_argument("--allow-unfit", action="store_true",
                     help="serve such a model anyway, as a demo: the page says DEMO, not for real checks")
    srv.add_argument("--borderline", type=_margin, default=DEFAULT_BORDERLINE, metavar="MARGIN|auto",
                     help="an adult probability this close to the threshold gets ASK FOR ID "
                          f"(default {DEFAULT_BORDERLINE}); auto: the band calibrated with the model's gate, "
                          "holding the tenth of its validation faces nearest the threshold")
    srv.add_argument("--liveness", choices=["blink", "off"], default="blink",
                     help="blink (default): ALLOW only after the live camera saw the person blink, so a photo "
                          "held up never passes (an adult's single photo gets ASK FOR ID); off: any photo may "
                          "allow (research, or a door where staff take every photo themselves)")
    srv.add_argument("--admin-token", help="lets a request change the minimum age (header X-Admin-Token); "
                                           "default: none may (env HARNESS_SERVE_ADMIN_TOKEN)")
    srv.add_argument("--max-upload-mb", type=finite_positive, default=10, help="larger uploads get 413 (default 10)")
    srv.add_argument("--max-megapixels", type=finite_positive, default=50,
                     help="larger images get 413 before they are decoded (default 50)")
    srv.add_argument("--queue", type=positive(int), default=32, help="photos waiting for the model before 503 (default 32)")
    srv.add_argument("--max-buffered-mb", type=finite_positive, default=64,
                     help="uploads being read or waiting, together; beyond it 503 before reading (default 64)")
    srv.add_argument("--max-connections", type=positive(int), default=100,
                     help="open connections; more are closed at once (default 100)")
    srv.add_argument("--header-timeout", type=finite_positive, default=10, metavar="S",
                     help="a request's headers must arrive within S seconds, else the connection is closed "
                          "(default 10)")
    srv.add_argument("--body-timeout", type=finite_positive, default=60, metavar="S",
                     help="an upload must arrive within S seconds of its headers, else 408 (default 60)")
    srv.add_argument("--allow-host", action="append", metavar="NAME",
                     help="answer requests whose Host is NAME, too (repeatable; default: loopback names, "
                          "the --host address, and with --host 0.0.0.0 any IP address and this machine's name)")
    srv.add_argument("--max-batch", type=positive(int), default=DEFAULT_MAX_FACES, metavar="FACES",
                     help="faces of the photos waiting that go through the network in one call at most "
                          "(default %(default)s)")
    srv.add_argument("--cors-origin", action="append", help="allow this browser origin (repeatable; default none)")
    srv.add_argument("--tta", choices=["flip"], help="average each face with its mirror image")
    srv.add_argument("--ssl-certfile", help="serve HTTPS (phones need it for the live camera on the LAN)")
    srv.add_argument("--ssl-keyfile", help="the private key of --ssl-certfile")
    srv.add_argument("--allow-failed-parity", action="store_true",
                     help="serve an export whose parity check failed (its answers are not the trained model's)")
    srv.add_argument("--lan", nargs="?", const="auto", metavar="ADDRESS",
                     help="for a phone on this network: listen on the LAN address (or ADDRESS), make a token if "
                          "none is given and a self-signed certificate if no --ssl-certfile (kept in "
                          "~/.config/agegender-harness/tls), and print the page's URL and a QR code")
    srv.add_argument("--audit-log", metavar="PATH", help="one JSON line per door decision (time, verdict, adult "
                                                        "probability, threshold, model, client), never an image")
    srv.add_argument("--audit-max-mb", type=finite_positive, default=10, metavar="MB",
                     help="rotate the audit log past this size, keeping 5 (default 10)")
    srv.set_defaults(func=cmd_serve)

    log = commands.add_parser("door-log", help="a day's door decisions per hour, from serve's --audit-log")
    log.add_argument("path", help="the audit log (its rotated files PATH.1, PATH.2, ... are read too)")
    log.add_argument("--day", help="YYYY-MM-DD, in UTC (default: the last day in the log)")
    log.set_defaults(func=cmd_door_log)

