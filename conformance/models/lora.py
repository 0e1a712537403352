"""LoRA adapters: applied to pipelines for a case's ``lora = [...]``, and fitted for tiny-sd.

Applying (:func:`apply_lora`) goes through diffusers' own ``load_lora_weights`` and
``set_adapters`` (its PEFT backend, so the ``peft`` package must be installed; without it
the case's items skip with the install command). Only ``.safetensors`` files are read, by
``safetensors`` itself, and handed to diffusers as a state dict.

Fitting (``conformance lora fit``) trains a rank-4 LoRA on tiny-sd's UNet (attention
projections and ResNet convolutions) to draw the shapes data set in negative (colours
inverted: white backgrounds come out black, red shapes cyan), with the UNet's own
v-prediction loss and min-SNR weighting, from fixed seeds on one thread::

    conformance lora fit --model tiny-sd --out fixtures/tiny-sd-lora --steps 240

It writes ``pytorch_lora_weights.safetensors`` (diffusers' layout) and ``lora.json`` (the
recipe and the measured effect: MAE and PSNR of a LoRA image against the plain one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceInputError
from conformance.models import ModelUnavailable

WEIGHTS = "pytorch_lora_weights.safetensors"
SUMMARY = "lora.json"
#: UNet modules the adapter wraps (attention projections and ResNet convolutions)
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")
#: the case the effect is measured on (the default case file's red-circle, at 64x64)
PROBE = {
    "prompt": "a red circle on a white background",
    "seed": 1744694513,
    "steps": 20,
    "guidance_scale": 4.0,
    "size": 64,
}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


def apply_lora(pipe: Any, refs: Any) -> None:
    """Load each LoRA of ``refs`` (:class:`conformance.cases.LoraRef`) into ``pipe`` as its
    own adapter and activate them all with their scales (``set_adapters``)."""
    try:
        import peft  # noqa: F401  (diffusers' LoRA loading needs its PEFT backend)
    except ImportError:
        raise ModelUnavailable(
            "LoRA adapters load through diffusers' PEFT backend and the peft package is not "
            "installed: pip install peft"
        ) from None
    from safetensors.torch import load_file

    if not hasattr(pipe, "load_lora_weights"):
        raise ConformanceInputError(type(pipe).__name__, "this pipeline loads no LoRA adapters")
    names = []
    for i, ref in enumerate(refs):
        name = f"lora{i}"
        try:
            state = load_file(str(ref.path))
            pipe.load_lora_weights(state, adapter_name=name)
        except Exception as exc:  # safetensors / diffusers / peft raise many types
            raise ConformanceInputError(
                ref.path, f"cannot load as a LoRA of {type(pipe).__name__} ({_first_line(exc)})"
            ) from exc
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[float(ref.scale) for ref in refs])


# ----------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class LoraRecipe:
    """What ``conformance lora fit`` trains: fixed budgets and seeds."""

    model: str = "tiny-sd"
    steps: int = 240
    rank: int = 4
    seed: int = 0
    images: int = 1024
    size: int = 64
    batch: int = 16
    lr: float = 2e-3
    warmup: int = 20
    min_snr_gamma: float = 5.0
    grad_clip: float = 1.0
    style: str = "negative"


def _negative(images: Any) -> Any:
    """The style the adapter learns: colours inverted."""
    return 255 - images


def fit_lora(recipe: LoraRecipe, base: Path, out: Path, log_every: int = 20) -> dict[str, Any]:
    """Fit a LoRA of ``recipe`` on the pipeline in ``base``; write it to ``out``."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from conformance.models import data as shapes
    from conformance.models import tiny
    from conformance.models.sources import check_model_folder
    from conformance.models.train import _lr_lambda, _Meter, _TextCache, optimizer_step

    check_model_folder(Path(base), f"--base {base}")  # bounds before anything is built
    pipe = StableDiffusionPipeline.from_pretrained(str(base), local_files_only=True,
                                                   use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    unet, vae = pipe.unet, pipe.vae
    for module in (unet, vae, pipe.text_encoder):
        module.requires_grad_(False)
        module.eval()
    torch.manual_seed(recipe.seed + 40)  # the adapter's A matrices are drawn from it
    unet.add_adapter(LoraConfig(r=recipe.rank, lora_alpha=recipe.rank,
                                init_lora_weights="gaussian", target_modules=list(TARGETS)))
    params = [p for p in unet.parameters() if p.requires_grad]

    data = shapes.ShapesDataset((recipe.size,), (recipe.images,), recipe.seed + 41)
    images = torch.from_numpy(shapes.to_tensor_range(_negative(data.images[recipe.size])))
    captions = data.captions[recipe.size]
    sf = float(vae.config.scaling_factor)
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in
                             images.split(64)]) * sf

    def encode(caps: list[str]) -> tuple[torch.Tensor, ...]:
        emb, _ = pipe.encode_prompt(caps, torch.device("cpu"), 1, False)
        return (emb,)

    text = _TextCache(encode)
    cfg = pipe.scheduler.config
    alphas = pipe.scheduler.alphas_cumprod.to(torch.float64)
    snr = (alphas / (1.0 - alphas)).float()
    alphas = alphas.float()
    gen = torch.Generator().manual_seed(recipe.seed + 42)
    rng = np.random.default_rng(recipe.seed + 43)
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(recipe.warmup, recipe.steps))
    meter = _Meter(f"{recipe.model} lora", recipe.steps, log_every)
    unet.train()
    for i in range(recipe.steps):
        idx = rng.integers(0, len(captions), size=recipe.batch)
        z0 = latents[torch.from_numpy(idx)]
        (cond,) = text([captions[j] for j in idx])
        b = z0.shape[0]
        t = torch.randint(0, cfg.num_train_timesteps, (b,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = alphas[t].view(b, 1, 1, 1)
        zt = a.sqrt() * z0 + (1.0 - a).sqrt() * noise
        target = a.sqrt() * noise - (1.0 - a).sqrt() * z0  # v-prediction, as tiny-sd samples
        w = torch.clamp(snr[t], min=1.0, max=recipe.min_snr_gamma) / (snr[t] + 1.0)
        per = F.mse_loss(unet(zt, t, cond).sample, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (w * per).mean()
        optimizer_step(opt, sched, params, loss, recipe.grad_clip)
        meter.step(i, per.mean().item())
    unet.eval()
    seconds = meter.seconds()

    state = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(unet).items()}

    def fill(tmp: Path) -> dict[str, Any]:
        StableDiffusionPipeline.save_lora_weights(str(tmp), unet_lora_layers=state,
                                                  safe_serialization=True)
        summary = {
            "model": recipe.model,
            "recipe": asdict(recipe),
            "targets": list(TARGETS),
            "parameters": int(sum(v.numel() for v in state.values())),
            "final_loss": round(meter.final(), 5),
            "effect": measure_effect(base, tmp / WEIGHTS),
            "torch": torch.__version__,
        }
        tiny.write_json(tmp / SUMMARY, summary, "LoRA summary")
        return summary

    summary = tiny.write_dir(out, fill, "LoRA folder")
    effect = summary["effect"]
    print(f"[{recipe.model} lora] {recipe.steps} steps in {seconds:.0f} s; saved to {out}; "
          f"effect at scale 1: MAE {effect['1']['mae']:.1f}/255, PSNR "
          f"{effect['1']['psnr_db']:.1f} dB", file=sys.stderr, flush=True)
    return summary


def measure_effect(base: Path, weights: Path, scales: tuple[float, ...] = (0.8, 1.0)
                   ) -> dict[str, dict[str, float]]:
    """MAE (0-255) and PSNR (dB) of the :data:`PROBE` image with the LoRA at each scale
    against the plain pipeline's."""
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    from conformance.cases import LoraRef

    def image(pipe: Any) -> np.ndarray:
        with torch.inference_mode():
            out = pipe(prompt=PROBE["prompt"], num_inference_steps=PROBE["steps"],
                       guidance_scale=PROBE["guidance_scale"], height=PROBE["size"],
                       width=PROBE["size"], output_type="np",
                       generator=torch.Generator("cpu").manual_seed(PROBE["seed"]))
        return np.asarray(out.images[0], dtype=np.float64) * 255.0

    def load() -> Any:
        pipe = StableDiffusionPipeline.from_pretrained(str(base), local_files_only=True,
                                                       use_safetensors=True)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    plain = image(load())
    out: dict[str, dict[str, float]] = {}
    for scale in scales:
        pipe = load()
        apply_lora(pipe, [LoraRef(weights, scale)])
        diff = image(pipe) - plain
        mse = float(np.mean(diff**2))
        psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
        out[f"{scale:g}"] = {"mae": round(float(np.mean(np.abs(diff))), 2),
                             "psnr_db": round(psnr, 2)}
    return out


def _fit(args: argparse.Namespace) -> int:
    import torch

    from conformance.models import MODELS

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        print(f"error: output directory {out} exists and is not empty; pass --force to "
              "replace it", file=sys.stderr)
        return 2
    base = Path(args.base) if args.base else MODELS[args.model].verified_path()
    if not (base / "model_index.json").is_file():
        raise ConformanceInputError(base, "no model_index.json: build the model first "
                                    f"(conformance train {args.model})")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    recipe = LoraRecipe(model=args.model, steps=args.steps, rank=args.rank, seed=args.seed)
    start = time.perf_counter()
    summary = fit_lora(recipe, base, out)
    print(json.dumps(summary | {"seconds": round(time.perf_counter() - start, 1)}, indent=2,
                     sort_keys=True))
    return 0


def register(subparsers: Any) -> None:
    """Add ``conformance lora fit`` to an argparse ``subparsers`` object."""
    p = subparsers.add_parser("lora", help="fit a tiny LoRA adapter for a shipped model",
                              description="LoRA adapters for the tiny models.")
    sub = p.add_subparsers(dest="lora_command", metavar="ACTION", required=True)
    f = sub.add_parser("fit", help="fit a LoRA on tiny-sd (fixed steps and seeds)",
                       description="Fit a rank-R LoRA that draws tiny-sd's shapes in negative; "
                       f"writes {WEIGHTS} and {SUMMARY} (with the measured effect).")
    f.add_argument("--model", choices=["tiny-sd"], default="tiny-sd")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--steps", type=int, default=LoraRecipe.steps)
    f.add_argument("--rank", type=int, default=LoraRecipe.rank)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    f.add_argument("--base", default=None, help="the model's pipeline folder (default: the "
                   "shipped fixture)")
    f.add_argument("--force", action="store_true", help="replace a non-empty --out")
    f.set_defaults(func=_fit)
