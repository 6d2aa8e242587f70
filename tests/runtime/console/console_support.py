"""Helpers of the console tests (this folder is on sys.path): functions to invoke, a photo, settings, and a
collector of the browser's console errors."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from runtime.config import Limits, MediaSettings, ModelSpec, ServerSettings, Settings

SECRET = "tok-console-secret-value"
PROJECT_ENV = f"GREETING=hello\nAPI_TOKEN={SECRET}\n"
CONSOLE_FUNCTIONS = {
    "chatty.py": "import logging\n"
    "log = logging.getLogger('chatty')\n"
    "async def fetch(request, env, ctx):\n"
    "    log.warning('chatty got %s with token %s', request.query_params.get('word', '-'), env.API_TOKEN)\n"
    "    log.error('second line for %s', ctx.request_id)\n"
    "    return {'said': request.query_params.get('word', '-'), 'greeting': env.GREETING}\n",
    "quiet.py": "async def fetch(request, env, ctx):\n    return 'nothing to log'\n",
    "raising.py": "async def fetch(request, env, ctx):\n    raise ValueError('broken on purpose ' + env.API_TOKEN)\n",
}


def make_photo(size: tuple[int, int] = (320, 240)) -> Image.Image:
    image = Image.new("RGB", size, (90, 140, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle([30, 120, 150, 220], fill=(40, 160, 60))
    draw.ellipse([180, 40, 290, 150], fill=(220, 60, 40))
    draw.text((40, 20), "FLORENCE 2", fill=(255, 255, 255))
    return image


def fake_settings(functions_dir: Path, **server: Any) -> Settings:
    return Settings(
        server=ServerSettings(functions_dir=functions_dir, reload=True, **server),
        limits=Limits(invocation_timeout_s=10, max_new_tokens=64),
        # The tests' image server listens on loopback, which the SSRF guard refuses unless told otherwise.
        media=MediaSettings(max_image_bytes=2_000_000, allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),)),
        models=(ModelSpec(ids=("microsoft-florence-2-large",), path=Path("/models/fake")),),
    )


@dataclass
class BrowserErrors:
    """Console errors and uncaught exceptions of a page."""

    messages: list[str] = field(default_factory=list)

    @classmethod
    def watch(cls, page: Any) -> BrowserErrors:
        errors = cls()
        page.on("console", lambda message: errors.messages.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.messages.append(f"uncaught: {error}"))
        return errors
