"""Every error the runtime can answer with, and the one place where library exceptions become ours.

Each error carries its HTTP status, an OpenAI-style ``type`` and a stable machine ``code``; the HTTP layer turns
any of them into the one envelope ``{"error": {"message", "type", "code", "param"}}``. Messages say what was
wrong and how to fix it; they never include secrets or tracebacks.

    RuntimeErrorBase (500 internal_error)
    ├── InvalidRequest (400 invalid_request)
    │   ├── SchemaViolation (400 invalid_payload)          payload does not match the request schema
    │   ├── InvalidTaskInput (400 invalid_task_input)      unknown tag, input on a no-input tag, bad region ...
    │   ├── InvalidImage (400 invalid_image)               undecodable bytes, bad data: URL, bad base64
    │   ├── UnsupportedMediaType (415 unsupported_media_type)   image format or content type we do not accept
    │   ├── UnsupportedUrl (400 unsupported_url)           scheme other than http, https, data
    │   ├── ForbiddenAddress (400 forbidden_address)       SSRF guard: private, loopback, link-local ...
    │   ├── ImageFetchFailed (400 image_fetch_failed)      upstream status, DNS failure, too many redirects
    │   └── StreamNotSupported (400 stream_not_supported)  stream requested for a structured task
    ├── PayloadTooLarge (413 payload_too_large)            body, data: URL, image bytes or pixels over a limit
    ├── NotFound (404 not_found)
    │   ├── ModelNotFound (404 model_not_found)
    │   └── FunctionNotFound (404 function_not_found)
    ├── MethodNotAllowed (405 method_not_allowed)          a route called with a method it does not take
    ├── RequestTimeout (408 timeout)                       image fetch or invocation past its deadline
    ├── Overloaded (429 overloaded)                        queue full; carries Retry-After
    ├── Unavailable (503 unavailable)                      not ready yet, or draining; carries Retry-After
    ├── FunctionFailed (500 function_error)                a user function raised or failed to import
    ├── InferenceFailed (500 inference_error)              the model session raised
    ├── ModelLoadFailed (500 model_load_error)             model folder lacks a file, or holds a config we cannot serve
    └── UpstreamTimeout (504 image_fetch_timeout)          the image server did not answer in time
"""

from __future__ import annotations

import binascii
import sys
from typing import Any, ClassVar, Literal


class RuntimeErrorBase(Exception):
    """Base of every error the runtime answers with. Subclasses set status, type and code."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        # Imported here: runtime.untrusted raises errors of this module. Whatever a message quotes, the envelope
        # can always be encoded and stays bounded.
        from runtime.untrusted import MAX_PARAM_CHARS, for_envelope

        param = None if self.param is None else for_envelope(self.param, MAX_PARAM_CHARS)
        return {"error": {"message": for_envelope(self.message), "type": self.type, "code": self.code, "param": param}}

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class InvalidRequest(RuntimeErrorBase):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class SchemaViolation(InvalidRequest):
    code = "invalid_payload"


class InvalidTaskInput(InvalidRequest):
    code = "invalid_task_input"


class InvalidImage(InvalidRequest):
    code = "invalid_image"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    code = "unsupported_media_type"


class UnsupportedUrl(InvalidRequest):
    code = "unsupported_url"


class ForbiddenAddress(InvalidRequest):
    code = "forbidden_address"


class ImageFetchFailed(InvalidRequest):
    code = "image_fetch_failed"


class StreamNotSupported(InvalidRequest):
    code = "stream_not_supported"


class PayloadTooLarge(RuntimeErrorBase):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class NotFound(RuntimeErrorBase):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class FunctionNotFound(NotFound):
    code = "function_not_found"


class MethodNotAllowed(RuntimeErrorBase):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(RuntimeErrorBase):
    status = 408
    type = "timeout_error"
    code = "timeout"


class Overloaded(RuntimeErrorBase):
    status = 429
    type = "overloaded_error"
    code = "overloaded"


class Unavailable(RuntimeErrorBase):
    status = 503
    type = "unavailable_error"
    code = "unavailable"


class FunctionFailed(RuntimeErrorBase):
    code = "function_error"


class InferenceFailed(RuntimeErrorBase):
    code = "inference_error"


class ModelLoadFailed(RuntimeErrorBase):
    code = "model_load_error"


class UpstreamTimeout(RuntimeErrorBase):
    status = 504
    type = "timeout_error"
    code = "image_fetch_timeout"


Stage = Literal["image_fetch", "image_decode", "invocation"]  # request bodies: runtime.untrusted.parse_json


def translate(exc: BaseException, *, stage: Stage) -> RuntimeErrorBase:
    """Map a library's exception raised during ``stage`` to ours; anything unforeseen is a 500 (our bug).

    Libraries are looked up in ``sys.modules`` instead of imported: if one is not loaded, nothing raised its errors.
    """
    if isinstance(exc, RuntimeErrorBase):
        return exc
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError and aiohttp's timeouts too
        if stage == "image_fetch":
            return UpstreamTimeout("the image server did not answer in time; try again or use another URL")
        return RequestTimeout("the request ran past its time limit")
    aiohttp = sys.modules.get("aiohttp")
    if stage == "image_fetch" and aiohttp is not None:
        if isinstance(exc, aiohttp.InvalidURL):
            return UnsupportedUrl(f"the image URL is not a valid URL: {exc}")
        if isinstance(exc, aiohttp.ClientResponseError):
            return ImageFetchFailed(f"the image server answered {exc.status} {exc.message}")
        if isinstance(exc, aiohttp.ClientError):
            return ImageFetchFailed(f"could not fetch the image ({type(exc).__name__}: {exc})")
    pil_image = sys.modules.get("PIL.Image")
    if pil_image is not None and isinstance(exc, pil_image.DecompressionBombError):
        return PayloadTooLarge(f"the image has too many pixels: {exc}")
    if stage == "image_decode":
        if isinstance(exc, binascii.Error):
            return InvalidImage(f"the data: URL is not valid base64 ({exc})")
        if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):
            return InvalidImage(f"the image could not be decoded; it is damaged or truncated ({exc})")
    return RuntimeErrorBase("internal error; the server log has the details")
