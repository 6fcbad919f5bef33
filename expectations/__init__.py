"""Great Expectations 1.x suites for every boundary of feedstore, and the runner that applies them.

``validate(suite, data, **params) -> ValidationSummary`` is the API the Dagster asset checks and
``feedstore validate`` call. Importing this package does not import GX (it takes seconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from expectations.runner import ValidationSummary

def validate(suite: str, data: Any, **params: Any) -> ValidationSummary:
    from expectations.runner import validate as run

    return run(suite, data, **params)
