"""``runstream soak``: a short seeded run must pass, and its audit must catch what it looks for."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from runstream.bench.soak import JobPlan, Received, Tally, check_job, frame
from tests.support.processes import RUNSTREAM

pytestmark = pytest.mark.faults

JOB_ID = uuid.uuid4()
PLAN = JobPlan(0, "plain", 0.0, "hi", {"words": 3}, None, ())


def row(seq: int, attempt: int, data: str) -> dict:
    return {"seq": seq, "attempt": attempt, "type": data.split('"type": "')[1].split('"')[0], "data": data}


GOOD_ROWS = [
    row(0, 1, '{"text": "thinking", "type": "reasoning"}'),
    row(1, 1, '{"type": "text_delta", "delta": "Hel"}'),
    row(2, 2, '{"type": "retry", "reason": "worker lost", "attempt": 2}'),
    row(3, 2, '{"type": "text_delta", "delta": "Hello"}'),
    row(4, 2, '{"type": "done", "status": "completed"}'),
]
JOB = {"id": JOB_ID, "status": "completed", "attempt": 2, "error": None, "last_seq": 4}


def received(rows: list[dict]) -> Received:
    return Received(frames=[(r["seq"], frame(r)) for r in rows], connections=2, finished=True)


def anomalies(job: dict, rows: list[dict], got: Received) -> set[str]:
    tally = Tally()
    check_job(job, rows, PLAN, got, tally)
    return set(tally.anomalies)


def test_the_audit_passes_a_good_job_and_catches_each_defect():
    assert anomalies(JOB, GOOD_ROWS, received(GOOD_ROWS)) == set()
    # A client that got an event twice, or missed one.
    assert anomalies(JOB, GOOD_ROWS, received([*GOOD_ROWS[:2], *GOOD_ROWS[1:]])) == {"stream_differs"}
    assert anomalies(JOB, GOOD_ROWS, received([*GOOD_ROWS[:2], *GOOD_ROWS[3:]])) == {"stream_differs"}
    # Bytes that differ from the row.
    changed = [*GOOD_ROWS[:3], {**GOOD_ROWS[3], "data": '{"type": "text_delta", "delta": "Hellp"}'}, GOOD_ROWS[4]]
    assert anomalies(JOB, GOOD_ROWS, received(changed)) == {"stream_differs"}
    # A later attempt that does not open with its retry event.
    no_retry = [GOOD_ROWS[0], GOOD_ROWS[1], {**GOOD_ROWS[3], "seq": 2}, {**GOOD_ROWS[4], "seq": 3}]
    assert "retry_missing" in anomalies({**JOB, "last_seq": 3}, no_retry, received(no_retry))
    # A gap in the log, two terminal rows, a terminal row not last, a status that disagrees.
    assert "gap" in anomalies(JOB, [*GOOD_ROWS[:2], *GOOD_ROWS[3:]], received(GOOD_ROWS))
    two_terminals = [*GOOD_ROWS, row(5, 2, '{"type": "error", "message": "x"}')]
    assert "terminal_rows" in anomalies({**JOB, "last_seq": 5}, two_terminals, received(two_terminals))
    assert "terminal_rows" in anomalies(JOB, [*GOOD_ROWS[:4], {**GOOD_ROWS[1], "seq": 4}], received(GOOD_ROWS))
    assert "status_mismatch" in anomalies({**JOB, "status": "cancelled"}, GOOD_ROWS, received(GOOD_ROWS))
    assert anomalies({**JOB, "status": "running"}, GOOD_ROWS, received(GOOD_ROWS)) == {"not_terminal"}


@pytest.mark.timeout(600)
def test_a_short_seeded_soak_passes(tmp_path):
    # About two minutes: every kind of fault, many times over, while 40 jobs run.
    result = subprocess.run(
        [RUNSTREAM, "soak", "--seed", "7", "--jobs", "40", "--duration", "60", "--log-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert summary.startswith("soak seed=7 jobs=") and " anomalies=0 " in summary and summary.endswith("PASS")
