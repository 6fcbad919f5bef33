"""Which asset writes each batch feature view of the contract, gathered from the assets themselves."""

from feedstore.contract.features import BATCH_VIEWS
from orchestration.assets import features, snapshots

VIEW_ASSETS: dict[str, str] = {**features.VIEW_ASSETS, **snapshots.VIEW_ASSETS}
if set(VIEW_ASSETS) != set(BATCH_VIEWS):
    raise RuntimeError(f"batch views without an asset writing them: {sorted(set(BATCH_VIEWS) - set(VIEW_ASSETS))}")
