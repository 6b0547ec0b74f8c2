"""Records of the item-vector topic (`items.vectors.<model>`): what the catalog processor derived
for one item, keyed by item id, compacted.

    value = version (1 byte) | payload length (4 bytes, big-endian) | payload (JSON) | vector
            (float32, little-endian)

The payload is the index payload (recstream.core.index.ItemPayload); a deleted item's record
carries its tombstone payload (deleted, with the deletion time) so that an older upsert cannot
bring it back. A null value removes the item altogether (what compaction then forgets).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
import orjson

from recstream.core.index import ItemPayload, Vector
from recstream.schemas.errors import InvalidMessageError

VECTOR_RECORD_VERSION: Final = 1
_HEADER = struct.Struct(">BI")


@dataclass(frozen=True, slots=True)
class VectorRecord:
    payload: ItemPayload
    vector: Vector

    def encode(self) -> bytes:
        payload = orjson.dumps(self.payload.to_payload())
        vector = np.ascontiguousarray(self.vector, dtype="<f4").tobytes()
        return _HEADER.pack(VECTOR_RECORD_VERSION, len(payload)) + payload + vector


def decode_vector_record(value: bytes) -> VectorRecord:
    """The record in `value`; InvalidMessageError names what is wrong with it."""
    if len(value) < _HEADER.size:
        raise InvalidMessageError("bad_vector_record", "shorter than its header")
    version, length = _HEADER.unpack_from(value)
    if version != VECTOR_RECORD_VERSION:
        raise InvalidMessageError(
            "bad_vector_record", f"version {version} is not {VECTOR_RECORD_VERSION}"
        )
    end = _HEADER.size + length
    vector_bytes = len(value) - end
    if vector_bytes <= 0 or vector_bytes % 4:
        raise InvalidMessageError("bad_vector_record", f"{vector_bytes} vector bytes")
    try:
        payload = ItemPayload.from_payload(orjson.loads(value[_HEADER.size : end]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InvalidMessageError("bad_vector_record", f"payload: {error}") from None
    vector = np.frombuffer(value, dtype="<f4", offset=end).astype(np.float32)
    return VectorRecord(payload, vector)
