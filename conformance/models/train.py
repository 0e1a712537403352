"""Train the tiny pipelines on the synthetic captioned-shapes data set.

Both models train in two stages with fixed step budgets and seeds (never wall time):

* tiny-sd: AutoencoderKL (L1 + MSE + 1e-6 KL), then the UNet with v-prediction on the
  scaled-linear schedule rescaled to zero terminal SNR, min-SNR-5 weighting (floored at 1 so
  the pure-noise end still trains), 10 % caption dropout and an EMA copy. With the plain
  scaled-linear schedule the last training step still leaks the image mean through the noise
  (at 16x16 latents its SNR is about 1), the UNet learned to read the background from it and
  ignored the caption, and samples came out with random backgrounds.
* tiny-flux: AutoencoderKL with 16 latent channels, then the transformer with rectified-flow
  matching (target ``noise - x0``, logit-normal sigmas), 10 % caption dropout and an EMA copy;
  the T5 encoder trains with it (see ``Recipe.train_text_encoder_2``).

Batches alternate between 64 px and 96 px images so the models also draw at 96 px. The CLIP
encoders stay frozen at their random init; frozen encoders' outputs are cached per caption.

Command line (wired in by ``register``)::

    conformance train tiny-sd --out DIR [--steps-vae N] [--steps-denoiser N] [--seed S]
                              [--threads T] [--force]
    conformance train tiny-sd-vae-mse --out fixtures/tiny-sd-vae-mse   # decoder, MSE only
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FluxPipeline, StableDiffusionPipeline

from conformance.models import tiny
from conformance.models.data import ShapesDataset, to_tensor_range


@dataclass(frozen=True)
class Recipe:
    """Step budgets and hyper-parameters for one model."""

    model: str
    steps_vae: int
    steps_denoiser: int
    seed: int = 0
    sizes: tuple[int, ...] = tiny.TRAIN_SIZES
    n_images: tuple[int, ...] = (20000, 10000)
    vae_batch: tuple[int, ...] = (8, 4)
    vae_lr: float = 1e-3
    vae_shape_weight: float = 4.0
    vae_sample_posterior: bool = False
    den_batch: tuple[int, ...] = (32, 16)
    den_lr: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    grad_clip: float = 1.0
    log_every: int = 25
    train_text_encoder_2: bool = False


RECIPES: dict[str, Recipe] = {
    "tiny-sd": Recipe(model="tiny-sd", steps_vae=1000, steps_denoiser=1600, den_batch=(32, 12)),
    "tiny-flux": Recipe(
        model="tiny-flux",
        steps_vae=1000,
        steps_denoiser=3000,
        den_batch=(32, 24),
        den_lr=6e-4,
        train_text_encoder_2=True,
    ),
    # a second VAE for tiny-sd: its decoder fine-tuned with plain MSE (no L1, no shape
    # weighting), like SD's "ft-MSE" VAE; the encoder and so the latent space are unchanged
    "tiny-sd-vae-mse": Recipe(
        model="tiny-sd-vae-mse",
        steps_vae=300,
        steps_denoiser=0,
        n_images=(2000, 1000),
        vae_lr=3e-4,
        warmup=20,
    ),
}
#: recipes that fine-tune one component of a shipped model: recipe -> (model, component)
COMPONENT_RECIPES: dict[str, tuple[str, str]] = {"tiny-sd-vae-mse": ("tiny-sd", "vae")}


@dataclass
class StageResult:
    name: str
    steps: int
    seconds: float
    final_loss: float
    extra: dict[str, float] = field(default_factory=dict)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


class _Ema:
    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, model.parameters(), strict=True):
            s.mul_(d).add_(p.detach(), alpha=1.0 - d)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, model.parameters(), strict=True):
            p.copy_(s)


class _Meter:
    """Running loss average and seconds per step for progress lines."""

    def __init__(self, name: str, total: int, every: int) -> None:
        self.name, self.total, self.every = name, total, every
        self.losses: list[float] = []
        self.t0 = self.tlast = time.perf_counter()

    def step(self, i: int, loss: float) -> None:
        self.losses.append(loss)
        if (i + 1) % self.every == 0 or i + 1 == self.total:
            now = time.perf_counter()
            n = min(self.every, len(self.losses))
            avg = float(np.mean(self.losses[-n:]))
            sps = (now - self.tlast) / n
            self.tlast = now
            eta = sps * (self.total - i - 1)
            _log(
                f"[{self.name}] step {i + 1}/{self.total} loss {avg:.5f} "
                f"{sps:.3f} s/step eta {eta:.0f} s"
            )

    def final(self) -> float:
        tail = self.losses[-max(1, min(100, len(self.losses))) :]
        return float(np.mean(tail))

    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def optimizer_step(opt: Any, sched: Any, params: Any, loss: Any, grad_clip: float) -> None:
    """One step of every training loop here: backward, clip the gradient norm, step the
    optimizer and the learning-rate schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    sched.step()


def _batches(
    data: ShapesDataset, batch_sizes: tuple[int, ...], seed: int
) -> Iterator[tuple[int, torch.Tensor, list[str]]]:
    for size, imgs, caps in data.batches(batch_sizes, seed):
        yield size, torch.from_numpy(to_tensor_range(imgs)), caps


def shape_weights(x: torch.Tensor, extra: float) -> torch.Tensor:
    """Per-pixel loss weights ``1 + extra`` on shapes, 1 on the background.

    A row's background is the mean of its first and last pixel (shapes never touch the left and
    right edges; backgrounds are solid or vertical gradients). Shapes cover a small part of each
    image, and without the extra weight the decoder merged the six colours into two or three.
    """
    bg = 0.5 * (x[..., :1] + x[..., -1:])
    mask = ((x - bg).abs().amax(dim=1, keepdim=True) > 0.1).to(x.dtype)
    return 1.0 + extra * mask


def _encode(
    vae: AutoencoderKL, x: torch.Tensor, recipe: Recipe, gen: torch.Generator | None
) -> torch.Tensor:
    dist = vae.encode(x).latent_dist
    if recipe.vae_sample_posterior:
        z: torch.Tensor = dist.sample(generator=gen)
    else:
        z = dist.mode()
    return z


def train_vae(vae: AutoencoderKL, data: ShapesDataset, recipe: Recipe) -> StageResult:
    """Reconstruction training: shape-weighted L1 + MSE on posterior samples + 1e-6 KL."""
    torch.manual_seed(recipe.seed + 10)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(recipe.warmup, recipe.steps_vae))
    meter = _Meter(f"{recipe.model} vae", recipe.steps_vae, recipe.log_every)
    it = _batches(data, recipe.vae_batch, recipe.seed + 11)
    for i in range(recipe.steps_vae):
        _, x, _ = next(it)
        post = vae.encode(x).latent_dist
        z = post.sample() if recipe.vae_sample_posterior else post.mode()
        rec = vae.decode(z).sample
        kl = post.kl().mean() / x[0].numel()
        w = shape_weights(x, recipe.vae_shape_weight)
        err = (rec - x).abs() + (rec - x).square()
        loss = (w * err).mean() / w.mean() + 1e-6 * kl
        optimizer_step(opt, sched, vae.parameters(), loss, recipe.grad_clip)
        meter.step(i, loss.item())
    vae.eval()
    # held-out reconstruction error and latent statistics (for scaling / shift factors)
    held = ShapesDataset(recipe.sizes, (64, 32), recipe.seed + 999)
    maes: list[float] = []
    lat: list[torch.Tensor] = []
    with torch.no_grad():
        for size in recipe.sizes:
            x = torch.from_numpy(to_tensor_range(held.images[size]))
            for chunk in x.split(16):
                z = _encode(vae, chunk, recipe, None)
                rec = vae.decode(z).sample.clamp(-1, 1)
                maes.append(float((rec - chunk).abs().mean() * 127.5))
                lat.append(z.flatten())
    allz = torch.cat(lat)
    mae = float(np.mean(maes))
    _log(
        f"[{recipe.model} vae] held-out MAE {mae:.2f}/255 latent mean {allz.mean():.4f} "
        f"std {allz.std():.4f}"
    )
    return StageResult(
        "vae",
        recipe.steps_vae,
        meter.seconds(),
        meter.final(),
        {
            "heldout_mae_255": mae,
            "latent_mean": float(allz.mean()),
            "latent_std": float(allz.std()),
        },
    )


class _TextCache:
    def __init__(self, encode: Callable[[list[str]], tuple[torch.Tensor, ...]]) -> None:
        self.encode = encode
        self.cache: dict[str, tuple[torch.Tensor, ...]] = {}

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, ...]:
        missing = sorted({c for c in captions if c not in self.cache})
        if missing:
            with torch.no_grad():
                outs = self.encode(missing)
            for j, c in enumerate(missing):
                self.cache[c] = tuple(o[j].clone() for o in outs)
        parts = [self.cache[c] for c in captions]
        return tuple(torch.stack([p[k] for p in parts]) for k in range(len(parts[0])))


def _drop_captions(captions: list[str], p: float, gen: torch.Generator) -> list[str]:
    keep = torch.rand(len(captions), generator=gen) >= p
    return [c if k else "" for c, k in zip(captions, keep.tolist(), strict=True)]


def train_unet(pipe: StableDiffusionPipeline, data: ShapesDataset, recipe: Recipe) -> StageResult:
    """Denoiser training of ``pipe.unet`` on VAE latents (min-SNR weighting, EMA).

    The noise schedule and the prediction type come from ``pipe.scheduler`` so training matches
    sampling exactly (``epsilon`` or ``v_prediction``).
    """
    unet, vae = pipe.unet, pipe.vae
    sf = float(vae.config.scaling_factor)
    cfg = pipe.scheduler.config
    alphas_cum = pipe.scheduler.alphas_cumprod.to(torch.float64)
    snr = (alphas_cum / (1.0 - alphas_cum)).float()
    alphas_cum = alphas_cum.float()
    v_pred = cfg.prediction_type == "v_prediction"

    def encode(caps: list[str]) -> tuple[torch.Tensor, ...]:
        emb, _ = pipe.encode_prompt(caps, torch.device("cpu"), 1, False)
        return (emb,)

    text = _TextCache(encode)
    torch.manual_seed(recipe.seed + 20)
    gen = torch.Generator().manual_seed(recipe.seed + 21)
    unet.train()
    ema = _Ema(unet, recipe.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe.den_lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(recipe.warmup, recipe.steps_denoiser))
    meter = _Meter(f"{recipe.model} unet", recipe.steps_denoiser, recipe.log_every)
    it = _batches(data, recipe.den_batch, recipe.seed + 22)
    for i in range(recipe.steps_denoiser):
        _, x, caps = next(it)
        with torch.no_grad():
            z0 = _encode(vae, x, recipe, gen) * sf
        (cond,) = text(_drop_captions(caps, recipe.caption_dropout, gen))
        b = z0.shape[0]
        t = torch.randint(0, cfg.num_train_timesteps, (b,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = alphas_cum[t].view(b, 1, 1, 1)
        zt = a.sqrt() * z0 + (1.0 - a).sqrt() * noise
        pred = unet(zt, t, cond).sample
        if v_pred:
            target = a.sqrt() * noise - (1.0 - a).sqrt() * z0
            w = torch.clamp(snr[t], min=1.0, max=recipe.min_snr_gamma) / (snr[t] + 1.0)
        else:
            target = noise
            w = torch.clamp(snr[t], max=recipe.min_snr_gamma) / snr[t]
        per = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (w * per).mean()
        optimizer_step(opt, sched, unet.parameters(), loss, recipe.grad_clip)
        ema.update(unet, i)
        meter.step(i, per.mean().item())
    ema.copy_to(unet)
    unet.eval()
    return StageResult("unet", recipe.steps_denoiser, meter.seconds(), meter.final())


def train_flux_transformer(pipe: FluxPipeline, data: ShapesDataset, recipe: Recipe) -> StageResult:
    """Rectified-flow training of ``pipe.transformer`` (predicts ``noise - x0``)."""
    tr, vae = pipe.transformer, pipe.vae
    sf = float(vae.config.scaling_factor)
    shift = float(vae.config.shift_factor or 0.0)
    max_len = int(tiny.SAMPLING_DEFAULTS["tiny-flux"]["max_sequence_length"])

    cpu = torch.device("cpu")
    t5 = pipe.text_encoder_2

    def encode_pooled(caps: list[str]) -> tuple[torch.Tensor, ...]:
        return (pipe._get_clip_prompt_embeds(prompt=caps, device=cpu),)

    def encode_t5(caps: list[str]) -> torch.Tensor:
        emb: torch.Tensor = pipe._get_t5_prompt_embeds(
            prompt=caps, max_sequence_length=max_len, device=cpu
        )
        return emb

    pooled_text = _TextCache(encode_pooled)
    t5_text = _TextCache(lambda caps: (encode_t5(caps),))
    torch.manual_seed(recipe.seed + 30)
    gen = torch.Generator().manual_seed(recipe.seed + 31)
    trained = torch.nn.ModuleList([tr])
    if recipe.train_text_encoder_2:
        # T5 has no absolute positions and Flux gives text tokens no RoPE position, so a frozen
        # random T5 hands the transformer a bag of words; training it lets word order through.
        t5.requires_grad_(True)
        trained.append(t5)
    trained.train()
    ema = _Ema(trained, recipe.ema_decay)
    opt = torch.optim.AdamW(trained.parameters(), lr=recipe.den_lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(recipe.warmup, recipe.steps_denoiser))
    meter = _Meter(f"{recipe.model} transformer", recipe.steps_denoiser, recipe.log_every)
    it = _batches(data, recipe.den_batch, recipe.seed + 32)
    txt_ids = torch.zeros(max_len, 3)
    img_ids: dict[int, torch.Tensor] = {}
    for i in range(recipe.steps_denoiser):
        _, x, caps = next(it)
        with torch.no_grad():
            z0 = (_encode(vae, x, recipe, gen) - shift) * sf
        b, c, h, w = z0.shape
        if h not in img_ids:
            img_ids[h] = FluxPipeline._prepare_latent_image_ids(
                b, h // 2, w // 2, torch.device("cpu"), torch.float32
            )
        dropped = _drop_captions(caps, recipe.caption_dropout, gen)
        (pooled,) = pooled_text(dropped)
        if recipe.train_text_encoder_2:
            emb = encode_t5(dropped)
        else:
            (emb,) = t5_text(dropped)
        sigma = torch.sigmoid(torch.randn(b, generator=gen))
        noise = torch.randn(z0.shape, generator=gen)
        s4 = sigma.view(b, 1, 1, 1)
        zt = (1.0 - s4) * z0 + s4 * noise
        packed = FluxPipeline._pack_latents(zt, b, c, h, w)
        target = FluxPipeline._pack_latents(noise - z0, b, c, h, w)
        pred = tr(
            hidden_states=packed,
            timestep=sigma,
            pooled_projections=pooled,
            encoder_hidden_states=emb,
            txt_ids=txt_ids,
            img_ids=img_ids[h],
            return_dict=False,
        )[0]
        loss = F.mse_loss(pred, target)
        optimizer_step(opt, sched, trained.parameters(), loss, recipe.grad_clip)
        ema.update(trained, i)
        meter.step(i, loss.item())
    ema.copy_to(trained)
    trained.eval()
    trained.requires_grad_(False)
    return StageResult("transformer", recipe.steps_denoiser, meter.seconds(), meter.final())


def finetune_vae_decoder_mse(
    vae: AutoencoderKL, data: ShapesDataset, recipe: Recipe
) -> StageResult:
    """Fine-tune ``vae``'s decoder (and post-quant conv) with a plain MSE loss.

    The encoder is frozen, so latents are those the denoiser was trained on; only how they
    are decoded changes. Held-out MAE is measured before and after.
    """
    torch.manual_seed(recipe.seed + 50)
    vae.requires_grad_(False)
    vae.eval()
    trained = torch.nn.ModuleList([vae.decoder, vae.post_quant_conv])
    trained.requires_grad_(True)
    trained.train()
    opt = torch.optim.AdamW(trained.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(recipe.warmup, recipe.steps_vae))
    meter = _Meter(f"{recipe.model}", recipe.steps_vae, recipe.log_every)
    held = ShapesDataset(recipe.sizes, (64, 32), recipe.seed + 999)

    def heldout_mae() -> float:
        maes = []
        with torch.no_grad():
            for size in recipe.sizes:
                x = torch.from_numpy(to_tensor_range(held.images[size]))
                for chunk in x.split(16):
                    rec = vae.decode(vae.encode(chunk).latent_dist.mode()).sample.clamp(-1, 1)
                    maes.append(float((rec - chunk).abs().mean() * 127.5))
        return float(np.mean(maes))

    trained.eval()
    before = heldout_mae()
    trained.train()
    it = _batches(data, recipe.vae_batch, recipe.seed + 51)
    for i in range(recipe.steps_vae):
        _, x, _ = next(it)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        loss = F.mse_loss(vae.decode(z).sample, x)
        optimizer_step(opt, sched, trained.parameters(), loss, recipe.grad_clip)
        meter.step(i, loss.item())
    trained.eval()
    vae.requires_grad_(False)
    after = heldout_mae()
    _log(f"[{recipe.model}] held-out MAE {before:.2f} -> {after:.2f} /255")
    return StageResult("vae-decoder-mse", recipe.steps_vae, meter.seconds(), meter.final(),
                       {"heldout_mae_255_before": round(before, 3),
                        "heldout_mae_255": round(after, 3)})


def finetune_component(recipe: Recipe, out_dir: Path, base: Path | None = None
                       ) -> dict[str, Any]:
    """Fine-tune one component of a shipped model (:data:`COMPONENT_RECIPES`) and save it to
    ``out_dir`` as a diffusers component folder, weights in float16 (half the size; the
    suite loads it in each precision's dtype)."""
    from conformance.models import MODELS

    model, component = COMPONENT_RECIPES[recipe.model]
    from conformance.models.sources import check_model_folder

    base = base or MODELS[model].verified_path()
    check_model_folder(base, f"base {base}")  # the bounds of every model folder
    t0 = time.perf_counter()
    c0 = time.process_time()
    vae = AutoencoderKL.from_pretrained(str(base / component), local_files_only=True,
                                        use_safetensors=True)
    data = ShapesDataset(recipe.sizes, recipe.n_images, recipe.seed)
    stage = finetune_vae_decoder_mse(vae, data, recipe)
    summary: dict[str, Any] = {
        "model": recipe.model,
        "base": f"{model}/{component}",
        "recipe": asdict(recipe),
        "stages": [asdict(stage)],
        "weights_dtype": "float16",
        "parameters": {"trained": sum(p.numel() for p in vae.decoder.parameters())
                       + sum(p.numel() for p in vae.post_quant_conv.parameters()),
                       "total": sum(p.numel() for p in vae.parameters())},
        "total_seconds": round(time.perf_counter() - t0, 1),
        "total_cpu_seconds": round(time.process_time() - c0, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }

    def fill(tmp: Path) -> None:
        vae.to(torch.float16).save_pretrained(str(tmp), safe_serialization=True)
        tiny.write_json(tmp / "training.json", summary, "training summary")

    tiny.write_dir(out_dir, fill, f"{recipe.model} component folder")
    _log(f"[{recipe.model}] saved to {out_dir} after {summary['total_seconds']:.0f} s")
    return summary


def _freeze(*modules: torch.nn.Module) -> None:
    for m in modules:
        m.requires_grad_(False)
        m.eval()


def train_model(recipe: Recipe, out_dir: Path) -> dict[str, Any]:
    """Train ``recipe.model`` and save the pipeline to ``out_dir`` (written via a temp dir)."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    _log(f"[{recipe.model}] generating data set {recipe.n_images} at {recipe.sizes}")
    data = ShapesDataset(recipe.sizes, recipe.n_images, recipe.seed)
    _log(f"[{recipe.model}] data set ready in {time.perf_counter() - t0:.1f} s")
    stages: list[StageResult] = []
    if recipe.model == "tiny-sd":
        comps = tiny.sd_components(recipe.seed)
        pipe: StableDiffusionPipeline | FluxPipeline = tiny.make_sd_pipeline(comps)
        _freeze(pipe.text_encoder)
        stages.append(train_vae(pipe.vae, data, recipe))
        pipe.vae.register_to_config(scaling_factor=round(1.0 / stages[0].extra["latent_std"], 5))
        _freeze(pipe.vae)
        stages.append(train_unet(pipe, data, recipe))
    elif recipe.model == "tiny-flux":
        comps = tiny.flux_components(recipe.seed)
        pipe = tiny.make_flux_pipeline(comps)
        _freeze(pipe.text_encoder, pipe.text_encoder_2)  # text_encoder_2 may be unfrozen later
        stages.append(train_vae(pipe.vae, data, recipe))
        pipe.vae.register_to_config(
            scaling_factor=round(1.0 / stages[0].extra["latent_std"], 5),
            shift_factor=round(stages[0].extra["latent_mean"], 5),
        )
        _freeze(pipe.vae)
        stages.append(train_flux_transformer(pipe, data, recipe))
    else:
        raise ValueError(f"unknown model {recipe.model!r}")
    total = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "model": recipe.model,
        "recipe": asdict(recipe),
        "stages": [asdict(s) for s in stages],
        "total_seconds": round(total, 1),
        "total_cpu_seconds": round(time.process_time() - c0, 1),
        "threads": torch.get_num_threads(),
        "parameters": tiny.parameter_counts(pipe),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }

    def fill(tmp: Path) -> None:
        tiny.save_pipeline(pipe, tmp)
        tiny.write_json(tmp / "training.json", summary, "training summary")

    tiny.write_dir(out_dir, fill, f"{recipe.model} pipeline folder")
    _log(f"[{recipe.model}] saved to {out_dir} after {total:.0f} s")
    return summary


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        print(
            f"error: output directory {out} exists and is not empty; pass --force to replace it",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.model]
    changes: dict[str, Any] = {"seed": args.seed}
    if args.steps_vae is not None:
        changes["steps_vae"] = args.steps_vae
    if args.steps_denoiser is not None:
        changes["steps_denoiser"] = args.steps_denoiser
    if args.images is not None:
        changes["n_images"] = tuple(args.images for _ in recipe.sizes)
    recipe = replace(recipe, **changes)
    if recipe.model in COMPONENT_RECIPES:
        summary = finetune_component(recipe, out)
    else:
        summary = train_model(recipe, out)
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "train",
        help="train a tiny pipeline on the synthetic shapes data set",
        description="Train tiny-sd or tiny-flux (fixed step budgets and seeds), or "
        "fine-tune tiny-sd's VAE decoder with MSE (tiny-sd-vae-mse).",
    )
    p.add_argument("model", choices=sorted(RECIPES))
    p.add_argument("--out", required=True, help="output pipeline directory")
    p.add_argument("--steps-vae", type=int, default=None, help="VAE steps (recipe default)")
    p.add_argument(
        "--steps-denoiser", type=int, default=None, help="UNet/transformer steps (recipe default)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--images", type=int, default=None, help="images per size (recipe default)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=_run)
