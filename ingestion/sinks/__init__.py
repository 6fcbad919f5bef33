"""Where validated events land. Each sink is idempotent for a given batch, so the consumer can
retry a stage (or a whole batch after a crash) without doubling anything; it raises
``StoreUnavailable`` for failures that waiting may cure."""


class StoreUnavailable(RuntimeError):
    """A store refused or timed out; the consumer backs off and retries the stage."""

    def __init__(self, store: str, cause: BaseException | str) -> None:
        super().__init__(f"{store}: {cause}")
        self.store = store
