"""colorization.admission: a bounded number at work, a bounded queue, the rest turned away at once."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from colorization.admission import Admission, Busy


def test_admits_concurrency_plus_queue_then_refuses_at_once_until_one_leaves():
    admission = Admission(concurrency=2, queue=1)
    with ExitStack() as inside:
        first = inside.enter_context(ExitStack())
        first.enter_context(admission.admit())
        inside.enter_context(admission.admit())
        inside.enter_context(admission.admit())
        with pytest.raises(Busy) as refused:
            inside.enter_context(admission.admit())
        assert refused.value.retry_after >= 1 and "busy" in refused.value.message
        assert "\n" not in refused.value.message and admission.inside == 3
        first.close()  # one leaves: there is room for one more, and only one
        inside.enter_context(admission.admit())
        with pytest.raises(Busy):
            inside.enter_context(admission.admit())
    assert admission.inside == 0


def test_a_longer_queue_is_told_to_come_back_later():
    def retry_after(queue: int) -> int:
        admission = Admission(concurrency=1, queue=queue)
        with ExitStack() as inside:
            for _ in range(1 + queue):
                inside.enter_context(admission.admit())
            with pytest.raises(Busy) as refused:
                inside.enter_context(admission.admit())
        return refused.value.retry_after

    assert retry_after(4) > retry_after(0) >= 1


@pytest.mark.parametrize("concurrency, queue", [(0, 1), (1, -1)])
def test_settings_that_admit_nothing_are_refused(concurrency, queue):
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        Admission(concurrency, queue)
