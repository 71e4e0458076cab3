"""What the authentication layer (``server.Guard``) learns of a request and leaves on it for the handlers: typed
request keys (aiohttp's ``web.RequestKey``), one place for their names."""
from __future__ import annotations

from typing import Optional

from aiohttp import web

ROLE = web.RequestKey[Optional[str]]("role")  # viewer / operator / engineer; None on a public route without a login
WHO = web.RequestKey[str]("who")  # "ROLE@CLIENT", as audited
CLIENT = web.RequestKey[str]("client")  # the client's address (through a trusted proxy: the forwarded one)
SIGNED_UNTIL = web.RequestKey[int]("signed_until")  # a signed picture URL's expiry: a stream it opened ends with it
