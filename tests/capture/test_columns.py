"""The vectorized record → column helpers give what the obvious per-value Python gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from capture import columns as S

u64 = st.integers(min_value=0, max_value=2**64 - 1)


@given(st.lists(st.tuples(u64, u64), max_size=50))
def test_hex_ids_are_lower_case_hex_and_null_where_zero(pairs):
    hi = np.array([h for h, _ in pairs], dtype=np.uint64)
    lo = np.array([lo for _, lo in pairs], dtype=np.uint64)
    assert S.hex_ids(hi, lo).to_pylist() == [
        None if h == lo_ == 0 else f"{h:016x}{lo_:016x}" for h, lo_ in pairs]
    assert S.hex_ids(None, lo).to_pylist() == [None if v == 0 else f"{v:016x}" for _, v in pairs]
