"""Who may use the web app: one-time login links, sessions and CSRF tokens.

The daemon hands a login link only to a caller holding the API token (`mercato
ui` asks for one over the control API). The link's code works once, within
``LINK_TTL_S``; exchanged, it becomes a session: a random id in an HttpOnly,
SameSite=Strict cookie, and a CSRF token the pages put in every form. Sessions
live in memory: a restarted daemon forgets them, and `mercato ui` gives a new
link. Everything compares in constant time.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

LINK_TTL_S = 300.0
SESSION_IDLE_S = 12 * 3600.0
MAX_SESSIONS = 64  # the oldest goes first: a login loop cannot grow memory
MAX_CODES = 64
COOKIE = "mercato_session"


@dataclass
class Session:
    id: str
    csrf: str
    created: float = field(default_factory=time.time)
    seen: float = field(default_factory=time.time)

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class Sessions:
    """Login codes and sessions of one daemon run. Not thread-safe: trio loop only."""

    def __init__(self) -> None:
        self._codes: dict[str, float] = {}
        self._sessions: dict[str, Session] = {}

    def new_code(self) -> str:
        """A login code that works once, for ``LINK_TTL_S`` seconds."""
        now = time.time()
        self._codes = {c: t for c, t in self._codes.items() if t > now}
        while len(self._codes) >= MAX_CODES:
            self._codes.pop(next(iter(self._codes)))
        code = secrets.token_urlsafe(24)
        self._codes[code] = now + LINK_TTL_S
        return code

    def exchange(self, code: str) -> Session | None:
        """The new session for ``code``, or None if it is unknown, used or expired."""
        found = None
        for known in list(self._codes):
            if hmac.compare_digest(known.encode(), code.encode()):
                found = known
        if found is None:
            return None
        expires = self._codes.pop(found)
        if expires < time.time():
            return None
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session with this id; None if unknown or idle too long."""
        session = self._sessions.get(session_id)
        if session is None or not hmac.compare_digest(session.id.encode(), session_id.encode()):
            return None
        now = time.time()
        if now - session.seen > SESSION_IDLE_S:
            del self._sessions[session_id]
            return None
        session.seen = now
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
