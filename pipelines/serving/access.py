"""Who may use the search service: a bearer token when one is set, else this machine.

With a token, every data route needs it (``Authorization: Bearer <token>``). The page's
``<img>`` and ``<video>`` elements cannot send a header, so the media routes
(thumbnails, video bytes, captions) also take it from the ``vtr_token`` cookie the page
sets, with ``SameSite=Strict`` so that no other site's page sends it; the routes that
search never take the cookie, so another site cannot make a browser search.

With no token, the service answers requests from this machine's loopback addresses
only, unless started with ``allow_remote``: a search service reachable from a network
then needs a decision, not a default. The client address is the one the connection
comes from; ``X-Forwarded-For`` is not trusted (anyone can send it), so behind a
team's proxy the service needs a token.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass

#: the environment variable a token may come from instead of the command line
TOKEN_ENV = "VTR_SEARCH_TOKEN"
#: the cookie the page keeps the token in for its media requests
TOKEN_COOKIE = "vtr_token"


class Refused(Exception):
    """A request the door does not let in: its HTTP status and a one-line reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def is_loopback(client: str | None) -> bool:
    """Whether a peer address is this machine's loopback (127.0.0.0/8, ::1)."""
    try:
        return client is not None and ipaddress.ip_address(client).is_loopback
    except ValueError:  # not an address (a test client's name, a Unix socket)
        return False


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None for none)."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@dataclass(frozen=True)
class Door:
    """The service's access rule: its ``token`` (None: none) and, without one, whether
    other machines are answered (``allow_remote``)."""

    token: str | None = None
    allow_remote: bool = False

    @classmethod
    def of(cls, token: str | None, allow_remote: bool) -> Door:
        """The door for a token given on the command line, else in ``TOKEN_ENV``."""
        return cls(token or os.environ.get(TOKEN_ENV) or None, allow_remote)

    def check(self, client: str | None, authorization: str | None,
              cookie: str | None = None) -> None:
        """Let a request in or raise Refused: ``client`` its peer address,
        ``authorization`` its header, ``cookie`` the token cookie where the route takes
        it (media routes), else None."""
        if self.token is None:
            self.check_reach(client)
            return
        given = bearer(authorization) or cookie
        if given is None:
            raise Refused(401, "this search service needs its token: send "
                          "'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise Refused(401, "wrong token")

    def check_reach(self, client: str | None) -> None:
        """Raise Refused (403) for a client on another machine when there is no token and
        remote clients are not allowed: the rule of the page, which holds no data."""
        if self.token is None and not (self.allow_remote or is_loopback(client)):
            raise Refused(403, "this search service has no token, so it answers only "
                          "the machine it runs on; start it with token=... (or "
                          f"{TOKEN_ENV}) to open it to others")

    def announcement(self) -> str:
        """What the service says at start about who it answers."""
        if self.token is not None:
            return ("search service: every data route needs the token "
                    "(Authorization: Bearer <token>); the page at / asks for it once")
        if self.allow_remote:
            return ("search service: NO TOKEN and allow_remote=true: anyone who can reach "
                    "the port can search and play every video")
        return ("search service: no token, so it answers this machine only (127.0.0.1, "
                f"::1); pass token=... or set {TOKEN_ENV} to open it to others")
