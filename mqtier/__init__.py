"""mqtier: a RocketMQ-compatible durable message store, tiered to any fsspec URL.

The library API mirrors the CLI::

    from mqtier import Message, Store

    with Store.open("./store", create=True) as st:
        result = st.append(Message(topic="orders", body=b"hello", keys=("ORDER-42",)))
        for msg in st.read("orders", 0, 0, 10):
            print(msg.queue_offset, msg.body)
"""

from __future__ import annotations

from mqtier.format.message import Message, MessageRecord
from mqtier.store.config import StoreConfig
from mqtier.store.store import AppendResult, Store

__version__ = "0.1.0"

__all__ = ["AppendResult", "Message", "MessageRecord", "Store", "StoreConfig", "__version__"]
