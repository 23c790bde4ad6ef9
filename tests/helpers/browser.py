"""Finding the browser the browser tests drive (Playwright, pointed at Debian's chromium)."""
from __future__ import annotations

import os
import shutil

import pytest


def chromium_executable() -> str:
    """Debian's chromium (``.ci/run`` and ``make test`` install it where they can)."""
    for candidate in (os.environ.get("HARNESS_CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate:
            return candidate
    pytest.fail("no Chromium found: install Debian's `chromium` package (apt-get install chromium) "
                "or point HARNESS_CHROMIUM at a Chrome/Chromium executable")
