"""Every fault at its severe setting (replay/sweep.py, the last of its three) pages within
one window of its injection: one smoke rep each, really injected and recorded. The
default settings are checked on the committed set (tests/analyze/test_slo.py)."""

from __future__ import annotations

import pytest

from analyze.slo import evaluate_run
from replay.runner import LabOptions, run_lab
from replay.sweep import SETTINGS
from runfmt.config import load_config
from tests.support.lab_run import paged_late

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("scenario", sorted(SETTINGS))
def test_the_severe_setting_pages_within_one_window(scenario, tmp_path):
    severe = SETTINGS[scenario][-1]
    opts = LabOptions(scenarios=[scenario], reps=1, tag="ci", profile="smoke", runs_root=tmp_path,
                      config=load_config(), lab_index=96, fault_params={scenario: severe})
    [run] = run_lab(opts)
    assert paged_late(evaluate_run(run.run_dir, load_config())) is None, severe
