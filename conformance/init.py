"""``conformance init [DIR]``: a starter suite of one's own, outside this checkout.

Writes, into ``DIR`` (default: the current folder)::

    pytest.ini        runs the installed suite (``conformance``) and this folder's tests,
                      points them at the files below (paths relative to the ini file), and
                      makes this machine's class the reference class
    cases.toml        one pinned-seed case on an embedded model, to edit
    test_my_pipeline.py
                      a test of one's own pipeline code with the ``diffusion_golden``
                      fixture (an img2img call on the embedded tiny model), to edit
    tolerances.toml   the packaged tolerance tiers, to tighten or loosen
    golden/           empty: ``pytest --device cpu --record`` records this machine's set
    .gitignore        keeps the run's results out of version control

It never replaces a file: when any of them exists, nothing is written and the error names
every one that is in the way.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from conformance import PACKAGE_DIR
from conformance.errors import ConformanceInputError

#: built-in models a starter case may use: (prompt, seed, steps, scheduler, guidance)
_STARTERS: dict[str, tuple[str, int, int, str, float]] = {
    "tiny-sd": ("a red circle on a white background", 1744694513, 20, "euler", 4.0),
    "tiny-flux": ("a purple circle on a black background", 1234, 12, "flow-euler", 3.5),
}

PYTEST_INI = """\
# The diffusion conformance suite over this folder's cases and goldens, and this folder's
# own tests (`conformance init`). `pytest --device cpu --record` records this machine's
# goldens; `pytest --device cpu` checks them. Paths are relative to this file.
[pytest]
addopts = --pyargs
testpaths = conformance .
conformance_cases = cases.toml
conformance_tolerances = tolerances.toml
conformance_golden_dir = golden
conformance_results = conformance-results/results.json
# The class every other machine is compared with at the perceptual tier: the machine that
# ran `conformance init` (`conformance fingerprint` prints a machine's class).
conformance_reference_class = {reference_class}
"""

MY_PIPELINE = """\
\"\"\"Your own pipeline code under golden checks: `diffusion_golden` compares each image
with the golden of its name for this machine (looked up by what the machine computes) and
fails on a difference or a missing golden; `pytest --device cpu --record` records them.\"\"\"

import numpy as np
import pytest
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image

from conformance.models import get_model


@pytest.fixture(scope="module")
def pipe():
    # the suite's embedded tiny model; put your own pipeline here
    return StableDiffusionImg2ImgPipeline.from_pretrained(
        get_model("{model}").path(), use_safetensors=True, local_files_only=True)


def test_img2img(diffusion_golden, pipe):
    init = Image.fromarray(np.full((64, 64, 3), 128, np.uint8))
    image = diffusion_golden.generate(pipe, name="gray-init", seed=1,
                                      prompt="{prompt}",
                                      image=init, strength=0.7, num_inference_steps=8)
    # any image your code makes can be checked too
    diffusion_golden.check(image[::2, ::2], name="half-size")
"""

CASES = """\
# Cases of this suite: each [cases.NAME] table is one pinned-seed generation, run at every
# resolution and precision of [axes] (or its own `resolutions` / `precisions`); item ids read
# MODEL/NAME/WxH/PRECISION. `conformance cases --cases cases.toml` lists them.
schema_version = 1

[axes]
resolutions = ["64x64"]
precisions = ["fp32", "bf16"]

[cases.{name}]
model = "{model}"
prompt = "{prompt}"
seed = {seed}
steps = {steps}
scheduler = "{scheduler}"
guidance_scale = {guidance}

# Your own model (paths relative to this file; read offline): a diffusers folder, a
# .safetensors checkpoint with `config`, a GGUF denoiser with `base`, or hf:repo[@rev].
# [models.my-model]
# source = "../models/my-model"
# vae = "../models/my-vae"          # optional: a VAE of your own
#
# A variant is a case of its own; a LoRA, and a comparison with the plain case:
# [cases.starter-lora]
# model = "{model}"
# prompt = "{prompt}"
# seed = {seed}
# steps = {steps}
# scheduler = "{scheduler}"
# guidance_scale = {guidance}
# lora = [{{ path = "../loras/my-lora.safetensors", scale = 0.8 }}]
#
# [compare.lora]
# base = "starter"
# against = ["starter-lora"]
# expect = "differ"                 # or identical, close, perceptual
"""

GOLDEN_README = """\
# Golden sets

`<model>/<hardware-class>/manifest.json` plus one PNG per item, written by
`pytest --device cpu --record` (or `conformance record --out golden`). Check them with
`conformance validate golden`.
"""

GITIGNORE = "/conformance-results/\n"


def files(model: str, reference_class: str) -> dict[str, str]:
    """What ``init`` writes: {relative path: text}."""
    prompt, seed, steps, scheduler, guidance = _STARTERS[model]
    return {
        "pytest.ini": PYTEST_INI.format(reference_class=reference_class),
        # an img2img call: the embedded SD model, whatever the starter case's model
        "test_my_pipeline.py": MY_PIPELINE.format(model="tiny-sd",
                                                  prompt=_STARTERS["tiny-sd"][0]),
        "cases.toml": CASES.format(name="starter", model=model, prompt=prompt, seed=seed,
                                   steps=steps, scheduler=scheduler, guidance=guidance),
        "tolerances.toml": (PACKAGE_DIR / "tolerances.toml").read_text(encoding="utf-8"),
        "golden/README.md": GOLDEN_README,
        ".gitignore": GITIGNORE,
    }


def init(target: Path, model: str = "tiny-sd") -> list[Path]:
    """Write the starter suite into ``target``; the paths written. Refuses (writing
    nothing) when ``target`` is not a folder or any of the files exists."""
    if model not in _STARTERS:
        raise ConformanceInputError("--model", f"{model!r} has no starter case; accepted: "
                                    f"{', '.join(_STARTERS)}")
    if target.exists() and not target.is_dir():
        raise ConformanceInputError(target, "exists and is not a folder")
    from conformance.hardware import detect_class

    plan = files(model, detect_class("cpu").name)
    in_the_way = [rel for rel in plan if os.path.lexists(target / rel)]
    if in_the_way:
        raise ConformanceInputError(target, "already holds " + ", ".join(in_the_way)
                                    + "; nothing was written (init never replaces a file)")
    written = []
    for rel, text in plan.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as fh:  # "x": never over an existing file
            fh.write(text)
        written.append(path)
    return written


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "init", help="write a starter suite (cases, tolerances, empty golden/, pytest.ini) "
        "into a folder of your own", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", nargs="?", type=Path, default=Path("."), metavar="DIR",
                   help="folder to write into (default: the current one; created if absent)")
    p.add_argument("--model", default="tiny-sd", metavar="NAME",
                   help=f"embedded model of the starter case: {', '.join(_STARTERS)} "
                   "(default: tiny-sd)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    written = init(args.target, args.model)
    for path in written:
        print(f"wrote {path}")
    where = "" if args.target == Path(".") else f"cd {args.target} && "
    print(f"next: {where}pytest --device cpu --record   (records this machine's goldens), "
          "then pytest --device cpu")
    return 0
