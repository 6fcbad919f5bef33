"""Feast objects built from the feature contract (``feedstore.contract.features``), so the
repository in ``feature_repo/`` declares nothing a second time."""

from __future__ import annotations

from feast import Entity, FeatureService, FeatureView, Field, PushSource, ValueType
from feast.types import Array, Float32, Float64, Int64, String

from feedstore.contract import features as contract
from feedstore.feast.sources import batch_source
from feedstore.settings import Settings

FEAST_TYPES = {
    contract.Kind.INT64: Int64, contract.Kind.FLOAT64: Float64, contract.Kind.STRING: String,
    contract.Kind.INT64_LIST: Array(Int64), contract.Kind.FLOAT32_LIST: Array(Float32),
    contract.Kind.STRING_LIST: Array(String),
}


def entity(spec: contract.Entity) -> Entity:
    return Entity(name=spec.name, join_keys=[spec.join_key], value_type=ValueType.INT64, description=spec.description)


def push_source(view: contract.View, settings: Settings | None = None) -> PushSource:
    return PushSource(name=view.push_source or f"{view.name}_push", batch_source=batch_source(view.name, settings),
                      description=f"{view.refresh.text.capitalize()}.")


def feature_view(view: contract.View, entities: dict[str, Entity], settings: Settings | None = None) -> FeatureView:
    return FeatureView(
        name=view.name,
        entities=[entities[view.entity.name]],
        ttl=view.ttl,
        source=push_source(view, settings) if view.pushed else batch_source(view.name, settings),
        online=True,
        description=view.description,
        schema=[Field(name=f.name, dtype=FEAST_TYPES[f.kind], description=f.description) for f in view.features],
        tags={"family": view.entity.name, "tier": view.tier, "refresh": view.refresh.name, **view.tags},
    )


def repository(settings: Settings | None = None) -> dict[str, object]:
    """Every entity, feature view, push source and feature service, by the name Feast knows it by;
    the sources point at the bucket of ``settings`` (the process's by default), read now."""
    entities = {e.name: entity(e) for e in contract.ENTITIES}
    views = {v.name: feature_view(v, entities, settings) for v in contract.VIEWS.values()}
    pushes = {fv.stream_source.name: fv.stream_source for fv in views.values() if fv.stream_source is not None}
    services = {name: FeatureService(name=name, features=[views[v] for v in members],
                                     description=contract.SERVICE_DESCRIPTIONS[name])
                for name, members in contract.SERVICES.items()}
    return {**entities, **views, **pushes, **services}
