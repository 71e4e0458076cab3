"""``edge-stpm deploy`` / ``rollback`` / ``models``: a running station's HTTP API called from a workstation (urllib;
the engineer token in the Authorization header). Every failure is one UserError with the station's own answer."""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from edge_stpm.common.errors import UserError


def call(station: str, path: str, query: dict[str, str], token: str | None, data: bytes | None = None,
         timeout: float = 300.0, ca: Path | None = None) -> Any:
    """POST (with ``data``, or empty) or GET ``station``/``path`` → the JSON answer; an https:// station checked
    against ``ca`` (a file) or the system's CAs."""
    base = station.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UserError(f"--station {station!r}: give the station's URL, e.g. http://10.0.0.5:8080")
    parsed = urllib.parse.urlparse(base)
    if not parsed.hostname or (parsed.port is not None and not 1 <= parsed.port <= 65535):
        raise UserError(f"--station {station!r}: not a URL with a host (and a port 1–65535)")
    url = f"{base}/{path}?" + urllib.parse.urlencode(query)
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/zip"} if data else {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        context = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"--ca {ca}: not a CA file ({exc})") from None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return json.loads(resp.read().decode())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace").strip().splitlines()
        raise UserError(f"the station refused ({exc.code}): {text[0] if text else exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"cannot reach the station at {base}: {getattr(exc, 'reason', exc)}") from None
