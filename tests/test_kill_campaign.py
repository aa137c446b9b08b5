"""The CI size of `bench/kill_campaign.py --target pretrain`: three kill -9 at random instants, each shown to
have landed mid-run, then the resumed run's per-step losses equal an uninterrupted run's."""

from __future__ import annotations

import signal
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from kill_campaign import campaign, pretrain_target

pytestmark = pytest.mark.filterwarnings("ignore:curriculum. source")


@pytest.mark.slow
def test_three_kills_land_mid_run_and_the_losses_stay_bit_identical(tmp_path):
    result = campaign(pretrain_target(tmp_path, steps=12), tmp_path, kills=3, seed=sum(map(ord, "polylm")))
    for kill in result["rounds"]:
        assert kill["exit_code"] == -signal.SIGKILL, kill  # died by the kill, not on its own
        assert kill["progress"] < kill["total"], kill  # ... before the end
    assert result["landed"] == 3
    assert result["end"] == {"identical": True, "steps": 12, "reference_steps": 12, "first_differing_step": None}
