"""Settings, read once from the environment (``FLORENCE_*``) and the command line into frozen dataclasses.

Every setting is written once, as a dataclass field whose metadata (``setting(...)``) carries its variable, its
meaning and its parser; ``Settings.from_env`` reads them and ``SETTINGS_DOC`` (the table ``python -m runtime
settings`` prints, which the README's settings table is) is derived from them, defaults included. Engine fields are
read generically as ``FLORENCE_ENGINE_<FIELD>``, parsed by the type of their default, with their meaning in
``ENGINE_MEANINGS``: a new engine field needs only its dataclass field and one line there.

Every limit has a default that suits one machine serving one model.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runtime.engine.settings import EngineSettings

ENV_PREFIX = "FLORENCE_"
DEFAULT_MODEL_IDS: tuple[str, ...] = ("microsoft-florence-2-large",)
DEFAULT_MODEL_DIR = "models/tiny"
MiB = 1024 * 1024

Parser = Callable[[str, str], Any]  # (variable name, its text) -> value; raises SettingsError


class SettingsError(ValueError):
    """A setting (environment variable or flag) we cannot use. Raised at startup only, never answered over HTTP."""


# Parsers: each says what is wrong with a value, naming the variable.


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


def _at_least(read: Parser, lower: float, *, strictly: bool = False, says: str) -> Parser:
    """A parser that reads with ``read`` and refuses values under ``lower`` (or equal to it, ``strictly``)."""

    def parse(name: str, text: str) -> Any:
        value = read(name, text)
        if value < lower or (strictly and value == lower):
            raise SettingsError(f"{name}={text!r} must be {says}")
        return value

    return parse


_positive_int = _at_least(_integer, 1, says="at least 1")
_positive_float = _at_least(_number, 0, strictly=True, says="greater than 0")
_count = _at_least(_integer, 0, says="0 or more")
_amount = _at_least(_number, 0, says="0 or more")


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


# Field metadata: the one place a setting's variable, meaning and parser are written.

SETTING = "florence.setting"


@dataclass(frozen=True)
class Setting:
    env: str
    meaning: str
    parse: Parser = _text


def setting(env: str, meaning: str, parse: Parser = _text) -> dict[str, Setting]:
    """``field(metadata=...)`` of a setting read from ``env``."""
    return {SETTING: Setting(env, meaning, parse)}


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

    def __str__(self) -> str:
        return f"{','.join(self.ids)}={self.path}"


DEFAULT_MODELS: tuple[ModelSpec, ...] = (ModelSpec(ids=DEFAULT_MODEL_IDS, path=Path(DEFAULT_MODEL_DIR)),)


def parse_models(texts: list[str]) -> tuple[ModelSpec, ...]:
    specs = [ModelSpec.parse(text) for text in texts if text.strip()]
    seen: dict[str, Path] = {}
    for spec in specs:
        for model_id in spec.ids:
            if model_id in seen and seen[model_id] != spec.path:
                raise SettingsError(f"model id {model_id!r} is given for both {seen[model_id]} and {spec.path}")
            seen[model_id] = spec.path
    return tuple(specs)


def _models(name: str, text: str) -> tuple[ModelSpec, ...]:
    return parse_models(text.split(";")) if text.strip() else DEFAULT_MODELS


@dataclass(frozen=True)
class ServerSettings:
    host: str = field(default="127.0.0.1", metadata=setting("FLORENCE_HOST", "address to listen on (`--host`)"))
    port: int = field(default=8000, metadata=setting("FLORENCE_PORT", "port to listen on (`--port`)", _port))
    functions_dir: Path = field(
        default=Path("functions"),
        metadata=setting("FLORENCE_FUNCTIONS_DIR", "edge functions folder (`--functions`)", _path),
    )
    reload: bool = field(
        default=False,
        metadata=setting("FLORENCE_RELOAD", "pick up edited functions on the next request (`--reload`)", _bool),
    )
    drain_timeout_s: float = field(
        default=30.0,
        metadata=setting(
            "FLORENCE_DRAIN_TIMEOUT_S", "on shutdown, how long in-flight requests may finish", _positive_float
        ),
    )
    log_level: str = field(default="info", metadata=setting("FLORENCE_LOG_LEVEL", "debug, info, warning or error"))
    # The local console at /_console: None (auto) turns it on only when `host` is a loopback address.
    console: bool | None = field(
        default=None,
        metadata=setting(
            "FLORENCE_CONSOLE",
            "the browser console at `/_console`: `auto` (on only when the host is a loopback address), 1 (on for any"
            " address: whoever reaches the server sees its functions' logs) or 0",
            _auto_bool,
        ),
    )


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = field(
        default=16 * MiB, metadata=setting("FLORENCE_MAX_BODY_BYTES", "largest request body (413 above)", _positive_int)
    )
    header_timeout_s: float = field(
        default=10.0,
        metadata=setting(
            "FLORENCE_HEADER_TIMEOUT_S",
            "time a client has to send a request's line and headers (the connection is closed past it)",
            _positive_float,
        ),
    )
    body_timeout_s: float = field(
        default=30.0,
        metadata=setting(
            "FLORENCE_BODY_TIMEOUT_S",
            "time a client has to send a request's body (408 past it); no slot is held meanwhile",
            _positive_float,
        ),
    )
    invocation_timeout_s: float = field(
        default=60.0,
        metadata=setting(
            "FLORENCE_INVOCATION_TIMEOUT_S",
            "wall time of one function invocation or completion request (408 past it)",
            _positive_float,
        ),
    )
    max_concurrent: int = field(
        default=16,
        metadata=setting(
            "FLORENCE_MAX_CONCURRENT", "requests served at once (functions and completions)", _positive_int
        ),
    )
    max_queued: int = field(
        default=64,
        metadata=setting("FLORENCE_MAX_QUEUED", "requests waiting for a slot; more are answered 429", _positive_int),
    )
    retry_after_s: float = field(
        default=1.0, metadata=setting("FLORENCE_RETRY_AFTER_S", "Retry-After sent with 429 and 503", _positive_float)
    )
    max_new_tokens: int = field(
        default=1024,
        metadata=setting("FLORENCE_MAX_NEW_TOKENS", "largest `max_tokens` a request may ask for", _positive_int),
    )
    max_num_beams: int = field(
        default=4,
        metadata=setting("FLORENCE_MAX_NUM_BEAMS", "largest `num_beams` a request may ask for", _positive_int),
    )


@dataclass(frozen=True)
class MediaSettings:
    max_image_bytes: int = field(
        default=10 * MiB,
        metadata=setting("FLORENCE_MAX_IMAGE_BYTES", "largest image, fetched or `data:` (413 above)", _positive_int),
    )
    max_image_pixels: int = field(
        default=40_000_000,
        metadata=setting("FLORENCE_MAX_IMAGE_PIXELS", "largest width x height decoded (413 above)", _positive_int),
    )
    connect_timeout_s: float = field(
        default=5.0,
        metadata=setting("FLORENCE_IMAGE_CONNECT_TIMEOUT_S", "image fetch: connect timeout", _positive_float),
    )
    fetch_timeout_s: float = field(
        default=20.0,
        metadata=setting("FLORENCE_IMAGE_TIMEOUT_S", "image fetch: total timeout, redirects included", _positive_float),
    )
    max_redirects: int = field(
        default=5, metadata=setting("FLORENCE_IMAGE_MAX_REDIRECTS", "image fetch: redirects followed", _positive_int)
    )
    # Networks the SSRF guard lets through (e.g. 127.0.0.0/8 for a local image server); empty: public only.
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(),
        metadata=setting(
            "FLORENCE_IMAGE_ALLOWED_NETWORKS",
            "CIDRs the SSRF guard lets through, comma-separated (e.g. `127.0.0.0/8` for a local image server)",
            _networks,
        ),
    )


@dataclass(frozen=True)
class RaySettings:
    """Serving through Ray Serve (``--ray-replicas``): model replicas scaled apart from the HTTP ingress."""

    replicas: int = field(
        default=0,
        metadata=setting(
            "FLORENCE_RAY_REPLICAS",
            "model replicas per model folder on Ray Serve (`--ray-replicas`); 0 serves in one process, without Ray",
            _count,
        ),
    )
    address: str = field(
        default="",
        metadata=setting(
            "FLORENCE_RAY_ADDRESS",
            "Ray cluster to join (`--ray-address`, e.g. `10.0.0.5:6379`); none starts a local cluster",
        ),
    )
    max_replicas: int = field(
        default=0,
        metadata=setting(
            "FLORENCE_RAY_MAX_REPLICAS",
            "above `FLORENCE_RAY_REPLICAS`: autoscale model replicas between the two by requests in flight",
            _count,
        ),
    )
    replica_cpus: float = field(
        default=1.0, metadata=setting("FLORENCE_RAY_REPLICA_CPUS", "CPUs per model replica", _amount)
    )
    replica_gpus: float = field(
        default=0.0, metadata=setting("FLORENCE_RAY_REPLICA_GPUS", "GPUs per model replica", _amount)
    )
    ingress_replicas: int = field(
        default=1, metadata=setting("FLORENCE_RAY_INGRESS_REPLICAS", "HTTP ingress replicas", _positive_int)
    )
    ingress_cpus: float = field(
        default=0.5, metadata=setting("FLORENCE_RAY_INGRESS_CPUS", "CPUs per ingress replica", _amount)
    )
    cluster_cpus: int = field(
        default=0,
        metadata=setting(
            "FLORENCE_RAY_CLUSTER_CPUS", "logical CPUs of a local Ray cluster; 0: what the deployments ask for", _count
        ),
    )
    replica_wait_s: float = field(
        default=10.0,
        metadata=setting(
            "FLORENCE_RAY_REPLICA_WAIT_S",
            "a request whose model replica died is retried once, waiting this long for a live replica (503 after)",
            _positive_float,
        ),
    )

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
    models: tuple[ModelSpec, ...] = field(
        default=DEFAULT_MODELS,
        metadata=setting(
            "FLORENCE_MODELS", "models to load, `ID[,ID...]=DIR` separated by `;` (`--model`, repeatable)", _models
        ),
    )
    limits: Limits = field(default_factory=Limits)
    media: MediaSettings = field(default_factory=MediaSettings)
    ray: RaySettings = field(default_factory=RaySettings)
    engine: EngineSettings = field(default_factory=EngineSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return _read(cls, env)

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


def _read(cls: type[Any], env: Mapping[str, str]) -> Any:
    """An instance of settings dataclass ``cls`` from ``env``: each field with a setting parsed from its variable
    when set, each section (a settings dataclass) read the same way, the engine's generically."""
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):
        if SETTING in spec.metadata:
            doc: Setting = spec.metadata[SETTING]
            if doc.env in env:
                values[spec.name] = doc.parse(doc.env, env[doc.env])
        elif spec.type in ("EngineSettings", EngineSettings):
            values[spec.name] = engine_settings(env)
        elif _is_section(spec):
            values[spec.name] = _read(spec.default_factory, env)  # type: ignore[misc]
    return cls(**values)


def _is_section(spec: dataclasses.Field[Any]) -> bool:
    factory = spec.default_factory
    return factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory)


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
        return _auto_bool(name, text)
    if isinstance(default, bool):
        return _bool(name, text)
    if isinstance(default, int):
        return _integer(name, text)
    if isinstance(default, float):
        return _number(name, text)
    return _text(name, text)


# The documentation of every setting, derived from the fields above.


@dataclass(frozen=True)
class SettingDoc:
    name: str
    section: str  # server | limits | media | ray | models | engine
    attr: str
    default: str
    meaning: str
    parse: Parser = _text


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


def shown(value: Any) -> str:
    """A default as the settings table shows it: as one would write it in the variable."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ";".join(str(item) for item in value) or "(none)"
    return str(value) or "(none)"


def _engine_shown(value: Any) -> str:
    if value is None:
        return "auto"
    return str(value).lower() if isinstance(value, bool) else str(value) or "(none)"


def _docs(cls: type[Any], section: str) -> Iterator[SettingDoc]:
    for spec in dataclasses.fields(cls):
        if SETTING in spec.metadata:
            doc: Setting = spec.metadata[SETTING]
            default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[misc]
            yield SettingDoc(doc.env, section or spec.name, spec.name, shown(default), doc.meaning, doc.parse)
        elif spec.type in ("EngineSettings", EngineSettings):
            yield from (
                SettingDoc(
                    ENGINE_PREFIX + f.name.upper(),
                    "engine",
                    f.name,
                    _engine_shown(f.default),
                    ENGINE_MEANINGS.get(f.name, "engine: see `EngineSettings` in runtime/engine/settings.py"),
                    lambda name, text, default=f.default: _parse_like(name, text, default),
                )
                for f in engine_fields()
            )
        elif _is_section(spec):
            yield from _docs(spec.default_factory, spec.name)  # type: ignore[arg-type]


SETTINGS_DOC: tuple[SettingDoc, ...] = tuple(_docs(Settings, ""))
