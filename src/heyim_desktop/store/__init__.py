"""History and preferences on disk. No Qt."""

from __future__ import annotations
