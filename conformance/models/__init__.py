"""Model registry: which pipelines the suite knows, where their weights live, what they take.

Tiny models are built and trained by the fixture tooling of a source checkout (``python -m
fixtures.build train``, never imported by the suite) and shipped under ``fixtures/``. Their
names are the ``model`` values a case file may use. What a model is (:class:`ModelSpec`,
:class:`Family`, bounded config reading) lives in :mod:`conformance.models.base`, re-exported
here; :mod:`conformance.models.specs` declares the built-in ones.
"""

from __future__ import annotations

from conformance.models.base import (
    CHECKSUMS_FILE,
    FIXTURES_ENV,
    Family,
    FixtureIntegrityError,
    ModelSpec,
    ModelUnavailable,
    check_config,
    default_fixtures_dir,
    dtype_keyword,
    load_config,
    read_json_object,
    shard_files,
    shipped_fixtures_dir,
    verify_fixture_once,
)
from conformance.models.specs import builtin_models

__all__ = [
    "CHECKSUMS_FILE",
    "FIXTURES_ENV",
    "MODELS",
    "Family",
    "FixtureIntegrityError",
    "ModelSpec",
    "ModelUnavailable",
    "check_config",
    "default_fixtures_dir",
    "dtype_keyword",
    "get_model",
    "load_config",
    "read_json_object",
    "shard_files",
    "shipped_fixtures_dir",
    "verify_fixture_once",
]

# The built-in models are declared as data, in the shape of a case file's [models.NAME]
# tables (conformance.models.specs.BUILTIN_TABLES).

MODELS: dict[str, ModelSpec] = builtin_models()


def get_model(name: str) -> ModelSpec:
    """The registered model ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}"
        ) from None
