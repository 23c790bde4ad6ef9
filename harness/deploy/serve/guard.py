"""Who may call the server, and the headers every answer carries.

Listening beyond this machine needs a token (checked when the server starts); with a
token every ``/v1`` call needs ``Authorization: Bearer`` (compared in constant time).
Security headers on every response."""
from __future__ import annotations

import hmac
import ipaddress

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders

API_PREFIX = "/v1/"


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


class RequestProblem(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def check_listen(host: str, token: str | None) -> None:
    """Refuse to listen beyond the loopback interface without a token, or with a weak one."""
    if token is not None and len(token) >= MIN_TOKEN_LENGTH and (token != token.strip() or not token.isprintable()):
        raise ValueError(f"--token must be at least {MIN_TOKEN_LENGTH} printable characters with no space at "
                         "either end (a header value loses those, so such a token could never match; e.g. "
                         "python -c 'import secrets; print(secrets.token_urlsafe())')")
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


def _check_token(headers, token: str | None) -> None:
    if token is None:
        return
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise RequestProblem(401, "this server needs 'Authorization: Bearer <token>'",
                             {"WWW-Authenticate": "Bearer"})
