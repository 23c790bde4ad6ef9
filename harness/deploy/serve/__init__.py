"""``harness serve``: a finished model behind an HTTP API and a phone page.

:mod:`.app` (routes, the server, its options), :mod:`.guard` (token, security headers),
:mod:`.uploads` (reading and decoding an upload), ``static/`` (the page).
"""
from harness.deploy.serve.app import ServeOptions, create_app, serve

__all__ = ["ServeOptions", "create_app", "serve"]
