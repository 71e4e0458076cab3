"""Secrets out of what is shown, stored or published: a source spec such as ``rtsp://admin:pw@10.0.0.5/stream``
keeps its user and host but never its password (``rtsp://admin:***@10.0.0.5/stream``), and a secret-looking query
value (``token=``, ``access_token=``, ``api_key=``, ``password=``, ``session=`` …) is masked. One function, used
wherever a spec or an error line leaves the process (``/healthz``, status, the health page, the record, MQTT, log
lines)."""
from __future__ import annotations

import re

MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_QUERY = re.compile(r"(?P<key>[?&;]\w*(?:token|secret|passw\w*|pass|pwd|session|key|auth)\w*=)[^&#\s]*", re.IGNORECASE)


def _userinfo(url: str) -> str:
    """``url`` (after its scheme, up to whitespace) with the password of its user info masked: the user info ends at
    the last ``@`` before any ``?`` or ``#`` (a password may hold ``/``, ``:`` or ``@``)."""
    end = min([i for i in (url.find("?"), url.find("#")) if i >= 0] or [len(url)])
    at = url.rfind("@", 0, end)
    if at < 0 or ":" not in url[:at]:
        return url
    user = url[: url.index(":")]
    return f"{user}:{MASK}{url[at:]}"


def redact(text: str) -> str:
    """``text`` with every URL password and secret-looking query value replaced by ``***``."""
    if not text:
        return text
    out, pos = [], 0
    s = str(text)
    for m in _SCHEME.finditer(s):
        if m.start() < pos:
            continue
        end = m.end()
        while end < len(s) and not s[end].isspace():
            end += 1
        out.append(s[pos : m.end()] + _userinfo(s[m.end() : end]))
        pos = end
    out.append(s[pos:])
    return _QUERY.sub(lambda q: f"{q['key']}{MASK}", "".join(out))
