"""Which asset writes each feature view's table in the lake (pushed views too: their offline side),
gathered from the assets themselves."""

from feedstore.contract.features import VIEWS
from orchestration.assets import features, snapshots

VIEW_ASSETS: dict[str, str] = {**features.VIEW_ASSETS, **snapshots.VIEW_ASSETS}
if set(VIEW_ASSETS) != set(VIEWS):
    raise RuntimeError(f"views without an asset writing them: {sorted(set(VIEWS) - set(VIEW_ASSETS))}")
