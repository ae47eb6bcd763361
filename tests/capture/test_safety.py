"""Load shedding: the documented order, one step per sustained excess."""

from __future__ import annotations

from capture.safety import LoadShedder, Sample


class FakeProbe:
    def __init__(self, run_ns: int) -> None:
        self.run_ns = run_ns
        self.tuned: dict[str, int] = {}

    def tune(self, **values: int) -> None:
        self.tuned.update(values)

    def run_stats(self) -> tuple[int, int]:
        return self.run_ns, 1


def _sample(overhead: float) -> Sample:
    return Sample(0, 1.0, 0.0, 0.0, 0, 0, 0, 0, overhead, 0)


def test_steps_come_in_the_documented_order():
    probes = {"dns": FakeProbe(10), "runqueue": FakeProbe(500)}
    shed = LoadShedder(max_overhead_pct=3.0, patience=2)
    steps = []
    for _ in range(12):
        action = shed.observe(_sample(9.0), probes)
        if action:
            steps.append((action["step"], action["detail"]))
    assert steps == [
        ("raise_thresholds", "latency thresholds x4"),
        ("sample", "keep 1 event in 2"),
        ("sample", "keep 1 event in 4"),
        ("sample", "keep 1 event in 8"),
        ("switch_off", "signal runqueue switched off"),  # the costliest first
        ("switch_off", "signal runqueue switched off"),  # the caller removes it from `probes`
    ]
    assert probes["dns"].tuned == {"threshold_shift": 2, "sample_shift": 3}
    assert [a["level"] for a in shed.actions] == [1, 2, 3, 4, 5, 6]


def test_a_brief_spike_does_not_shed():
    shed = LoadShedder(max_overhead_pct=3.0, patience=3)
    probes = {"dns": FakeProbe(1)}
    for overhead in (9.0, 9.0, 1.0, 9.0, 9.0, 1.0):
        assert shed.observe(_sample(overhead), probes) is None
    assert shed.level == 0
