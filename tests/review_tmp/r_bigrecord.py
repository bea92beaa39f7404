"""A record larger than a (small) commit-log file is accepted: the file grows past its size
and the store can no longer be opened."""
import os, tempfile
from mqtier.store.store import Store
from mqtier.store.config import StoreConfig
from mqtier.format.message import Message

d = tempfile.mkdtemp()
cfg = StoreConfig(commitlog_file_bytes=65536, index_slots=64, index_items=256, cq_units_per_file=100)
print("max_message_bytes:", cfg.max_message_bytes)
with Store.open(d, create=True, config=cfg) as st:
    st.append(Message("t", b"x" * 100, queue_id=0))
    r = st.append(Message("t", b"y" * cfg.max_message_bytes, queue_id=0,
                          properties={"p": "v" * 32722}))
    print("acknowledged:", r.phy_offset, "size", r.size)
for n in sorted(os.listdir(os.path.join(d, "commitlog"))):
    print(n, os.path.getsize(os.path.join(d, "commitlog", n)))
try:
    Store.open(d, read_only=True).close()
    print("reopen ok")
except Exception as e:
    print("reopen failed:", type(e).__name__, e)
