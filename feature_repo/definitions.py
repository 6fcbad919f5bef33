"""The Feast repository: entities, feature views (each with its TTL), the realtime push source and
the ``ranking`` and ``training`` services, all built from the feature contract in
``feedstore/contract/features.py``. Change a view there; ``feast plan`` shows the difference."""

from feedstore.feast.definitions import repository

globals().update(repository())
