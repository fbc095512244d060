"""Every fuzz target runs (briefly) in the suite, so ``python -m tests.fuzz`` keeps working."""

from __future__ import annotations

import pytest

from tests.fuzz.__main__ import main, run
from tests.fuzz.targets import TARGETS


@pytest.mark.parametrize("name", TARGETS)
def test_target_holds_for_a_batch_of_inputs(name: str) -> None:
    assert run(TARGETS[name], seconds=0, batch_size=15) == 15  # one batch


def test_the_command_lists_targets_and_refuses_unknown_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--list"]) == 0
    assert capsys.readouterr().out.split() == list(TARGETS)
    with pytest.raises(SystemExit):
        main(["no-such-target"])
