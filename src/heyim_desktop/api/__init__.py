"""The local HTTP API: HeyIm's original routes and AUTOMATIC1111-compatible ones.

No Qt here. The app starts an :class:`ApiServer` over its own job queue; ``heyim-desktop
serve`` does the same headless (see :mod:`heyim_desktop.api.serve`). FastAPI and uvicorn
are imported only when a server starts.
"""

from __future__ import annotations

from heyim_desktop.api.context import ModelChoice, fixed_catalog, library_catalog
from heyim_desktop.api.security import TOKEN_ENV, resolve_token
from heyim_desktop.api.server import DEFAULT_HOST, DEFAULT_PORT, ApiServer, ApiStartError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "TOKEN_ENV",
    "ApiServer",
    "ApiStartError",
    "ModelChoice",
    "fixed_catalog",
    "library_catalog",
    "resolve_token",
]
