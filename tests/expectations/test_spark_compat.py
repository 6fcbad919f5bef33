"""Great Expectations imports ``pyspark.sql.connect`` when pyspark is installed; in a process whose
``__main__`` has neither a spec nor a file (``python -c``, as Dagster starts a run's worker), that
import runs pyspark's connect dependency check, which ends the process, status 0, when one of the
connect extra's packages is missing. The lock pins ``pyspark[connect]``: the process lives on."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.pure

PROBE = """
import great_expectations.compatibility.pyspark as gx_spark
import expectations.runner
print("alive", gx_spark.ConnectDataFrame.__module__)
"""


def test_gx_import_with_pyspark_keeps_a_specless_main_alive():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["alive", "pyspark.sql.connect.dataframe"], result.stderr[-3000:]
