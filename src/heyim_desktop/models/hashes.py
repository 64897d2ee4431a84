"""Model hashes live in :mod:`heyim_desktop.core.hashes` (the engine writes them into every image)."""

from heyim_desktop.core.hashes import SHORT_LENGTH, ModelHashes, shared_hashes, short_hash

__all__ = ["SHORT_LENGTH", "ModelHashes", "shared_hashes", "short_hash"]
