"""The one exception type that the command line turns into a single clear line."""
from __future__ import annotations

import importlib.util


class UserError(Exception):
    """A problem the user can fix (bad path, bad value, missing file); printed as one line, exit 2.

    The message is kept to one line whatever it quotes: line breaks and other control characters a user typed
    (or a file name holds) are shown escaped (``\\n``), so ``error: …`` is always exactly one line."""

    def __init__(self, message: object = "") -> None:
        text = str(message)
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            text = "".join(c if ord(c) >= 32 and ord(c) != 127 else repr(c)[1:-1] for c in text)
        super().__init__(text)


class Conflict(UserError):
    """A request the station's state refuses as it stands (a recipe of the station file, the active recipe): the web
    API answers 409 with the one line; the command line treats it as any UserError."""


class UserErrors(UserError):
    """Several problems found at once in one file checked whole (a station file): ``lines`` holds one line per
    problem, each ``WHERE: key.path: what is wrong``; the command line prints one ``error:`` line for each."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.lines = [str(UserError(f"{where}: {p}")) for p in problems]
        super().__init__(self.lines[0] if len(self.lines) == 1 else
                         f"{self.lines[0]} (and {len(self.lines) - 1} more)")


def need_train(command: str) -> None:
    """One line, exit 2, when a command needs the training install (torch) and this is the runtime install."""
    missing = [m for m in ("torch", "torchvision") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"edge-stpm {command} needs the training install ({', '.join(missing)} missing): "
                        "pip install \"edge-stpm[train]\"")
