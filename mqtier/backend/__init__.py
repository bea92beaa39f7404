"""Cold-tier storage backends: one small contract, file/memory/fsspec implementations,
request accounting and retries. ``fsspec`` is imported in :mod:`mqtier.backend.fsspec_store` only.
"""

from mqtier.backend.base import ColdStore, ObjectInfo
from mqtier.backend.open import open_cold_store

__all__ = ["ColdStore", "ObjectInfo", "open_cold_store"]
