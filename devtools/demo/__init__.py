"""``feedstore demo``: the main job end to end on a generated feed, and what it left in each tier.

Stack up and schema → clear the previous demo's data → ``feast apply`` → generate users, items
and events (plus a few malformed ones) into Kafka → run the consumer until the topic is drained
→ run the daily Dagster assets for each generated day, oldest first → read every tier back and
print it. Each step logs to its own file under ``<stack dir>/demo/`` and a failing step names
that file. The demo replaces the data of the namespace it runs in (the local stack's default
one, or whatever ``FEED_*`` names), so it refuses non-local endpoints unless told otherwise.

The jobs live in modules of their own: ``prepare`` (stack, reset, feast apply), ``feed``
(generate, bad events, ingest), ``pipeline`` (the daily Dagster run), ``readback`` (every tier
read back), ``render`` (the printout), with ``flow`` putting them in order through the step
runner in ``steps``; ``report`` holds what they share and ``audit`` the cross-checks.
"""

from devtools.demo.flow import run
from devtools.demo.render import render
from devtools.demo.report import DemoOptions
from devtools.demo.steps import StepFailed

__all__ = ["DemoOptions", "StepFailed", "render", "run"]
