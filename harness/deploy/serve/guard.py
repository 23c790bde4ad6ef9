"""Who may call the server, and the headers every answer carries.

Listening beyond this machine needs a token (checked when the server starts); with a
token every ``/v1`` call needs ``Authorization: Bearer`` (compared in constant time).
Every request's ``Host`` must be a name this server answers to (:class:`HostNames`),
so a page on another site cannot reach a loopback server by DNS rebinding, and no
answer (a redirect, say) is built from a name the client made up. Security headers on
every response; every error is ``{"error": message}``."""
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


class HostNames:
    """The names a ``Host`` header may carry: the loopback names, the address the server
    listens on, and ``extra`` (``--allow-host``). Listening on every interface (0.0.0.0
    or ::), any IP address and this machine's own name are taken as well: a rebinding
    attack needs a domain name, never an address."""

    def __init__(self, host: str, extra: tuple[str, ...] = ()):
        import socket

        bound = host.strip("[]").lower()
        self.wildcard = bound in ("0.0.0.0", "::", "")
        self.names = {"localhost", "127.0.0.1", "::1", bound, *(n.strip("[]").lower() for n in extra)}
        if self.wildcard:
            machine = socket.gethostname().lower()
            self.names |= {machine, machine + ".local"}

    def allows(self, value: str) -> bool:
        name = value.strip().lower()
        if name.startswith("["):          # [v6]:port
            name = name[1:].split("]", 1)[0]
        elif name.count(":") == 1:        # name:port
            name = name.split(":", 1)[0]
        if name in self.names or name.endswith(".localhost"):
            return True
        if not self.wildcard:
            return False
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The one shape of every error the server answers."""
    return JSONResponse({"error": message}, status, headers=headers)


class Guard:
    """Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs milliseconds per
    request), outermost: the ``Host`` check, and the security headers on every response."""

    def __init__(self, app, hosts: HostNames):
        self.app, self.hosts = app, hosts

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

        host = Headers(scope=scope).get("host")
        if host is None or not self.hosts.allows(host):
            response = error_response(421, "this server does not answer to the name in the Host header "
                                           "(serve with --allow-host NAME to add one)")
            return await response(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)


class TokenCheck:
    """Inside the CORS middleware (so that a 401 carries its CORS headers too): the token
    on every ``/v1`` call but preflights."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(API_PREFIX) and scope["method"] != "OPTIONS":
            try:
                _check_token(Headers(scope=scope), self.token)
            except RequestProblem as problem:
                return await error_response(problem.status, problem.message, problem.headers)(scope, receive, send)
        await self.app(scope, receive, send)


ADMIN_HEADER = "x-admin-token"


def check_admin(headers, admin_token: str | None, what: str) -> None:
    """403 unless the request carries the operator's admin token (``X-Admin-Token``):
    what the door's operator fixed (its minimum age) a phone at the door may not change."""
    given = headers.get(ADMIN_HEADER, "")
    if admin_token is None or not hmac.compare_digest(given.strip().encode(), admin_token.encode()):
        raise RequestProblem(403, f"{what} is the operator's (harness serve --min-age); a request may change it "
                                  "only with the admin token (X-Admin-Token, harness serve --admin-token)")


def _check_token(headers, token: str | None) -> None:
    if token is None:
        return
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise RequestProblem(401, "this server needs 'Authorization: Bearer <token>'",
                             {"WWW-Authenticate": "Bearer"})
