"""An uploaded photo, from request body to decoded image, in memory only.

Read up to ``max_upload_bytes`` (413 beyond, before or while reading) and decoded only
below ``max_pixels`` (413: decompression bombs); nothing from a request is written to
disk or kept. Empty, truncated and non-image uploads are 422, 422 and 415, each with a
message."""
from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect

from harness.data.faces import find_faces
from harness.data.images import ImageError, image_from_bytes
from harness.deploy.serve.guard import RequestProblem

IMAGE_FIELD = "image"


RAW_IMAGE_TYPES = ("image/", "application/octet-stream")


# The status each kind of undecodable upload gets (see harness.data.images.ImageError).
IMAGE_ERROR_STATUS = {"empty": 422, "format": 415, "too_large": 413, "corrupt": 422, "missing": 422}


class ClientGone(RequestProblem):
    """The client closed its connection: nobody will read an answer (499, as nginx logs it)."""

    def __init__(self):
        super().__init__(499, "the client closed the connection before its photo's turn")


MAX_PARTS = 8   # a photo form has one file field and perhaps a few others


async def read_upload(request, limit: int, deadline_s: float) -> tuple[bytes, str]:
    """The uploaded image's bytes and its name, in memory.

    Takes multipart/form-data (field ``image``, or the first file) or a raw image body. A
    body that has not fully arrived ``deadline_s`` after its head is a 408. The form is
    parsed in a thread, so a body of a million empty parts never holds the event loop.
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
        data, name = await asyncio.to_thread(_multipart_image, body, content_type)
    elif not kind or kind.startswith(RAW_IMAGE_TYPES):
        data, name = bytes(body), "upload"
    else:
        raise RequestProblem(415, f"Content-Type {kind!r} is not taken: send "
                                  f"multipart/form-data with the file field {IMAGE_FIELD!r}, or the image "
                                  "itself as the body (image/* or application/octet-stream)")
    del body
    if len(data) > limit:
        raise RequestProblem(413, f"image of {len(data):,} bytes is over the limit of {limit:,} bytes")
    return data, name


class _Found(Exception):
    """Stops the parser at the first file: nothing after it is read."""


def _multipart_image(body: bytes, content_type: str) -> tuple[bytes, str]:
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
                                      f"field {IMAGE_FIELD!r}")
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

    def end():
        name, filename = _disposition(parts[-1])
        if name == IMAGE_FIELD or filename:
            found.update(data=bytes(parts[-1]["data"]), filename=filename)
            raise _Found

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
    if not found:
        raise RequestProblem(422, f"no image in the form: send it as the file field {IMAGE_FIELD!r}")
    # The name only labels the answer; it never becomes a path.
    return found["data"], (found["filename"] or b"upload").decode("utf-8", "replace")[:200]


def _disposition(part: dict) -> tuple[str, bytes | None]:
    from python_multipart.multipart import parse_options_header

    _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
    return disposition.get(b"name", b"").decode("utf-8", "replace"), disposition.get(b"filename")


def upload_faces(body: bytes, name: str, max_pixels: int):
    """An upload's faces (decoded, detected, aligned: the detection thread's part of a
    request); an undecodable upload is the RequestProblem its kind calls for."""
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
    return find_faces(image)
