"""Where a checkpoint comes from (local folder or Hugging Face hub id) and which format it is in."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from export.errors import NotAFlorence2Checkpoint, SourceUnavailable

# owner/name as the hub spells repository ids; a bare name is allowed (legacy canonical repos).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Files an export needs; weights in either serialization, the remote-code format's Python files are not run.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.txt", "*.model"]


class CheckpointFormat(StrEnum):
    NATIVE = "native"  # transformers' Florence2ForConditionalGeneration layout (model_type florence2)
    REMOTE_CODE = "remote-code"  # microsoft/Florence-2-* with auto_map, DaViT vision tower, florence2_language


@dataclass(frozen=True)
class ResolvedSource:
    """A checkpoint folder on disk and what it was resolved from."""

    path: Path
    origin: str  # "local" or "hub"
    revision: str | None  # the hub commit the snapshot resolved to; None for a local folder


def resolve(source: str, revision: str | None = None) -> ResolvedSource:
    """A local folder as is; otherwise a hub id, downloaded through the hub cache."""
    local = Path(source).expanduser()
    if local.is_dir():
        return ResolvedSource(local.resolve(), "local", revision)
    if local.exists():
        raise NotAFlorence2Checkpoint(f"{source} is a file; pass the checkpoint folder (with config.json) instead")
    if source.startswith((".", "/", "~")) or not _HUB_ID.match(source):
        raise SourceUnavailable(f"no such folder: {source}; pass a checkpoint folder or a hub id like owner/name")
    return _download(source, revision)


def _download(repo_id: str, revision: str | None) -> ResolvedSource:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=_HUB_PATTERNS)
    except Exception as exc:  # the hub client raises a dozen types (offline, 404, gated, DNS, HTTP): one answer
        raise SourceUnavailable(
            f"cannot fetch {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {_first_line(exc)}); "
            "check the id and your network, log in for gated repos, or pass a local checkpoint folder"
        ) from exc
    snapshot = Path(path)
    return ResolvedSource(snapshot, "hub", snapshot.name if len(snapshot.name) == 40 else revision)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def read_config(path: Path) -> dict[str, Any]:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise NotAFlorence2Checkpoint(f"{path} has no config.json; it is not a Hugging Face checkpoint folder")
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise NotAFlorence2Checkpoint(f"{config_path} is not valid JSON: {exc}") from exc


def detect_format(config: dict[str, Any], path: Path) -> CheckpointFormat:
    """Tell the native layout from the original remote-code one; anything else is rejected."""
    model_type = config.get("model_type")
    vision_type = (config.get("vision_config") or {}).get("model_type")
    text_type = (config.get("text_config") or {}).get("model_type")
    if model_type != "florence2":
        raise NotAFlorence2Checkpoint(
            f"{path} holds a {model_type or 'unknown'!s} checkpoint, not Florence-2 (config.json model_type must be "
            "'florence2'); pass a Florence-2 checkpoint such as microsoft/Florence-2-large"
        )
    if "auto_map" in config or vision_type == "davit" or text_type == "florence2_language":
        return CheckpointFormat.REMOTE_CODE
    if "Florence2ForConditionalGeneration" in (config.get("architectures") or ["Florence2ForConditionalGeneration"]):
        return CheckpointFormat.NATIVE
    raise NotAFlorence2Checkpoint(f"{path}: unrecognised Florence-2 layout (architectures {config['architectures']})")
