"""History and preferences on disk. No Qt."""

from __future__ import annotations

from heyim_desktop.store.history import EntryId, HistoryEntry, HistoryStore
from heyim_desktop.store.schema import SCHEMA_VERSION, NewerSchemaError

__all__ = ["EntryId", "HistoryEntry", "HistoryStore", "NewerSchemaError", "SCHEMA_VERSION"]
