"""``harness serve``: a finished model behind an HTTP API and a phone page.

:mod:`.app` (routes, the server), :mod:`.options` (its options and the door's policy), :mod:`.guard` (token, security headers),
:mod:`.uploads` (reading and decoding an upload), ``static/`` (the page).
"""
from harness.deploy.serve.app import create_app, serve
from harness.deploy.serve.options import DoorSettings, ServeOptions

__all__ = ["ServeOptions", "DoorSettings", "create_app", "serve"]
