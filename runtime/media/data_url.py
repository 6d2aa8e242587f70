"""``data:`` URLs (RFC 2397): the media type and the decoded bytes, size-capped before decoding."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_to_bytes

from runtime.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType, translate
from runtime.media.formats import ACCEPTED_CONTENT_TYPES, UNTYPED_CONTENT_TYPES, describe_accepted
from runtime.untrusted import quote


def decode_data_url(url: str, max_bytes: int) -> bytes:
    header, comma, payload = url.partition(",")
    if not header.lower().startswith("data:") or not comma:
        raise InvalidImage("the data: URL has no comma; expected data:image/png;base64,<data>")
    params = [part.strip() for part in header[len("data:") :].split(";")]
    media_type = params[0].lower()
    is_base64 = any(part.lower() == "base64" for part in params[1:])
    if media_type not in ACCEPTED_CONTENT_TYPES and media_type not in UNTYPED_CONTENT_TYPES:
        raise UnsupportedMediaType(f"the data: URL holds {quote(media_type)}; expected {describe_accepted()}")
    # base64 grows data by 4/3: refuse what cannot fit before spending time and memory on decoding it.
    estimated = len(payload) * 3 // 4 if is_base64 else len(payload)
    if estimated > max_bytes:
        raise PayloadTooLarge(f"the data: URL image is over {max_bytes} bytes, the limit (FLORENCE_MAX_IMAGE_BYTES)")
    try:
        if is_base64:
            compact = "".join(unquote_to_bytes(payload).decode("ascii").split())
            return base64.b64decode(compact, validate=True)
        return unquote_to_bytes(payload)
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise translate(binascii.Error(str(exc)), stage="image_decode") from exc
