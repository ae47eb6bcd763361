"""The task keys of the in-kernel histograms roll up into pid rows and cgroup rows."""

import numpy as np

from capture.hist import CPU, TASK, hist_table

KEY = np.dtype([("slice", "<u8"), ("id", "<u8"), ("cgroup", "<u8"), ("kind", "<u4"), ("pad", "<u4")])
VALUE = np.dtype([("count", "<u8"), ("sum_ns", "<u8"), ("max_ns", "<u8"), ("slots", "<u4", (27,)),
                  ("pad", "<u4")])


def _entries(rows):
    keys = np.zeros(len(rows), KEY)
    values = np.zeros(len(rows), VALUE)
    for i, (slice_, kind, id_, cgroup, samples_us) in enumerate(rows):
        keys[i] = (slice_, id_, cgroup, kind, 0)
        values[i]["count"] = len(samples_us)
        values[i]["sum_ns"] = sum(samples_us) * 1000
        values[i]["max_ns"] = max(samples_us) * 1000
        for us in samples_us:
            values[i]["slots"][int(np.log2(us))] += 1
    return keys, values


def _rows(table):
    return {(r["kind"], r["pid"] if r["kind"] == "pid" else r["cgroup_id"] if r["kind"] == "cgroup" else r["cpu"],
             r["ts_ns"]): (r["count"], r["sum_ns"], r["max_ns"], sum(r["buckets"]))
            for r in table.to_pylist()}


def test_task_keys_sum_by_process_and_by_cgroup_and_cpu_keys_pass_through():
    keys, values = _entries([
        (7, TASK, 100, 5000, [2, 4]),      # process 100 in cgroup 5000
        (7, TASK, 100, 6000, [8]),         # ... moved to cgroup 6000 within the slice
        (7, TASK, 200, 5000, [16, 16, 1]),  # another process in cgroup 5000
        (8, TASK, 100, 6000, [32]),        # the next slice stays apart
        (7, CPU, 1, 0, [64]),
    ])
    rows = _rows(hist_table("runqueue", keys, values, slice_ns=1000, offset_ns=5, node="n"))
    assert rows == {
        ("pid", 100, 7005): (3, 14_000, 8_000, 3),
        ("pid", 200, 7005): (3, 33_000, 16_000, 3),
        ("pid", 100, 8005): (1, 32_000, 32_000, 1),
        ("cgroup", 5000, 7005): (5, 39_000, 16_000, 5),
        ("cgroup", 6000, 7005): (1, 8_000, 8_000, 1),
        ("cgroup", 6000, 8005): (1, 32_000, 32_000, 1),
        ("cpu", 1, 7005): (1, 64_000, 64_000, 1),
    }


def test_the_pid_rows_and_the_cgroup_rows_hold_the_same_samples():
    rng = np.random.default_rng(3)
    rows = [(int(rng.integers(0, 3)), TASK, int(rng.integers(1, 20)), int(rng.integers(1, 5)),
             [int(x) for x in rng.integers(1, 10_000, size=int(rng.integers(1, 5)))]) for _ in range(200)]
    keys, values = _entries(rows)
    unique = np.unique(keys[["slice", "id", "cgroup"]], return_index=True)[1]  # a map holds each key once
    table = hist_table("cpu_steal", keys[unique], values[unique], slice_ns=1, offset_ns=0, node="n").to_pylist()
    for field in ("count", "sum_ns"):
        assert (sum(r[field] for r in table if r["kind"] == "pid")
                == sum(r[field] for r in table if r["kind"] == "cgroup") == int(values[unique][field].sum()))


def test_no_keys_give_an_empty_table_of_the_schema():
    keys, values = _entries([])
    assert hist_table("runqueue", keys, values, slice_ns=1, offset_ns=0, node="n").num_rows == 0
