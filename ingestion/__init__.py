"""Event collection: the event shape, its validation, the generator, producer, consumer and sinks."""
