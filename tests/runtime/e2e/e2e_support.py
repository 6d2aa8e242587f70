"""Helpers of the end-to-end tests (imported by conftest.py and the tests; this folder is on sys.path)."""

from __future__ import annotations

import http.server
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from runtime.config import Limits, MediaSettings, ModelSpec, ServerSettings, Settings
from runtime.media.addresses import IPNetwork

REPO = Path(__file__).resolve().parents[3]
LOOPBACK: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"),)
MAX_NEW_TOKENS = 12  # keeps every generation short on two CPU cores

EXTRA_FUNCTIONS = {
    "healthy.py": "async def fetch(request, env, ctx):\n    return {'ok': True, 'greeting': env.GREETING}\n",
    "raising.py": "async def fetch(request, env, ctx):\n    raise ValueError('broken on purpose: ' + env.API_TOKEN)\n",
    "hanging.py": "import asyncio\nasync def fetch(request, env, ctx):\n    await asyncio.sleep(3600)\n",
    "unimportable.py": "import not_a_module_anywhere\nasync def fetch(request, env, ctx):\n    return 'never'\n",
    "editable.py": "async def fetch(request, env, ctx):\n    return 'version 1'\n",
    "echo.py": "async def fetch(request, env, ctx):\n"
    "    return {'method': request.method, 'got': await request.json()}\n",
    "sleepy.py": "import asyncio\nasync def fetch(request, env, ctx):\n"
    "    await asyncio.sleep(1.5)\n    return 'slept'\n",
}
PROJECT_ENV = "GREETING=hello\nAPI_TOKEN=tok-e2e-secret-value\n"


@dataclass(frozen=True)
class ImageServer:
    url: str
    folder: Path


def make_photo(size: tuple[int, int] = (320, 240)) -> Image.Image:
    image = Image.new("RGB", size, (90, 140, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle([30, 120, 150, 220], fill=(40, 160, 60))
    draw.ellipse([180, 40, 290, 150], fill=(220, 60, 40))
    draw.text((40, 20), "FLORENCE 2", fill=(255, 255, 255))
    return image


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def e2e_settings(functions_dir: Path, model_dir: Path) -> Settings:
    return Settings(
        server=ServerSettings(functions_dir=functions_dir, reload=True),
        limits=Limits(invocation_timeout_s=8, max_new_tokens=MAX_NEW_TOKENS, max_body_bytes=2_000_000),
        media=MediaSettings(allowed_networks=LOOPBACK, max_image_bytes=1_000_000),
        models=(ModelSpec(ids=("microsoft-florence-2-large",), path=model_dir),),
    )


@dataclass
class CountingLoader:
    loads: int = 0

    def __call__(self, path: Path, settings: object) -> object:
        from runtime.engine import load

        self.loads += 1
        return load(path, settings)  # type: ignore[arg-type]
