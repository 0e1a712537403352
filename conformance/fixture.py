"""``diffusion_golden``: one's own pipeline code under the suite's golden checks.

A pytest user writes, as with syrupy or pytest-regressions::

    def test_img2img(diffusion_golden):
        pipe = StableDiffusionImg2ImgPipeline.from_pretrained(...)
        diffusion_golden.generate(pipe, name="cat", seed=1, prompt="a cat", image=init,
                                  strength=0.6, num_inference_steps=4)
        diffusion_golden.check(my_postprocess(...), name="thumbnail")

* :meth:`DiffusionGolden.check` compares any image (PIL, or an ``HxWx3`` ``uint8`` array)
  with the golden of that name for this machine;
* :meth:`DiffusionGolden.generate` calls the user's pipeline (any diffusers pipeline) with a
  pinned CPU generator (the built-in checks' policy: the same initial noise on every
  device), on ``--device``, traces each step's latents through ``callback_on_step_end``
  where the pipeline has it (so the first divergent step is reported), and checks the
  output image; ``--record --probes`` stores its module probes, ``--localize`` names the
  first module whose bits differ from the golden's.

The golden is looked up by this machine's measured identity, held to the tier it decides and
judged by the same tolerance file, metrics and images as the built-in own-class check
(:meth:`conformance.session.ConformanceSession.evaluate` with :data:`Check.FIXTURE`). A
missing golden **fails** with the command that records it (``--record``). Goldens live in
the same validated layout (``<root>/<module>/<class>/manifest.json``) under ``golden/``
beside the rootdir, or the folder ``--golden-dir`` / ``conformance_golden_dir`` names, never
in the installed package: ``conformance validate`` and ``conformance matrix`` read them.

An item of the fixture is ``<module>/<test>-<name>/<W>x<H>/<precision>``: the test module's
path relative to the golden folder's parent (with the default ``golden/`` under the rootdir,
``tests/test_x.py`` is ``tests-test_x``), the test's name (parameters included) and the
golden's name, cut to the lengths a golden manifest accepts (a digest keeps cut names apart).
Outcome ids are ``<test node id>/<name>``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from conformance.cases import Case, Item, Resolution
from conformance.errors import ConformanceInputError
from conformance.generate import Generation
from conformance.precision import PRECISIONS
from conformance.trace import StepTrace

#: Golden names: what a test passes as ``name=``.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64"
#: torch dtypes of a pipeline's denoiser, as the suite's precision names
PRECISION_OF_DTYPE = {"torch.float32": "fp32", "torch.bfloat16": "bf16",
                      "torch.float16": "fp16"}
_CASE_MAX = 64
_MODEL_MAX = 64
_PARAM_CHARS = 512


def _slug(text: str, allowed: str, most: int) -> str:
    """``text`` in lower case with every run of other characters one ``-``, cut to
    ``most`` with a digest of the whole kept at the end when cut."""
    slug = re.sub(f"[^{allowed}]+", "-", text.lower()).strip("-._") or "x"
    if len(slug) <= most:
        return slug
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{slug[:most - 9].rstrip('-._')}-{digest}"


def item_names(nodeid: str, name: str, module: str | None = None) -> tuple[str, str]:
    """(model, case) of a fixture golden, as a golden manifest accepts them: the test
    module's path (``module``, relative to the golden folder's parent, so that goldens stay
    found whatever the rootdir; else the node id's path), its folders joined with ``-`` (two
    modules of one file name in two folders keep their goldens apart), and the test's name
    with the golden's name."""
    path, _, test = nodeid.partition("::")
    module = (module if module is not None else path).replace("\\", "/")
    module = module.removesuffix(".py").replace("../", "").replace("/", "-")
    model = _slug(module, "a-z0-9._", _MODEL_MAX)
    case = _slug(f"{test.replace('::', '-')}-{name}", "a-z0-9", _CASE_MAX)
    return model, case


def as_image(image: Any, what: str = "image") -> np.ndarray:
    """An ``HxWx3`` ``uint8`` array of ``image`` (a PIL image of any mode is converted to
    RGB; an array must already be ``HxWx3`` ``uint8``)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise TypeError(f"{what}: an array must be HxWx3 uint8, not {image.shape} "
                            f"{image.dtype}; convert it, e.g. (x * 255).round().astype('uint8')")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise TypeError(f"{what}: the array is empty ({image.shape})")
        return np.ascontiguousarray(image)
    raise TypeError(f"{what}: expected a PIL image or an HxWx3 uint8 numpy array, not "
                    f"{type(image).__name__}")


def _param_value(value: Any) -> Any:
    """A call argument as a golden's params hold it: a short scalar as it is, anything else
    (an image, a tensor, a long prompt) as its type and a digest of its content."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and len(value) <= _PARAM_CHARS:
        return value
    return f"{type(value).__name__}:{_content_digest(value)}"


def _content_digest(value: Any) -> str:
    h = hashlib.sha256()
    _feed(h, value, 0)
    return h.hexdigest()[:16]


def _feed(h: Any, value: Any, depth: int) -> None:
    """Hash what determines ``value`` (bytes of arrays, tensors and images; items of
    containers), never its ``id``."""
    if depth > 8:
        h.update(b"<deep>")
        return
    from PIL import Image

    if isinstance(value, Image.Image):
        h.update(f"PIL{value.mode}{value.size}".encode())
        h.update(value.tobytes())
    elif isinstance(value, np.ndarray):
        h.update(f"nd{value.dtype}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        t = value.detach().to("cpu").contiguous()
        h.update(f"t{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(__import__("torch").uint8).numpy().tobytes())
    elif isinstance(value, (list, tuple)):
        h.update(f"seq{len(value)}".encode())
        for v in value:
            _feed(h, v, depth + 1)
    elif isinstance(value, Mapping):
        for k in sorted(value, key=str):
            h.update(str(k).encode())
            _feed(h, value[k], depth + 1)
    else:
        h.update(repr(value).encode())


def precision_of(pipe: Any) -> str:
    """The precision name of the pipeline's denoiser (``unet`` / ``transformer``), else of
    the pipeline; ``fp32`` when neither says."""
    for attr in ("unet", "transformer", "prior"):
        module = getattr(pipe, attr, None)
        dtype = getattr(module, "dtype", None)
        if dtype is not None:
            return PRECISION_OF_DTYPE.get(str(dtype), "fp32")
    return PRECISION_OF_DTYPE.get(str(getattr(pipe, "dtype", "")), "fp32")


@dataclass(frozen=True)
class FixtureCase(Case):
    """The case of a fixture golden: its parameters are the call's (what the golden's
    ``params`` hold and a later run must match), its test's node id gives the commands."""

    params: tuple[tuple[str, Any], ...] = ()
    nodeid: str = ""

    def generation_params(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def model_spec(self) -> Any:
        raise ConformanceInputError(
            self.nodeid, "--probe-inputs is not available for diffusion_golden goldens "
            "(the suite cannot reload one's own pipeline elsewhere); use --probes")


class UserRunner:
    """The user's pipeline in the place of :class:`conformance.generate.Runner` for one
    golden: the suite's probes (``--probes``, ``--localize``) call it again through
    :meth:`generate`; everything else is the session's runner's."""

    def __init__(self, base: Any, pipe: Any, call: Callable[[Any], Generation]) -> None:
        self._base = base
        self._pipe = pipe
        self._call = call
        self.device = base.device

    def pipeline_for(self, item: Item) -> Any:
        return self._pipe

    def generate(self, item: Item, variant: str | None = None) -> Generation:
        if variant is not None:
            raise ConformanceInputError(item.id, "variants do not apply to diffusion_golden")
        return self._call(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


@dataclass
class DiffusionGolden:
    """What the ``diffusion_golden`` fixture gives a test (see the module docstring).

    ``evaluate(item, generation, runner)`` runs the check and returns the outcome (the
    plugin maps it to pass / fail and collects it); ``device`` is ``--device``."""

    nodeid: str
    device: str
    evaluate: Callable[..., Any]
    #: the test module's path relative to the golden folder's parent (its goldens' set name)
    module: str | None = None
    _names: set[str] = field(default_factory=set)

    def check(self, image: Any, name: str, *, precision: str = "fp32",
              trace: list[StepTrace] | None = None) -> Any:
        """Compare ``image`` with the golden ``name`` of this test (``--record`` records it
        where it is missing); returns the outcome, fails the test on a difference or a
        missing golden."""
        __tracebackhide__ = True
        self._claim(name)
        array = as_image(image, f"diffusion_golden.check(name={name!r})")
        _require_precision(precision)
        item = self._item(name, array, precision, {"fixture": name})
        gen = Generation(item.id, array, list(trace or []), 0.0)
        return self.evaluate(self, name, item, gen, None)

    def generate(self, pipe: Any, name: str, *, seed: int = 0, precision: str | None = None,
                 **call: Any) -> np.ndarray:
        """Call ``pipe(**call)`` with a generator pinned to ``seed`` (on the CPU, the same
        noise on every device), the pipeline moved to ``--device``, each step's latents
        traced, and check its first image as :meth:`check` does. Returns the image."""
        __tracebackhide__ = True
        self._claim(name)
        for key in ("generator", "callback_on_step_end", "output_type"):
            if key in call:
                raise TypeError(f"diffusion_golden.generate(name={name!r}): {key!r} is set "
                                "by the suite (a pinned generator, the step trace, PIL "
                                "output); leave it out")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise TypeError(f"diffusion_golden.generate(name={name!r}): seed must be an "
                            f"integer in 0..2**63-1, not {seed!r}")
        precision = precision or precision_of(pipe)
        _require_precision(precision)
        if hasattr(pipe, "to"):
            pipe = pipe.to(self.device)

        def run(_item: Any = None) -> Generation:  # again for --probes / --localize
            return _call_pipeline(pipe, seed, call, name)

        gen = run()
        params = {"fixture": name, "seed": seed,
                  **{f"call.{k}": _param_value(v) for k, v in sorted(call.items())}}
        item = self._item(name, gen.image, precision, params, seed=seed, call=call)
        self.evaluate(self, name, item, replace(gen, item_id=item.id), pipe, run)
        return gen.image

    def _claim(self, name: str) -> None:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"diffusion_golden: name {name!r} is not a golden name "
                             f"({NAME_RULE})")
        if name in self._names:
            raise ValueError(f"diffusion_golden: name {name!r} is used twice in "
                             f"{self.nodeid}; give each image of a test its own name")
        self._names.add(name)

    def _item(self, name: str, image: np.ndarray, precision: str,
              params: dict[str, Any], seed: int = 0, call: Mapping[str, Any] | None = None
              ) -> Item:
        model, case_name = item_names(self.nodeid, name, self.module)
        call = call or {}
        resolution = Resolution(int(image.shape[1]), int(image.shape[0]))
        # what the failure message's "case:" line shows of the call, where it says it
        prompt, steps = call.get("prompt"), call.get("num_inference_steps")
        guidance = call.get("guidance_scale")
        case = FixtureCase(
            name=case_name, model=model,
            prompt=prompt if isinstance(prompt, str) else "",
            negative_prompt="", seed=seed, steps=steps if isinstance(steps, int) else 0,
            scheduler="the pipeline's",
            guidance_scale=float(guidance) if isinstance(guidance, (int, float)) else 0.0,
            resolutions=(resolution,), precisions=(precision,),
            params=(("model", model), *params.items()), nodeid=self.nodeid,
        )
        return Item(case, resolution, precision)


def _require_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"diffusion_golden: precision {precision!r} is not one of "
                         f"{', '.join(PRECISIONS)}")


def _call_pipeline(pipe: Any, seed: int, call: Mapping[str, Any], name: str) -> Generation:
    """One call of the user's pipeline: the pinned generator, the step trace where the
    pipeline takes ``callback_on_step_end``, the first image as RGB ``uint8``."""
    import inspect

    import torch

    trace: list[StepTrace] = []

    def on_step(_pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict:
        latents = kwargs.get("latents")
        if latents is not None:
            trace.append(StepTrace.from_latents(step, timestep, latents[:1]))
        return kwargs

    kwargs = dict(call)
    kwargs["generator"] = torch.Generator("cpu").manual_seed(seed)
    try:
        accepted = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        accepted = {}
    if "callback_on_step_end" in accepted:
        kwargs["callback_on_step_end"] = on_step
        kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
    if "output_type" in accepted:
        kwargs["output_type"] = "pil"
    start = time.perf_counter()
    with torch.inference_mode():
        result = pipe(**kwargs)
    seconds = time.perf_counter() - start
    images = getattr(result, "images", result)
    if isinstance(images, (list, tuple)) and images:
        image = images[0]
    else:
        image = images
    if isinstance(image, np.ndarray) and image.ndim == 4:
        image = image[0]
    return Generation(name, as_image(image, f"diffusion_golden.generate(name={name!r}) "
                                            "output"), trace, seconds)

