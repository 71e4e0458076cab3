"""Request bodies that may be large (a bundle upload): streamed to disk under a cap, never held in memory."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

RECIPE_BODY = 4 * 1024  # bytes: a new or changed recipe (a name, an index, a recipe to copy)


async def body_to_file(request: Any, folder: Path, cap: int) -> Path:
    """Stream the request body into a temporary file in ``folder``; over ``cap`` bytes → 413 and nothing left behind.
    The caller removes the file."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".zip", dir=folder)
    path, size = Path(name), 0
    try:
        with open(fd, "wb") as f:
            async for chunk in request.content.iter_chunked(256 * 1024):
                size += len(chunk)
                if size > cap:
                    raise web.HTTPRequestEntityTooLarge(max_size=cap, actual_size=size)
                f.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
