"""Event collection: validation, the consumer and its sinks, the producer (the event shape and rules are the contract's)."""
