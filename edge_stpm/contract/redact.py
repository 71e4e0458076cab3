"""Secrets out of what is shown, stored or published: a source spec such as ``rtsp://admin:pw@10.0.0.5/stream``
keeps its user and host but never its password (``rtsp://admin:***@10.0.0.5/stream``), and a ``token=`` /
``password=`` / ``session=`` query value is masked. One function, used wherever a spec or an error line leaves the
process (``/healthz``, status, the health page, the record, MQTT, log lines)."""
from __future__ import annotations

import re

MASK = "***"
# scheme://user:password@host — the password is anything up to the last '@' before the host part
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^\s/]*)@")
_QUERY = re.compile(r"(?P<key>[?&;](?:token|password|passwd|pass|pwd|session|secret|key|auth)=)[^&#\s]*",
                    re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every URL password and secret-looking query value replaced by ``***``."""
    if not text:
        return text
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", str(text))
    return _QUERY.sub(lambda m: f"{m['key']}{MASK}", out)
