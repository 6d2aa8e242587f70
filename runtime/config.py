"""Settings, read once from the environment (``FLORENCE_*``) and the command line into frozen dataclasses.

Every limit has a default that suits one machine serving one model; ``SETTINGS_DOC`` lists each variable with its
default and meaning (the README's settings table is generated from it, and a test keeps them in step).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runtime.engine.settings import EngineSettings

ENV_PREFIX = "FLORENCE_"
DEFAULT_MODEL_IDS: tuple[str, ...] = ("microsoft-florence-2-large",)
DEFAULT_MODEL_DIR = "models/tiny"
MiB = 1024 * 1024


class SettingsError(ValueError):
    """A setting (environment variable or flag) we cannot use. Raised at startup only, never answered over HTTP."""


@dataclass(frozen=True)
class ModelSpec:
    """One model folder and the ids callers may use for it (``ID[,ID...]=DIR`` on the command line)."""

    ids: tuple[str, ...]
    path: Path

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        ids_text, sep, path_text = text.partition("=")
        ids = tuple(part.strip() for part in ids_text.split(",") if part.strip())
        if not sep or not ids or not path_text.strip():
            raise SettingsError(
                f"model {text!r} is not ID[,ID...]=MODEL_DIR (e.g. microsoft-florence-2-large=models/tiny)"
            )
        return cls(ids=ids, path=Path(path_text.strip()))


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 16 * MiB
    invocation_timeout_s: float = 60.0
    max_concurrent: int = 16
    max_queued: int = 64
    retry_after_s: float = 1.0
    max_new_tokens: int = 1024
    max_num_beams: int = 4
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0


@dataclass(frozen=True)
class MediaSettings:
    max_image_bytes: int = 10 * MiB
    max_image_pixels: int = 40_000_000
    connect_timeout_s: float = 5.0
    fetch_timeout_s: float = 20.0
    max_redirects: int = 5
    # Networks the SSRF guard lets through (e.g. 127.0.0.0/8 for a local image server); empty: public only.
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    functions_dir: Path = Path("functions")
    reload: bool = False
    drain_timeout_s: float = 30.0
    log_level: str = "info"
    # The local console at /_console: None (auto) turns it on only when `host` is a loopback address.
    console: bool | None = None


@dataclass(frozen=True)
class RaySettings:
    """Serving through Ray Serve (``--ray-replicas``): model replicas scaled apart from the HTTP ingress."""

    replicas: int = 0  # model replicas per model folder; 0 serves in this process, without Ray
    address: str = ""  # a running cluster to join (``ray start --head``'s address); empty starts a local one
    max_replicas: int = 0  # above ``replicas``: autoscale between the two by requests in flight
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
    ingress_replicas: int = 1
    ingress_cpus: float = 0.5
    # Logical CPUs of a local cluster; 0 counts what the deployments ask for, so Ray starts no more workers.
    cluster_cpus: int = 0
    # A request whose replica died is retried once; it waits this long for a live replica, then gets a 503.
    replica_wait_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_replicas and self.max_replicas < self.replicas:
            raise SettingsError(
                f"FLORENCE_RAY_MAX_REPLICAS={self.max_replicas} is below the {self.replicas} replicas to start with;"
                " raise it, or set it to 0 for a fixed number of replicas"
            )

    @property
    def enabled(self) -> bool:
        return self.replicas > 0


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    limits: Limits = field(default_factory=Limits)
    media: MediaSettings = field(default_factory=MediaSettings)
    ray: RaySettings = field(default_factory=RaySettings)
    models: tuple[ModelSpec, ...] = (ModelSpec(ids=DEFAULT_MODEL_IDS, path=Path(DEFAULT_MODEL_DIR)),)
    engine: EngineSettings = field(default_factory=EngineSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, dict[str, Any]] = {"server": {}, "limits": {}, "media": {}, "ray": {}}
        for var in SETTINGS_DOC:
            if var.name in env and var.section in values:
                values[var.section][var.attr] = var.parse(var.name, env[var.name])
        models = cls().models
        if env.get("FLORENCE_MODELS", "").strip():
            models = parse_models(env["FLORENCE_MODELS"].split(";"))
        limits = Limits(**values["limits"])
        return cls(
            server=ServerSettings(**values["server"]),
            limits=limits,
            media=MediaSettings(**values["media"]),
            ray=RaySettings(**values["ray"]),
            models=models,
            engine=engine_settings(env),
        )

    @property
    def effective_engine(self) -> EngineSettings:
        """The engine settings with the request bounds of ``limits`` (one source for both numbers)."""
        return replace(self.engine, max_new_tokens=self.limits.max_new_tokens, max_beams=self.limits.max_num_beams)

    def with_overrides(
        self,
        *,
        server: Mapping[str, Any] | None = None,
        models: tuple[ModelSpec, ...] | None = None,
        ray: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Command-line flags win over the environment; ``None`` values mean "not given"."""
        given = {key: value for key, value in (server or {}).items() if value is not None}
        given_ray = {key: value for key, value in (ray or {}).items() if value is not None}
        return replace(
            self,
            server=replace(self.server, **given),
            models=models or self.models,
            ray=replace(self.ray, **given_ray),
        )


ENGINE_PREFIX = "FLORENCE_ENGINE_"
# Request bounds are limits of the server; the engine is told the same numbers.
_ENGINE_FIELDS_FROM_LIMITS = {"max_new_tokens": "max_new_tokens", "max_beams": "max_num_beams"}


def engine_fields() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(EngineSettings) if f.name not in _ENGINE_FIELDS_FROM_LIMITS]


def engine_settings(env: Mapping[str, str]) -> EngineSettings:
    """EngineSettings from ``FLORENCE_ENGINE_<FIELD>`` variables; the request bounds come from Limits instead
    (``Settings.effective_engine``)."""
    known = {ENGINE_PREFIX + f.name.upper(): f for f in engine_fields()}
    unknown = sorted(key for key in env if key.startswith(ENGINE_PREFIX) and key not in known)
    if unknown:
        raise SettingsError(f"unknown engine settings {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for name, spec in known.items():
        if name in env:
            values[spec.name] = _parse_like(name, env[name], spec.default)
    try:
        return EngineSettings(**values)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _parse_like(name: str, text: str, default: Any) -> Any:
    """Parse ``text`` as the type of ``default`` (None defaults are optional booleans: auto, 1 or 0)."""
    if default is None:
        return None if text.strip().lower() in ("", "auto") else _bool(name, text)
    if isinstance(default, bool):
        return _bool(name, text)
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise SettingsError(f"{name}={text!r} is not an integer") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise SettingsError(f"{name}={text!r} is not a number") from None
    return text.strip()


def parse_models(texts: list[str]) -> tuple[ModelSpec, ...]:
    specs = [ModelSpec.parse(text) for text in texts if text.strip()]
    seen: dict[str, Path] = {}
    for spec in specs:
        for model_id in spec.ids:
            if model_id in seen and seen[model_id] != spec.path:
                raise SettingsError(f"model id {model_id!r} is given for both {seen[model_id]} and {spec.path}")
            seen[model_id] = spec.path
    return tuple(specs)


def _integer(name: str, text: str) -> int:
    try:
        return int(text.replace("_", ""))
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not an integer") from None


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a number") from None


def _positive_int(name: str, text: str) -> int:
    value = _integer(name, text)
    if value < 1:
        raise SettingsError(f"{name}={text!r} must be at least 1")
    return value


def _positive_float(name: str, text: str) -> float:
    value = _number(name, text)
    if value <= 0:
        raise SettingsError(f"{name}={text!r} must be greater than 0")
    return value


def _count(name: str, text: str) -> int:
    value = _integer(name, text)
    if value < 0:
        raise SettingsError(f"{name}={text!r} must be 0 or more")
    return value


def _amount(name: str, text: str) -> float:
    value = _number(name, text)
    if value < 0:
        raise SettingsError(f"{name}={text!r} must be 0 or more")
    return value


def _port(name: str, text: str) -> int:
    value = _positive_int(name, text)
    if value > 65535:
        raise SettingsError(f"{name}={text!r} is not a TCP port")
    return value


def _bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={text!r} is not a boolean (use 1 or 0)")


def _auto_bool(name: str, text: str) -> bool | None:
    return None if text.strip().lower() in ("", "auto") else _bool(name, text)


def _text(name: str, text: str) -> str:
    return text.strip()


def _path(name: str, text: str) -> Path:
    return Path(text.strip())


def _networks(name: str, text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for part in text.replace(";", ",").split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise SettingsError(f"{name}: {part.strip()!r} is not a network (e.g. 127.0.0.0/8)") from None
    return tuple(networks)


@dataclass(frozen=True)
class SettingDoc:
    name: str
    section: str  # server | limits | media | ray | models | engine
    attr: str
    default: str
    meaning: str
    parse: Callable[[str, str], Any] = _text


ENGINE_MEANINGS: dict[str, str] = {
    "backend": (
        "inference library: `auto` (ONNX Runtime), `onnxruntime` or `openvino` (CPU; `pip install -e .[openvino]`;"
        " needs the decoder parts that `python -m export.openvino_decoder MODEL_DIR` writes)"
    ),
    "precision": "OpenVINO inference precision: `f32` (exact) or `bf16` (CPUs with AMX or AVX-512 BF16); openvino only",
    "compile_cache_dir": "folder where OpenVINO keeps compiled graphs so later loads skip compiling; empty: off",
    "provider": "ONNX Runtime execution provider: `auto` (CUDA when there is one), `cpu` or `cuda`",
    "device_id": "GPU index, with CUDA",
    "variant": (
        "graph files to load, by transformers.js dtype: `fp32`, `fp16`, `int8`, `uint8`, `q8` (`_quantized`), `q4`,"
        " `q4f16` or `bnb4`; one for all graphs or per graph (`fp16,decoder_model_merged=q4`); a missing file is"
        " an error listing the folder's variants; `fastest`: backend, precision and variant chosen for this CPU and"
        " folder (logged)"
    ),
    "variant_fallback": "load a graph's fp32 file when the chosen variant's is missing (logged) instead of failing",
    "vision_batch_size": "images per vision-encoder run; 0: one on a CPU (saves memory, costs no time), all on a GPU",
    "prepack_weights": "pre-pack CPU MatMul weights at load: same resident memory, faster runs (decoder ~1.5x)",
    "release_memory": "give each graph run's memory back to the system: lower peak memory, encoders ~3% slower",
    "intra_op_threads": "threads inside one operator; 0 lets ONNX Runtime choose",
    "inter_op_threads": "threads across operators; 0 lets ONNX Runtime choose",
    "graph_optimization": "ONNX Runtime graph optimisation: `disable`, `basic`, `extended` or `all`",
    "io_binding": "keep the KV cache on the device between steps: `auto` (with CUDA), 1 or 0",
    "max_batch_size": "requests the engine batches together",
    "batch_wait_ms": "how long a batch waits to fill after its first request",
    "admit_while_encoding": "requests arriving while a batch encodes its images join it and share its decoding",
    "warmup": "run the graphs once at load, before the server reports ready",
}

SETTINGS_DOC: tuple[SettingDoc, ...] = (
    SettingDoc("FLORENCE_HOST", "server", "host", "127.0.0.1", "address to listen on (`--host`)"),
    SettingDoc("FLORENCE_PORT", "server", "port", "8000", "port to listen on (`--port`)", _port),
    SettingDoc(
        "FLORENCE_FUNCTIONS_DIR", "server", "functions_dir", "functions", "edge functions folder (`--functions`)", _path
    ),
    SettingDoc(
        "FLORENCE_RELOAD", "server", "reload", "0", "pick up edited functions on the next request (`--reload`)", _bool
    ),
    SettingDoc(
        "FLORENCE_DRAIN_TIMEOUT_S",
        "server",
        "drain_timeout_s",
        "30",
        "on shutdown, how long in-flight requests may finish",
        _positive_float,
    ),
    SettingDoc("FLORENCE_LOG_LEVEL", "server", "log_level", "info", "debug, info, warning or error"),
    SettingDoc(
        "FLORENCE_CONSOLE",
        "server",
        "console",
        "auto",
        "the browser console at `/_console`: `auto` (on only when the host is a loopback address), 1 (on for any"
        " address: whoever reaches the server sees its functions' logs) or 0",
        _auto_bool,
    ),
    SettingDoc(
        "FLORENCE_MODELS",
        "models",
        "models",
        "microsoft-florence-2-large=models/tiny",
        "models to load, `ID[,ID...]=DIR` separated by `;` (`--model`, repeatable)",
    ),
    SettingDoc(
        "FLORENCE_MAX_BODY_BYTES",
        "limits",
        "max_body_bytes",
        str(16 * MiB),
        "largest request body (413 above)",
        _positive_int,
    ),
    SettingDoc(
        "FLORENCE_HEADER_TIMEOUT_S",
        "limits",
        "header_timeout_s",
        "10",
        "time a client has to send a request's line and headers (the connection is closed past it)",
        _positive_float,
    ),
    SettingDoc(
        "FLORENCE_BODY_TIMEOUT_S",
        "limits",
        "body_timeout_s",
        "30",
        "time a client has to send a request's body (408 past it); no slot is held meanwhile",
        _positive_float,
    ),
    SettingDoc(
        "FLORENCE_INVOCATION_TIMEOUT_S",
        "limits",
        "invocation_timeout_s",
        "60",
        "wall time of one function invocation or completion request (408 past it)",
        _positive_float,
    ),
    SettingDoc(
        "FLORENCE_MAX_CONCURRENT",
        "limits",
        "max_concurrent",
        "16",
        "requests served at once (functions and completions)",
        _positive_int,
    ),
    SettingDoc(
        "FLORENCE_MAX_QUEUED",
        "limits",
        "max_queued",
        "64",
        "requests waiting for a slot; more are answered 429",
        _positive_int,
    ),
    SettingDoc(
        "FLORENCE_RETRY_AFTER_S", "limits", "retry_after_s", "1", "Retry-After sent with 429 and 503", _positive_float
    ),
    SettingDoc(
        "FLORENCE_MAX_NEW_TOKENS",
        "limits",
        "max_new_tokens",
        "1024",
        "largest `max_tokens` a request may ask for",
        _positive_int,
    ),
    SettingDoc(
        "FLORENCE_MAX_NUM_BEAMS",
        "limits",
        "max_num_beams",
        "4",
        "largest `num_beams` a request may ask for",
        _positive_int,
    ),
    SettingDoc(
        "FLORENCE_MAX_IMAGE_BYTES",
        "media",
        "max_image_bytes",
        str(10 * MiB),
        "largest image, fetched or `data:` (413 above)",
        _positive_int,
    ),
    SettingDoc(
        "FLORENCE_MAX_IMAGE_PIXELS",
        "media",
        "max_image_pixels",
        "40000000",
        "largest width x height decoded (413 above)",
        _positive_int,
    ),
    SettingDoc(
        "FLORENCE_IMAGE_CONNECT_TIMEOUT_S",
        "media",
        "connect_timeout_s",
        "5",
        "image fetch: connect timeout",
        _positive_float,
    ),
    SettingDoc(
        "FLORENCE_IMAGE_TIMEOUT_S",
        "media",
        "fetch_timeout_s",
        "20",
        "image fetch: total timeout, redirects included",
        _positive_float,
    ),
    SettingDoc(
        "FLORENCE_IMAGE_MAX_REDIRECTS", "media", "max_redirects", "5", "image fetch: redirects followed", _positive_int
    ),
    SettingDoc(
        "FLORENCE_IMAGE_ALLOWED_NETWORKS",
        "media",
        "allowed_networks",
        "(none)",
        "CIDRs the SSRF guard lets through, comma-separated (e.g. `127.0.0.0/8` for a local image server)",
        _networks,
    ),
    SettingDoc(
        "FLORENCE_RAY_REPLICAS",
        "ray",
        "replicas",
        "0",
        "model replicas per model folder on Ray Serve (`--ray-replicas`); 0 serves in one process, without Ray",
        _count,
    ),
    SettingDoc(
        "FLORENCE_RAY_ADDRESS",
        "ray",
        "address",
        "(none)",
        "Ray cluster to join (`--ray-address`, e.g. `10.0.0.5:6379`); none starts a local cluster",
    ),
    SettingDoc(
        "FLORENCE_RAY_MAX_REPLICAS",
        "ray",
        "max_replicas",
        "0",
        "above `FLORENCE_RAY_REPLICAS`: autoscale model replicas between the two by requests in flight",
        _count,
    ),
    SettingDoc("FLORENCE_RAY_REPLICA_CPUS", "ray", "replica_cpus", "1", "CPUs per model replica", _amount),
    SettingDoc("FLORENCE_RAY_REPLICA_GPUS", "ray", "replica_gpus", "0", "GPUs per model replica", _amount),
    SettingDoc("FLORENCE_RAY_INGRESS_REPLICAS", "ray", "ingress_replicas", "1", "HTTP ingress replicas", _positive_int),
    SettingDoc("FLORENCE_RAY_INGRESS_CPUS", "ray", "ingress_cpus", "0.5", "CPUs per ingress replica", _amount),
    SettingDoc(
        "FLORENCE_RAY_CLUSTER_CPUS",
        "ray",
        "cluster_cpus",
        "0",
        "logical CPUs of a local Ray cluster; 0: what the deployments ask for",
        _count,
    ),
    SettingDoc(
        "FLORENCE_RAY_REPLICA_WAIT_S",
        "ray",
        "replica_wait_s",
        "10",
        "a request whose model replica died is retried once, waiting this long for a live replica (503 after)",
        _positive_float,
    ),
    *(
        SettingDoc(
            ENGINE_PREFIX + f.name.upper(),
            "engine",
            f.name,
            "auto"
            if f.default is None
            else str(f.default).lower()
            if isinstance(f.default, bool)
            else str(f.default) or "(none)",
            ENGINE_MEANINGS.get(f.name, "engine: see `EngineSettings` in runtime/engine/settings.py"),
        )
        for f in engine_fields()
    ),
)
