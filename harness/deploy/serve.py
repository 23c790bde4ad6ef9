"""``harness serve``: a trained or exported model behind an HTTP API and a phone page.

Routes: ``POST /v1/predict`` (the JSON of ``harness predict --json``), ``POST /v1/gate``
(allow / deny / undefined for the person nearest the camera), ``GET /v1/info``,
``GET /healthz``, and ``GET /`` with its static files, a mobile-first page that takes a
photo or watches a live camera.

What it protects against, and how:
- Listening beyond this machine needs a token (checked when the server starts); with a
  token every ``/v1`` call needs ``Authorization: Bearer`` (compared in constant time).
- An upload is read into memory up to ``max_upload_bytes`` (413 beyond, before or while
  reading) and decoded only below ``max_pixels`` (413: decompression bombs); nothing from
  a request is written to disk or kept. Empty, truncated and non-image uploads are 422,
  422 and 415, each with a message.
- Inference runs on one thread beside the event loop, with at most ``queue_limit``
  requests waiting (503 beyond): a slow photo never stops ``/healthz`` from answering.
- Security headers on every response; no CORS unless origins are given.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware

from harness.data.images import ImageError, image_from_bytes
from harness.deploy.classify import classify_image, gate_threshold
from harness.models.gate import DEFAULT_GATE_THRESHOLD

STATIC = Path(__file__).resolve().parents[1] / "serve_static"
API_PREFIX = "/v1/"
DEFAULT_MAX_UPLOAD_MB = 10
DEFAULT_MAX_MEGAPIXELS = 50     # above any phone camera's photo
DEFAULT_QUEUE_LIMIT = 32
IMAGE_FIELD = "image"
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
MIN_TOKEN_LENGTH = 16

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    # Everything the page needs comes from this server; camera frames are blob: URLs.
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                                "script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "object-src 'none'; base-uri 'none'; form-action 'self'; "
                                "frame-ancestors 'none'"),
}
# The status each kind of undecodable upload gets (see harness.data.images.ImageError).
IMAGE_ERROR_STATUS = {"empty": 422, "format": 415, "too_large": 413, "corrupt": 422, "missing": 422}


class RequestProblem(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def check_listen(host: str, token: str | None) -> None:
    """Refuse to listen beyond the loopback interface without a token, or with a weak one."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"--token must be at least {MIN_TOKEN_LENGTH} characters "
                         "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
    if token is None and not is_loopback(host):
        raise ValueError(f"--host {host}: listening beyond this machine needs --token (or "
                         "HARNESS_SERVE_TOKEN), so that only those who hold it can use the model")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(predictor, *, token: str | None = None, min_age: float = 18,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2**20,
               max_pixels: int = DEFAULT_MAX_MEGAPIXELS * 10**6, queue_limit: int = DEFAULT_QUEUE_LIMIT,
               cors_origins: list[str] | None = None, description: dict | None = None):
    """The ASGI app around one loaded model (``harness.deploy.predictors.open_model``)."""
    app = FastAPI(title="age and gender door check", docs_url=None, redoc_url=None, openapi_url=None)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    waiting = {"count": 0}

    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    # Outermost, so that even CORS preflights and errors carry the headers.
    app.add_middleware(Guard, token=token)

    async def infer(request: Request, gate_age: float | None):
        body, name = await _read_upload(request, max_upload_bytes)
        if waiting["count"] >= queue_limit:
            raise RequestProblem(503, f"busy: {queue_limit} photos are already waiting; try again",
                                 {"Retry-After": "1"})
        waiting["count"] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                pool, _classify_upload, predictor, body, name, max_pixels, gate_age)
        except RequestProblem:
            raise
        except Exception as err:   # the model failed on this photo; the server goes on
            raise RequestProblem(500, f"the model could not process this photo: {type(err).__name__}: {err}")
        finally:
            waiting["count"] -= 1

    @app.post("/v1/predict")
    async def predict(request: Request, min_age: float | None = None):
        if min_age is not None:
            _check_age(min_age)
        faces, _, took = await infer(request, min_age)
        return JSONResponse([face.to_dict() for face in faces], headers=_timing(took))

    @app.post("/v1/gate")
    async def door(request: Request, min_age: float | None = None):
        age = _check_age(min_age if min_age is not None else serve_min_age)
        faces, (threshold, source), took = await infer(request, age)
        return JSONResponse(gate_answer(faces, age, threshold, source), headers=_timing(took))

    @app.get("/v1/info")
    async def info():
        threshold, source = gate_threshold(predictor, serve_min_age)
        return {"model": description or {}, "min_age": serve_min_age, "gate_threshold": threshold,
                "gate_threshold_source": source, "max_upload_bytes": max_upload_bytes,
                "max_pixels": max_pixels, "image_field": IMAGE_FIELD}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "waiting": waiting["count"]}

    @app.api_route("/", methods=["GET", "HEAD"])
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}")
    async def static(name: str):
        # A fixed list, so no request path ever reaches the file system.
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        if name not in files:
            return JSONResponse({"error": f"no static file {name!r}"}, 404)
        return FileResponse(files[name])

    @app.exception_handler(RequestProblem)
    async def problem(request: Request, problem: RequestProblem):
        return JSONResponse({"error": problem.message}, problem.status, headers=problem.headers)

    serve_min_age = _check_age(min_age)
    app.state.pool = pool
    return app


class Guard:
    """Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs milliseconds per
    request): the token on ``/v1`` calls, and the security headers on every response."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        api = scope["path"].startswith(API_PREFIX)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if api:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        if api and scope["method"] != "OPTIONS":
            try:
                _check_token(Headers(scope=scope), self.token)
            except RequestProblem as problem:
                response = JSONResponse({"error": problem.message}, problem.status, headers=problem.headers)
                return await response(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)


def _timing(milliseconds: float) -> dict:
    """Server-Timing: the photo's own time (decode, faces, model), apart from HTTP and waiting."""
    return {"Server-Timing": f"photo;dur={milliseconds:.1f}"}


def _check_age(min_age: float) -> float:
    if not 0 < float(min_age) <= 100:
        raise RequestProblem(422, f"min_age must be between 0 and 100 years, got {min_age}")
    return float(min_age)


def _check_token(headers, token: str | None) -> None:
    if token is None:
        return
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise RequestProblem(401, "this server needs 'Authorization: Bearer <token>'",
                             {"WWW-Authenticate": "Bearer"})


async def _read_upload(request, limit: int) -> tuple[bytes, str]:
    """The uploaded image's bytes, its name and the request's content type, in memory.

    Takes multipart/form-data (field ``image``, or the first file) or a raw image body.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise RequestProblem(413, f"upload of {int(declared):,} bytes is over the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + 64 * 1024:   # the multipart framing around the image
            raise RequestProblem(413, f"upload is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()   # the boundary after it is case-sensitive
    if kind == "multipart/form-data":
        data, name = _multipart_image(body, content_type)
    elif not kind or kind.startswith(RAW_IMAGE_TYPES):
        data, name = body, "upload"
    else:
        raise RequestProblem(415, f"Content-Type {kind!r} is not taken: send "
                                  f"multipart/form-data with the file field {IMAGE_FIELD!r}, or the image "
                                  "itself as the body (image/* or application/octet-stream)")
    if len(data) > limit:
        raise RequestProblem(413, f"image of {len(data):,} bytes is over the limit of {limit:,} bytes")
    return data, name


def _multipart_image(body: bytes, content_type: str) -> tuple[bytes, str]:
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestProblem(422, "multipart/form-data without a boundary")
    parts: list[dict] = []
    header: dict = {}

    def begin():
        parts.append({"headers": {}, "data": bytearray()})

    def field(data, start, end):
        header["field"] = header.get("field", b"") + data[start:end]

    def value(data, start, end):
        header["value"] = header.get("value", b"") + data[start:end]

    def header_end():
        parts[-1]["headers"][header.pop("field", b"").lower()] = header.pop("value", b"")

    def data(chunk, start, end):
        parts[-1]["data"] += chunk[start:end]

    parser = MultipartParser(boundary, {"on_part_begin": begin, "on_header_field": field,
                                        "on_header_value": value, "on_header_end": header_end,
                                        "on_part_data": data})
    try:
        parser.write(body)
        parser.finalize()
    except Exception as err:
        raise RequestProblem(422, f"malformed multipart/form-data: {err}") from None
    files = []
    for part in parts:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        files.append((name, filename, bytes(part["data"])))
    chosen = next((f for f in files if f[0] == IMAGE_FIELD), None) or next((f for f in files if f[1]), None)
    if chosen is None:
        raise RequestProblem(422, f"no image in the form: send it as the file field {IMAGE_FIELD!r}")
    # The name only labels the answer; it never becomes a path.
    return chosen[2], (chosen[1] or b"upload").decode("utf-8", "replace")[:200]


def _classify_upload(predictor, body: bytes, name: str, max_pixels: int,
                     min_age: float | None):
    started = time.perf_counter()
    try:
        image = image_from_bytes(body, max_pixels)
    except ImageError as err:
        status = IMAGE_ERROR_STATUS.get(err.kind, 422)
        if err.kind == "too_large":
            message = f"too large to decode safely: over this server's limit of {max_pixels:,} pixels"
        elif err.kind == "format":
            message = f"{err} (send a JPEG, PNG, WebP, BMP, GIF or TIFF photo)"
        else:
            message = str(err)
        raise RequestProblem(status, f"{name}: {message}") from None
    threshold = gate_threshold(predictor, min_age) if min_age is not None else (DEFAULT_GATE_THRESHOLD, "default")
    faces = classify_image(predictor, name, image, None, min_age, threshold[0])
    return faces, threshold, (time.perf_counter() - started) * 1000


def gate_answer(faces, min_age: float, threshold: float, source: str) -> dict:
    """The door's decision: that of the largest face (the person nearest the camera);
    ``undefined`` when there is no face or the largest cannot be judged."""
    judged = [f for f in faces if f.face is not None]
    nearest = judged[0] if judged else None
    verdict = nearest.gate if nearest is not None else "undefined"
    return {
        "verdict": verdict or "undefined",
        "min_age": min_age,
        "adult_probability": nearest.adult_probability if nearest is not None else None,
        "threshold": threshold,
        "threshold_source": source,
        "sentence": nearest.sentence if nearest is not None else (faces[0].sentence if faces else "Undefined"),
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


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          min_age: float = 18, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
          max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, queue_limit: int = DEFAULT_QUEUE_LIMIT,
          cors_origins: list[str] | None = None, tta: str | None = None,
          ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
    """Load the model once, then serve until interrupted."""
    import uvicorn

    from harness.deploy.predictors import open_model

    check_listen(host, token)
    if max_upload_mb <= 0 or max_megapixels <= 0 or queue_limit < 1:
        raise ValueError("--max-upload-mb and --max-megapixels must be positive, --queue at least 1")
    predictor = open_model(model, tta)
    app = create_app(predictor, token=token, min_age=min_age, max_upload_bytes=int(max_upload_mb * 2**20),
                     max_pixels=int(max_megapixels * 10**6), queue_limit=queue_limit,
                     cors_origins=cors_origins, description=describe(Path(model), predictor))
    scheme = "https" if ssl_certfile else "http"
    print(f"serving {model} on {scheme}://{host}:{port}/ (token {'required' if token else 'off'}); "
          "Ctrl-C stops", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile, server_header=False)
