"""An uploaded photo, from request body to decoded image, in memory only.

Read up to ``max_upload_bytes`` (413 beyond, before or while reading) and decoded only
below ``max_pixels`` (413: decompression bombs); nothing from a request is written to
disk or kept. Empty, truncated and non-image uploads are 422, 422 and 415, each with a
message.

A live check sends its frames as repeated ``frame`` fields (at most
:data:`harness.deploy.liveness.MAX_FRAMES`), with or without an ``image``."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.requests import ClientDisconnect

from harness.data.faces import find_faces
from harness.data.images import ImageError, image_from_bytes
from harness.deploy.liveness import MAX_FRAMES, check_frames
from harness.deploy.serve.guard import RequestProblem

IMAGE_FIELD = "image"
FRAME_FIELD = "frame"


@dataclass
class Upload:
    """What a request brought: the photo to judge (None when only frames came: the
    sharpest-eyed frame is judged), its name, and a live check's frames in order."""

    image: bytes | None
    name: str
    frames: list[bytes] = field(default_factory=list)


RAW_IMAGE_TYPES = ("image/", "application/octet-stream")


# The status each kind of undecodable upload gets (see harness.data.images.ImageError).
IMAGE_ERROR_STATUS = {"empty": 422, "format": 415, "too_large": 413, "corrupt": 422, "missing": 422}


class ClientGone(RequestProblem):
    """The client closed its connection: nobody will read an answer (499, as nginx logs it)."""

    def __init__(self):
        super().__init__(499, "the client closed the connection before its photo's turn")


MAX_PARTS = 8 + MAX_FRAMES   # a photo, a live check's frames and perhaps a few other fields


async def read_upload(request, limit: int, deadline_s: float) -> Upload:
    """The uploaded image's bytes (and a live check's frames) and its name, in memory.

    Takes multipart/form-data (field ``image``, or the first file that is not a
    ``frame``, read up to there; the ``frame`` fields before it) or a raw image body. A body that has not fully arrived
    ``deadline_s`` after its head is a 408. The form is parsed in a thread, so a body of a
    million empty parts never holds the event loop.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise RequestProblem(413, f"upload of {int(declared):,} bytes is over the limit of {limit:,} bytes")
    # One growing buffer, not a list of chunks: a large buffer is its own mapping and goes
    # back to the system when freed, where thousands of 64 KB chunks would stay in the heap.
    body = bytearray()
    try:
        async with asyncio.timeout(deadline_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit + 64 * 1024:   # the multipart framing around the image
                    raise RequestProblem(413, f"upload is over the limit of {limit:,} bytes")
    except TimeoutError:
        raise RequestProblem(408, f"the upload did not arrive within {deadline_s:g} s",
                             {"Connection": "close"}) from None
    except ClientDisconnect:
        raise ClientGone() from None
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()   # the boundary after it is case-sensitive
    if kind == "multipart/form-data":
        upload = await asyncio.to_thread(_multipart_upload, body, content_type)
    elif not kind or kind.startswith(RAW_IMAGE_TYPES):
        upload = Upload(bytes(body), "upload")
    else:
        raise RequestProblem(415, f"Content-Type {kind!r} is not taken: send "
                                  f"multipart/form-data with the file field {IMAGE_FIELD!r}, or the image "
                                  "itself as the body (image/* or application/octet-stream)")
    del body
    if upload.image is not None and len(upload.image) > limit:
        raise RequestProblem(413, f"image of {len(upload.image):,} bytes is over the limit of {limit:,} bytes")
    return upload


class _Found(Exception):
    """Stops the parser at the photo: nothing after it is read (a live check's frames
    come before it, or alone)."""


def _multipart_upload(body: bytes, content_type: str) -> Upload:
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestProblem(422, "multipart/form-data without a boundary")
    parts: list[dict] = []
    header: dict = {}

    def begin():
        if len(parts) >= MAX_PARTS:
            raise RequestProblem(422, f"a form of more than {MAX_PARTS} parts: send the photo as the file "
                                      f"field {IMAGE_FIELD!r} and at most {MAX_FRAMES} {FRAME_FIELD!r} fields")
        parts.append({"headers": {}, "data": bytearray()})

    def field(data, start, end):
        header["field"] = header.get("field", b"") + data[start:end]

    def value(data, start, end):
        header["value"] = header.get("value", b"") + data[start:end]

    def header_end():
        parts[-1]["headers"][header.pop("field", b"").lower()] = header.pop("value", b"")

    def data(chunk, start, end):
        parts[-1]["data"] += chunk[start:end]

    found: dict = {}
    frames: list[bytes] = []

    def end():
        name, filename = _disposition(parts[-1])
        if name == FRAME_FIELD:
            if len(frames) >= MAX_FRAMES:
                raise RequestProblem(422, f"more than {MAX_FRAMES} {FRAME_FIELD!r} fields: one live check "
                                          f"takes at most {MAX_FRAMES} frames")
            frames.append(bytes(parts[-1]["data"]))
        elif name == IMAGE_FIELD or filename:
            found.update(data=bytes(parts[-1]["data"]), filename=filename)
            raise _Found
        parts[-1]["data"] = bytearray()   # kept once, not twice

    parser = MultipartParser(boundary, {"on_part_begin": begin, "on_header_field": field,
                                        "on_header_value": value, "on_header_end": header_end,
                                        "on_part_data": data, "on_part_end": end})
    try:
        parser.write(body)
        parser.finalize()
    except _Found:
        pass
    except RequestProblem:
        raise
    except Exception as err:
        raise RequestProblem(422, f"malformed multipart/form-data: {err}") from None
    if not found and not frames:
        raise RequestProblem(422, f"no image in the form: send it as the file field {IMAGE_FIELD!r}")
    # The name only labels the answer; it never becomes a path.
    name = (found.get("filename") or (b"upload" if found else b"camera")).decode("utf-8", "replace")[:200]
    return Upload(found.get("data"), name, frames)


def _disposition(part: dict) -> tuple[str, bytes | None]:
    from python_multipart.multipart import parse_options_header

    _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
    return disposition.get(b"name", b"").decode("utf-8", "replace"), disposition.get(b"filename")


def _decoded(body: bytes, name: str, max_pixels: int):
    try:
        return image_from_bytes(body, max_pixels)
    except ImageError as err:
        status = IMAGE_ERROR_STATUS.get(err.kind, 422)
        if err.kind == "too_large":
            message = f"too large to decode safely: over this server's limit of {max_pixels:,} pixels"
        elif err.kind == "format":
            message = f"{err} (send a JPEG, PNG, WebP, BMP, GIF or TIFF photo)"
        else:
            message = str(err)
        raise RequestProblem(status, f"{name}: {message}") from None


def upload_faces(upload: Upload, max_pixels: int):
    """(faces, liveness, judged frame) of an upload (decoded, detected, aligned, its frames
    checked for a blink: the detection thread's part of a request); an undecodable photo
    or frame is the RequestProblem its kind calls for. Without an ``image``, the frame
    whose eyes are the most open is judged (its number from 1; None: the image was)."""
    frames = [_decoded(data, f"{upload.name} frame {n}", max_pixels) for n, data in enumerate(upload.frames, 1)]
    liveness = check_frames(frames)
    if upload.image is not None:
        return find_faces(_decoded(upload.image, upload.name, max_pixels)), liveness, None
    seen = [(v, n) for n, v in enumerate(liveness.openness) if v is not None]
    judged = max(seen)[1] if seen else len(frames) // 2
    return find_faces(frames[judged]), liveness, judged + 1
