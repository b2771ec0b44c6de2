"""Records, not streams: keys, tokens, stored sessions, uploads, the page, and their retention.

Nothing here holds a live socket; the live wing is `server/stream/` (and never imported here).
"""

from streamscribe.server.rest import admin, sessions, tokens, uploads, web

routers = [module.router for module in (tokens, sessions, admin, uploads, web)]
