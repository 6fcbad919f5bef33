"""feedstore: the data-collection and feature-store layer of a feed ranker."""

# Importing ``feast.metrics`` points PROMETHEUS_MULTIPROC_DIR at a temp directory, and a
# prometheus_client imported after that stores every metric in shared files, so two metric sets
# with the same names in one process add up. Imported first here, it keeps our metrics in memory.
import prometheus_client.values  # noqa: F401

__version__ = "0.1.0"
