"""``harness serve``: a trained or exported model behind an HTTP API and a phone page.

Routes: ``POST /v1/predict`` (the JSON of ``harness predict --json``), ``POST /v1/gate``
(allow / ask for ID / deny / retake for the person nearest the camera, see
:mod:`harness.deploy.door`), ``GET /v1/info``, ``GET /healthz``, and ``GET /`` with its
static files, a mobile-first page that takes a photo or watches a live camera.

A live check is one ``/v1/gate`` request with the camera's frames (``frame`` fields):
where the door checks liveness (``--liveness blink``, the default), only a person seen
blinking in them can be allowed (:mod:`harness.deploy.liveness`).

Only a model fit for the door is served (its measured false accepts at the door's age
within ``--max-false-accept``), unless ``--allow-unfit`` makes it a demo, which the page
says on every screen. The minimum age is the operator's: a request may change it only
with the admin token.

What it protects against, and how:
- Listening beyond this machine needs a token (checked when the server starts); with a
  token every ``/v1`` call needs ``Authorization: Bearer`` (compared in constant time).
- An upload is read into memory up to ``max_upload_bytes`` (413 beyond, before or while
  reading), within ``body_timeout_s`` (408), and decoded only below ``max_pixels`` (413:
  decompression bombs); nothing from a request is written to disk or kept. Empty,
  truncated and non-image uploads are 422, 422 and 415, each with a message.
- An upload counts against the queue and the byte budget *before* it is read: at most
  ``queue_limit`` photos and ``max_buffered_bytes`` are held at once (503 beyond).
- Inference runs beside the event loop: photos are decoded and their faces found on one
  thread, and the faces of every photo waiting go through the network together on
  another (:class:`harness.deploy.batching.ReadoutBatcher`). A slow photo never stops
  ``/healthz`` from answering, and a photo whose client has gone is never decoded or
  sent to the network.
- Headers must arrive within ``header_timeout_s`` and fit in 32 KB, and at most
  ``max_connections`` connections are open (:mod:`.connections`).
- ``Host`` must be a name the server answers to; security headers on every response;
  no CORS unless origins are given; every error is ``{"error": message}`` (:mod:`.guard`).

The routes and the server; who may call is :mod:`.guard`, what an upload may be is :mod:`.uploads`.
"""
from __future__ import annotations

import asyncio
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from harness.deploy.batching import DEFAULT_MAX_FACES, ReadoutBatcher
from harness.deploy.classify import face_results, gate_threshold, usable_chips
from harness.deploy.door import DEFAULT_BORDERLINE, calibrated_borderline, door_fitness, door_verdict
from harness.deploy.liveness import MAX_FRAMES, Liveness
from harness.deploy.serve.guard import Guard, HostNames, RequestProblem, TokenCheck, check_admin, error_response
from harness.deploy.serve.options import (
    DEFAULT_MAX_BUFFERED_MB,
    DEFAULT_MAX_MEGAPIXELS,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_QUEUE_LIMIT,
    DoorSettings,
    ServeOptions,
)
from harness.deploy.serve.uploads import IMAGE_FIELD, ClientGone, read_upload, upload_faces
from harness.models.gate import DEFAULT_GATE_THRESHOLD, check_door_age

STATIC = Path(__file__).with_name("static")   # the page: files beside this module, not strings in it




def create_app(predictor, *, token: str | None = None, min_age: float = 18,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2**20,
               max_pixels: int = DEFAULT_MAX_MEGAPIXELS * 10**6, queue_limit: int = DEFAULT_QUEUE_LIMIT,
               max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_MB * 2**20, body_timeout_s: float = 60,
               hosts: HostNames | None = None, cors_origins: list[str] | None = None,
               description: dict | None = None, max_batch: int = DEFAULT_MAX_FACES,
               door: DoorSettings | None = None):
    """The ASGI app around one loaded model (``harness.deploy.predictors.open_model``)."""
    door = door or DoorSettings()
    app = FastAPI(title="age and gender door check", docs_url=None, redoc_url=None, openapi_url=None)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detect")
    batcher = ReadoutBatcher(predictor, max_batch)
    # Photos being read or waiting for the model, the bytes reserved for them, and those
    # whose client left before the model got to them.
    held = {"count": 0, "bytes": 0, "abandoned": 0}

    # Added innermost first: the Host check and the security headers wrap everything,
    # CORS wraps the token check (a 401 carries CORS headers), the token check the routes.
    app.add_middleware(TokenCheck, token=token)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, hosts=hosts or HostNames("127.0.0.1"))

    async def infer(request: Request, gate_age: float | None):
        declared = request.headers.get("content-length", "")
        reserved = min(int(declared), max_upload_bytes) if declared.isdigit() else max_upload_bytes
        if held["count"] >= queue_limit or held["bytes"] + reserved > max_buffered_bytes:
            raise RequestProblem(503, f"busy: {held['count']} photos are already being read or waiting; "
                                      "try again", {"Retry-After": "1"})
        held["count"] += 1
        held["bytes"] += reserved
        name = "upload"
        try:
            upload = await read_upload(request, max_upload_bytes, body_timeout_s)
            name = upload.name
            gone = threading.Event()
            waiting: list = []     # the photo's readouts future, cancelled if the client leaves
            watcher = asyncio.create_task(_watch_disconnect(request, gone, waiting))
            try:
                found = await asyncio.get_running_loop().run_in_executor(
                    pool, _unless_gone, gone, _timed, upload_faces, upload, max_pixels)
                if found is None:
                    raise ClientGone()
                (faces, liveness, frame), detect_ms = found
                started = time.perf_counter()
                threshold = (gate_threshold(predictor, gate_age) if gate_age is not None
                             else (DEFAULT_GATE_THRESHOLD, "default"))
                chips = usable_chips(faces)
                readouts = None
                if chips:
                    waiting.append(batcher.submit(chips))
                    if gone.is_set():
                        waiting[0].cancel()
                    try:
                        readouts = await asyncio.wrap_future(waiting[0])
                    except asyncio.CancelledError:
                        if gone.is_set():   # the client left before its batch: never inferred
                            raise ClientGone() from None
                        raise
                results = face_results(name, faces, readouts, None, gate_age, threshold[0])
            finally:
                watcher.cancel()
            return results, threshold, (liveness, frame), (detect_ms, (time.perf_counter() - started) * 1000)
        except ClientGone:
            held["abandoned"] += 1
            raise
        except RequestProblem:
            raise
        except Exception as err:   # the model failed on this photo; the server goes on
            print(f"harness serve: the model failed on {name}: {type(err).__name__}: {err}", file=sys.stderr,
                  flush=True)
            raise RequestProblem(500, "the model could not process this photo: "
                                      f"{type(err).__name__}: {without_paths(str(err))}")
        finally:
            held["count"] -= 1
            held["bytes"] -= reserved

    @app.post("/v1/predict")
    async def predict(request: Request, min_age: float | None = None):
        if min_age is not None:
            _check_age(min_age)
            if min_age != serve_min_age:
                check_admin(request.headers, door.admin_token, "the minimum age")
        faces, _, _, took = await infer(request, min_age)
        return JSONResponse([face.to_dict() for face in faces], headers=_timing(took))

    @app.post("/v1/gate")
    async def gate_route(request: Request, min_age: float | None = None):
        age = _check_age(min_age if min_age is not None else serve_min_age)
        if age != serve_min_age:
            check_admin(request.headers, door.admin_token, "the minimum age")
        faces, (threshold, source), (liveness, frame), took = await infer(request, age)
        if door.liveness == "off":
            liveness = Liveness("off", "liveness is not checked on this server (--liveness off)", liveness.frames)
        answer = gate_answer(faces, age, threshold, source, door.borderline, liveness)
        answer["frame"] = frame
        if door.audit is not None:
            try:
                door.audit.record(answer, (description or {}).get("name", "model"),
                                  request.client.host if request.client else None)
            except OSError as err:   # the decision stands; the operator's log says what was lost
                print(f"harness serve: the audit log could not be written: {err}", file=sys.stderr, flush=True)
        return JSONResponse(answer, headers=_timing(took))

    @app.get("/v1/info")
    async def info():
        threshold, source = gate_threshold(predictor, serve_min_age)
        fitness = door.fitness or door_fitness(predictor.calibrated_gate, serve_min_age, door.max_false_accept)
        return {"model": description or {}, "min_age": serve_min_age, "min_age_fixed": True,
                "gate_threshold": threshold, "gate_threshold_source": source, "borderline": door.borderline,
                "borderline_source": door.borderline_source,
                "door": fitness.to_dict(), "demo": not fitness.fit, "photos_stored": False,
                "liveness": door.liveness, "max_frames": MAX_FRAMES,
                "max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels, "image_field": IMAGE_FIELD}

    @app.get("/healthz")
    async def healthz():
        problem = predictor.health()
        if problem:
            return JSONResponse({"status": "failing", "error": without_paths(problem), "waiting": held["count"],
                                 "abandoned": held["abandoned"], "network": batcher.stats()}, 503)
        return {"status": "ok", "waiting": held["count"], "abandoned": held["abandoned"], "network": batcher.stats()}

    @app.api_route("/", methods=["GET", "HEAD"])
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/sw.js")
    async def service_worker():
        # From the root, so that it may control the whole page (a worker's scope is its folder).
        return FileResponse(STATIC / "sw.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    async def static(name: str):
        # A fixed list, so no request path ever reaches the file system.
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        if name not in files:
            return error_response(404, f"no static file {name!r}")
        return FileResponse(files[name])

    @app.exception_handler(RequestProblem)
    async def problem(request: Request, problem: RequestProblem):
        return error_response(problem.status, problem.message, problem.headers)

    @app.exception_handler(HTTPException)
    async def http_problem(request: Request, problem: HTTPException):   # unknown route, wrong method
        return error_response(problem.status_code, str(problem.detail), getattr(problem, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, problem: RequestValidationError):
        # FastAPI's own answer echoes the input back; ours names the parameter and the rule.
        first = problem.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return error_response(422, f"{where}: {first.get('msg', 'invalid')}")

    serve_min_age = _check_age(min_age)
    app.state.pool = pool
    app.state.batcher = batcher
    return app


def _unless_gone(gone: threading.Event, work, *args):
    """``work(*args)`` on the detection thread, unless the client left while it waited."""
    return None if gone.is_set() else work(*args)


async def _watch_disconnect(request: Request, gone: threading.Event, waiting: list) -> None:
    """Set ``gone`` when the client closes its connection (the body is read by now, so
    the next message the server gets for this request is the disconnect), and cancel the
    photo's place in the network's queue (a batch already started finishes)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gone.set()
            for future in waiting:
                future.cancel()
            return


# An absolute path in a message: everything up to its last part is the server's own business.
_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:'\"]+/)+(?=[^\s/:'\"]*)")


def without_paths(message: str) -> str:
    """``message`` with each absolute path cut to its last part: an HTTP answer never shows
    where the server keeps its models (the server's own log keeps the whole message)."""
    return _PATH.sub("", message)


def _timed(work, *args):
    started = time.perf_counter()
    return work(*args), (time.perf_counter() - started) * 1000


def _timing(took: tuple[float, float]) -> dict:
    """Server-Timing: the photo's own time apart from HTTP and its wait for the detection
    thread: decoding and finding its faces, then the network (from the moment its faces
    join the queue to their answer: the batch they went in, and any batch before it)."""
    detect, model = took
    return {"Server-Timing": f"photo;dur={detect + model:.1f}, detect;dur={detect:.1f}, model;dur={model:.1f}"}


def _check_age(min_age: float) -> float:
    try:
        return check_door_age(float(min_age))
    except ValueError as err:
        raise RequestProblem(422, f"min_age: {err}") from None


def gate_answer(faces, min_age: float, threshold: float, source: str, borderline: float = DEFAULT_BORDERLINE,
                liveness: Liveness | None = None) -> dict:
    """The door's decision for the person nearest the camera (the largest face), one of
    :data:`harness.deploy.door.VERDICTS`, and why; ``liveness`` (state ``off``: not
    required) is what the live camera's frames showed."""
    judged = [f for f in faces if f.face is not None]
    nearest = judged[0] if judged else None
    required = liveness if liveness is not None and liveness.state != "off" else None
    verdict, why = door_verdict(faces, threshold, borderline, liveness=required)
    return {
        "verdict": verdict,
        "why": why,
        "min_age": min_age,
        "adult_probability": nearest.adult_probability if nearest is not None else None,
        "threshold": threshold,
        "threshold_source": source,
        "sentence": nearest.sentence if nearest is not None else (faces[0].sentence if faces else "Undefined"),
        "liveness": liveness.to_dict() if liveness is not None else None,
        "faces": [face.to_dict() for face in faces],
    }


def describe(model_path: Path, predictor) -> dict:
    """What /v1/info says about the model: its folder's name and kind, never a full path."""
    manifest = getattr(predictor, "manifest", None)
    if manifest is not None:
        return {"name": model_path.name, "kind": f"{manifest.kind} export ({manifest.format}, LiteRT)",
                "quantize": manifest.quantize, "backend": manifest.source.get("backend")}
    config = getattr(predictor, "config", None)
    if config is not None:
        return {"name": model_path.name, "kind": "trial", "backend": config.backend}
    return {"name": model_path.name, "kind": "ensemble round"}


def _on_the_lan(options: ServeOptions) -> ServeOptions:
    """``--lan``: the LAN address (or the one given), a token if none, a self-signed
    certificate for the address if no ``--ssl-certfile``."""
    import dataclasses

    from harness.deploy.serve.lan import lan_address, new_token, self_signed

    address = lan_address() if options.lan == "auto" else options.lan
    changes = {"host": address, "token": options.token or new_token()}
    if not options.ssl_certfile:
        cert, key = self_signed(address)
        changes.update(ssl_certfile=str(cert), ssl_keyfile=str(key))
    return dataclasses.replace(options, **changes)


def _audit(options: ServeOptions):
    if not options.audit_log:
        return None
    from harness.deploy.audit import AuditLog

    return AuditLog(options.audit_log, int(options.audit_max_mb * 2**20))


class UnfitModel(ValueError):
    """The model's measured gate figures do not allow it at the door."""


def serve(model: str, options: ServeOptions = ServeOptions()) -> None:
    """Load the model once, then serve until interrupted."""
    import uvicorn

    from harness.deploy.predictors import open_model

    if options.lan:
        options = _on_the_lan(options)
    options.check()
    predictor = open_model(model, options.tta, options.allow_failed_parity)
    fitness = door_fitness(predictor.calibrated_gate, options.min_age, options.max_false_accept)
    borderline, borderline_source = options.borderline, "stated"
    if borderline == "auto":
        borderline, borderline_source = calibrated_borderline(predictor.calibrated_gate)
    if not fitness.fit and not options.allow_unfit:
        raise UnfitModel(f"{model} is not fit for the door at {options.min_age:g}: {'; '.join(fitness.problems)}. "
                         f"Measured: {fitness.words()}. Serve a model calibrated with gate: in its experiment "
                         "(or an ensemble with harness ensemble --gate-min-age), raise --max-false-accept if the "
                         "door allows it, or give --allow-unfit for a demo (the page then says DEMO, not for "
                         "real checks)")
    if not fitness.fit:
        print(f"DEMO: {model} is not fit for the door ({'; '.join(fitness.problems)}); the page says so",
              file=sys.stderr, flush=True)
    from harness.deploy.serve.connections import guarded_protocol

    app = create_app(predictor, token=options.token, min_age=options.min_age,
                     max_upload_bytes=int(options.max_upload_mb * 2**20),
                     max_pixels=int(options.max_megapixels * 10**6), queue_limit=options.queue_limit,
                     max_buffered_bytes=int(options.max_buffered_mb * 2**20), body_timeout_s=options.body_timeout_s,
                     hosts=HostNames(options.host, options.allowed_hosts),
                     cors_origins=list(options.cors_origins or []) or None,
                     description=describe(Path(model), predictor), max_batch=options.max_batch,
                     door=DoorSettings(fitness, borderline, options.max_false_accept, options.admin_token,
                                       _audit(options), options.liveness, borderline_source))
    from harness.deploy.serve.lan import door_url, qr_text

    scheme = "https" if options.ssl_certfile else "http"
    bind = options.host.strip("[]")   # an IPv6 address is bracketed in a URL, never when binding
    print(f"serving {model} on {door_url(scheme, bind, options.port, None)} "
          f"(token {'required' if options.token else 'off'}); Ctrl-C stops", flush=True)
    if options.lan:

        url = door_url(scheme, bind, options.port, options.token)
        print(f"open on the phone (same network): {url}\n{qr_text(url)}"
              "The phone warns that the certificate is self-signed: check the address is this one, then "
              "accept it (Advanced, then Proceed) once.", flush=True)
    uvicorn.run(app, host=bind, port=options.port, log_level="info", ssl_certfile=options.ssl_certfile,
                ssl_keyfile=options.ssl_keyfile, server_header=False,
                http=guarded_protocol(options.header_timeout_s, options.max_connections),
                limit_concurrency=options.max_connections + 1)
