"""Model registry: which pipelines the suite knows, where their weights live, what they take.

Tiny models are built and trained by the suite itself (see ``conformance train``) and shipped
under ``fixtures/``. Their names are the ``model`` values a case file may use.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance import PROJECT_ROOT
from conformance.errors import ConformanceInputError

FIXTURES_ENV = "CONFORMANCE_FIXTURES"


class ModelUnavailable(Exception):
    """The weights of a model are not on this machine (its items are skipped, not failed).

    The message says where the suite looked and how to get the weights.
    """


class Family(enum.Enum):
    """The pipeline family: decides call arguments, schedulers and the denoiser's name."""

    SD = "sd"
    FLUX = "flux"

    @property
    def denoiser(self) -> str:
        return "unet" if self is Family.SD else "transformer"


@dataclass(frozen=True)
class ModelSpec:
    """A model the suite can run: a name, a family and where its weights are."""

    name: str
    family: Family
    fixture: str | None
    resolution_multiple: int
    min_side: int
    max_side: int
    description: str
    #: for real checkpoints: the name in ``conformance.models.sources.REAL_MODELS``
    real: str | None = None

    def path(self, fixtures_dir: Path | None = None) -> Path:
        """The shipped pipeline directory (``from_pretrained`` layout) of a tiny model."""
        if self.fixture is None:
            raise ValueError(f"{self.name} is a real checkpoint, not a shipped fixture")
        return (fixtures_dir or default_fixtures_dir()) / self.fixture

    def check_resolution(self, width: int, height: int) -> str | None:
        """Why this model cannot take ``width`` x ``height``, or ``None`` if it can."""
        for side_name, side in (("width", width), ("height", height)):
            if side % self.resolution_multiple:
                return (
                    f"{side_name} {side} is not a multiple of {self.resolution_multiple}, "
                    f"which {self.name} requires"
                )
            if not self.min_side <= side <= self.max_side:
                return (
                    f"{side_name} {side} is outside {self.min_side}..{self.max_side}, "
                    f"the range {self.name} accepts"
                )
        return None


def dtype_keyword() -> str:
    """The ``from_pretrained`` keyword for the dtype: ``dtype`` in diffusers 0.42+, where
    ``torch_dtype`` is deprecated; ``torch_dtype`` before."""
    from importlib.metadata import version

    major, minor = (int(p) for p in version("diffusers").split(".")[:2])
    return "dtype" if (major, minor) >= (0, 42) else "torch_dtype"


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; bad input is an error naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConformanceInputError(path, f"cannot read JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConformanceInputError(path, "must hold a JSON object")
    return data


def default_fixtures_dir() -> Path:
    """``$CONFORMANCE_FIXTURES`` if set, else the project's ``fixtures/``."""
    env = os.environ.get(FIXTURES_ENV)
    return Path(env) if env else PROJECT_ROOT / "fixtures"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="tiny-sd",
            family=Family.SD,
            fixture="tiny-sd",
            # VAE downsamples 4x, the UNet twice more: latents must halve twice.
            resolution_multiple=16,
            min_side=32,
            max_side=256,
            description="StableDiffusionPipeline, 2.3 M parameters, trained on captioned shapes",
        ),
        ModelSpec(
            name="tiny-flux",
            family=Family.FLUX,
            fixture="tiny-flux",
            # VAE downsamples 8x; the pipeline needs sides divisible by 16.
            resolution_multiple=16,
            min_side=32,
            max_side=256,
            description="FluxPipeline with a tiny FluxTransformer2DModel, CLIP and T5 encoders",
        ),
        ModelSpec(
            name="sd15",
            family=Family.SD,
            fixture=None,
            resolution_multiple=8,
            min_side=256,
            max_side=2048,
            description="SD 1.5-style checkpoint: $CONFORMANCE_SD15 (directory or single "
            "file) or the Hugging Face cache",
            real="sd15",
        ),
        ModelSpec(
            name="sdxl",
            family=Family.SD,
            fixture=None,
            resolution_multiple=8,
            min_side=512,
            max_side=2048,
            description="SDXL base: $CONFORMANCE_SDXL or the Hugging Face cache",
            real="sdxl",
        ),
        ModelSpec(
            name="flux-schnell",
            family=Family.FLUX,
            fixture=None,
            resolution_multiple=16,
            min_side=256,
            max_side=2048,
            description="FLUX.1-schnell: $CONFORMANCE_FLUX or the Hugging Face cache, with "
            "an optional GGUF transformer in $CONFORMANCE_FLUX_GGUF",
            real="flux-schnell",
        ),
    )
}


def get_model(name: str) -> ModelSpec:
    """The registered model ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}"
        ) from None
