"""Request paths: the one normalisation the gateway and every service apply before routing.

A path is routed only when it has exactly one reading, whoever decodes it and however often. A
percent-escape may stand for an ordinary character (`%41` is `A`, `%C3%A9` is `é`), never for one
that changes the path's structure or meaning on a later hop: a dot (`%2e%2e` would become `..` where
the path is decoded and then resolved), a slash, a backslash, a percent sign (a second decoding would
read `%252e` as `%2e`) or a control character. Dot segments are refused rather than resolved (httpx,
and many proxies, resolve them on the way out: the path matched would not be the path sent), and so
are malformed escapes, raw bytes outside printable ASCII, and escapes that do not decode as UTF-8.

What is left decodes to one string, the normalised path. The gateway matches its routes on it and
forwards it, encoded one canonical way (`encode_path`), so no hop behind it reads a different path.
The services check the path again (`cloudshop.web.PathGuard`), which is the check that holds in the
cloud, where API Gateway hands the raw path on.
"""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import quote

from cloudshop.errors import BadRequest

# Ids in paths: opaque, 1 to 64 characters of a URL-safe alphabet, which every id cloudshop mints
# fits (uuids, `ord_…`, `pay_…`); `cloudshop.web.ResourceId` holds path parameters to it.
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
ID_MAX = 64
# Longer paths are no path of this API (its longest template with 64-character ids is ~100 bytes).
MAX_PATH_BYTES = 2048

_HEX = frozenset(b"0123456789abcdefABCDEF")
# Escapes that would change the structure or the meaning of the path on a later hop.
_REFUSED_ESCAPES = frozenset({ord("."), ord("/"), ord("\\"), ord("%"), 0x7F, *range(0x20)})
# What `encode_path` leaves as it is: RFC 3986 `pchar` and the slash, minus the percent sign.
_PATH_SAFE = "/-._~!$&'()*+,;=:@"


class BadPath(BadRequest):
    title, slug = "Bad path", "bad-path"


def normalise_path(raw: bytes) -> str:
    """The one reading of a raw request path (the request target before `?`), else `BadPath`."""
    if len(raw) > MAX_PATH_BYTES:
        raise BadPath(f"The path is longer than {MAX_PATH_BYTES} bytes.")
    if not raw.startswith(b"/"):
        raise BadPath("The path must start with '/'.")
    decoded = bytearray()
    index = 0
    while index < len(raw):
        byte = raw[index]
        if byte == 0x25:  # "%"
            pair = raw[index + 1 : index + 3]
            if len(pair) != 2 or not _HEX.issuperset(pair):
                raise BadPath("The path holds a malformed percent-escape.")
            value = int(pair, 16)
            if value in _REFUSED_ESCAPES:
                raise BadPath("The path encodes a dot, a slash, a backslash, a percent sign or a control character.")
            decoded.append(value)
            index += 3
            continue
        if byte <= 0x20 or byte >= 0x7F or byte == 0x5C:
            raise BadPath("The path holds a space, a control character, a backslash or a byte that is not ASCII.")
        decoded.append(byte)
        index += 1
    try:
        path = decoded.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadPath("The path is not valid UTF-8.") from exc
    return check_decoded_path(path)


def check_decoded_path(path: str) -> str:
    """The checks that still apply to a path already decoded (by a server that kept no raw bytes)."""
    if not path.startswith("/"):
        raise BadPath("The path must start with '/'.")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BadPath(f"The path is longer than {MAX_PATH_BYTES} bytes.")
    if "\\" in path or "\ufffd" in path or any(unicodedata.category(c) in ("Cc", "Cs") for c in path):
        raise BadPath("The path holds a control character, a backslash or bytes that are not UTF-8.")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise BadPath("The path holds a dot segment.")
    return path


def encode_path(path: str) -> bytes:
    """The canonical raw form of a normalised path: what the gateway sends on."""
    return quote(path, safe=_PATH_SAFE).encode("ascii")


def request_path(scope: dict[str, Any]) -> str:
    """The normalised path of an ASGI request, from the raw bytes wherever the server kept them.

    uvicorn keeps them in `raw_path`; Mangum does not, but API Gateway's event (`aws.event`) carries
    the path as it arrived (`rawPath`, payload 2.0). Only without either is the decoded path checked.
    """
    raw = scope.get("raw_path")
    if raw is None:
        event = scope.get("aws.event")
        raw_path = event.get("rawPath") if isinstance(event, dict) else None
        if isinstance(raw_path, str):
            raw = raw_path.encode("utf-8", "surrogateescape")
    if raw is not None:
        return normalise_path(bytes(raw))
    return check_decoded_path(str(scope.get("path", "")))
