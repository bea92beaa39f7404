"""IPv6 store_host: prepare() sizes records as IPv4, so CQ units/AppendResult carry a wrong size."""
import tempfile
from mqtier.store.store import Store
from mqtier.store.config import StoreConfig
from mqtier.format.message import Message

d = tempfile.mkdtemp()
cfg = StoreConfig(store_host="[::1]:10911", commitlog_file_bytes=1 << 20,
                  index_slots=64, index_items=256, cq_units_per_file=100)
with Store.open(d, create=True, config=cfg) as st:
    r = st.append(Message("t", b"hello", queue_id=0, keys=("K1",)))
    print("append result size:", r.size, "actual record size:", st.commitlog.durable_end - r.phy_offset)
    st.wait_dispatched()
    try:
        print(st.read("t", 0, 0, 1))
    except Exception as e:
        print("read failed:", type(e).__name__, e)
with Store.open(d, read_only=True) as st:
    try:
        print(st.read("t", 0, 0, 1)[0].body)
    except Exception as e:
        print("read after reopen failed:", type(e).__name__, e)
