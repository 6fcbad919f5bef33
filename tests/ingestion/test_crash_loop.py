"""A message that kills the consumer process every time it is read (a crash in a native library,
the OOM killer) is isolated by bisection over restarts and dead-lettered as ``crashed_consumer``;
every other event lands. The consumer is the real CLI in a subprocess, restarted as a supervisor
would; a wrapper around it (test harness, not production code) SIGKILLs it whenever validation is
handed the pill."""

from __future__ import annotations

import subprocess
import sys

from tests.ingestion.conftest import env_of, produce, read_dlq, stored_event_ids, valid_lines

PILL = b'{"this message": "kills the process that reads it"}'
WRAPPER = f"""
import os, signal, sys
from ingestion.validation import Validator
original = Validator.validate
def validate(self, payloads, *args, **kwargs):
    if any(p == {PILL!r} for p in payloads):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, payloads, *args, **kwargs)
Validator.validate = validate
sys.argv[0] = 'feedstore'
from feedstore.cli import main
main()
"""


def test_a_message_that_kills_the_consumer_is_set_aside_and_the_rest_lands(ingest_settings):
    s = ingest_settings.replace(ingest={"batch_size": 16, "batch_timeout_ms": 100})
    before, after = valid_lines(150, seed=51), valid_lines(150, seed=52)
    produce(s, before)
    produce(s, [PILL])
    produce(s, after)
    env = env_of(s)
    codes = []
    for _ in range(40):
        try:
            run = subprocess.run([sys.executable, "-c", WRAPPER, "ingest", "--until-idle", "2", "--instance-id",
                                  "crash-1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"run {len(codes) + 1} hung: {(exc.stderr or b'').decode()[-3000:]}") from None
        codes.append(run.returncode)
        if run.returncode not in (-9, 0):
            break
        if run.returncode == 0:
            break
    assert codes[-1] == 0, f"still crashing after {len(codes)} runs: {run.stderr.decode()[-2000:]}"
    assert codes.count(-9) >= 3, codes  # two at full size, then at least one halving
    # Two crashes at full size (with the next batch read while one is written, they may count
    # against the batch before the pill's), at most two per halving from 16 to 1, the clean run.
    assert len(codes) <= 2 * 2 + 2 * 4 + 2, codes
    letters = read_dlq(s)
    assert [(v, h["reason"]) for v, h in letters] == [(PILL, "crashed_consumer")]
    assert len(stored_event_ids(s)) == len(before) + len(after)
