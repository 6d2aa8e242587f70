"""The settings the hardening suite serves the tiny model with, and its constants."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import hardening_images as images
from hardening_hosts import ALLOWED_NETWORKS

from runtime.config import Limits, MediaSettings, ModelSpec, ServerSettings, Settings

MODEL_ID = "microsoft-florence-2-large"
HUB_ID = "microsoft/Florence-2-large"
MAX_NEW_TOKENS = 16
MAX_REDIRECTS = 3
FETCH_TIMEOUT_S = 2.0

EXAMPLES = Path(__file__).resolve().parents[2] / "functions"
FUNCTIONS = {
    "hello.py": "async def fetch(request, env, ctx):\n    return {'hello': 'world'}\n",
}


def tiny_settings(functions_dir: Path, model_dir: Path, **limits: object) -> Settings:
    return Settings(
        server=ServerSettings(functions_dir=functions_dir, reload=True),
        limits=Limits(**{"max_new_tokens": MAX_NEW_TOKENS, "invocation_timeout_s": 20.0, **limits}),  # type: ignore[arg-type]
        media=MediaSettings(
            allowed_networks=ALLOWED_NETWORKS,
            max_redirects=MAX_REDIRECTS,
            fetch_timeout_s=FETCH_TIMEOUT_S,
            connect_timeout_s=FETCH_TIMEOUT_S,
        ),
        models=(ModelSpec(ids=(MODEL_ID,), path=model_dir),),
    )


SMALL_PNG = images.png((64, 48))
SMALL_PNG_URL = "data:image/png;base64," + base64.b64encode(SMALL_PNG).decode()


def completion_body(url: str = SMALL_PNG_URL, text: str = "<CAPTION>", **extra: Any) -> dict[str, Any]:
    """A valid chat completion request (two new tokens unless ``extra`` says otherwise)."""
    return {
        "model": HUB_ID,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
            }
        ],
        "max_tokens": 2,
        **extra,
    }
