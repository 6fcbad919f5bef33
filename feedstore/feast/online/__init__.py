"""The TTL Redis online store, laid out as Feast lays out ``infra/online_stores/<kind>/``:
``store`` (the store and its config: writes, TTL, housekeeping), ``read`` (reads and the direct
``get_online_features`` path), ``requests`` (what a read request must get right), ``layout``
(key names and expiry), ``codec`` (value bytes), ``response`` (responses over raw cells),
``wire`` (varints and packed RESP)."""
