"""VAE precision report: decode, photo round trips and 8-bit latents per model x precision.

For each VAE (``fixtures/<model>/vae``) in fp32, bf16 and fp16:

* seeded latents (CPU generator) decoded and compared with the fp32 decode: every
  registered metric (MAE, max abs difference, PSNR, SSIM, pHash / dHash distance, FLIP...);
* scikit-image photographs encoded (latent mean) and decoded at each size: PSNR / SSIM
  against the photo, and the PSNR lost against the fp32 round trip;
* the latents quantized to 8 bits per value (per-channel min/max) and decoded: PSNR / SSIM
  against the float-latent round trip, the PSNR lost against the photo, and bytes against
  raw RGB and PNG.

Prints the Markdown table and writes it to ``docs/vae.md`` (``--out`` to change).

    python benchmarks/vae_report.py [--models tiny-sd tiny-flux] [--precisions fp32 bf16 fp16]
                                    [--sizes 64 96] [--threads 1] [--out docs/vae.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conformance import PROJECT_ROOT
from conformance import vae as V
from conformance.report import vae as R

DEFAULT_OUT = PROJECT_ROOT / "docs" / "vae.md"

INTRO = """\
# VAE precision

How much the suite's tiny VAEs change when they compute in bf16 or fp16 instead of fp32,
how well they reconstruct real photographs, and what storing their latents in 8 bits costs.
Regenerate with `python benchmarks/vae_report.py`; the bounds of `conformance/test_vae.py`,
the `[vae.*]` tables of `conformance/tolerances.toml`, were set from these numbers. The
decode table has a column per registered metric (`conformance.metrics.METRICS`).

The photographs are scikit-image's bundled astronaut, coffee, chelsea, rocket and
immunohistochemistry images, center-cropped and resized with LANCZOS. The tiny VAEs have
1-2 M parameters and are trained on synthetic shapes (`python -m fixtures.build train`; a
fixture that was never trained keeps its seeded initialisation and a scaling factor of 1), so
photographs come back blurred: the round-trip PSNR is low by design and says nothing about a
production VAE (the SD ft-MSE VAE reaches about 24.5 dB on COCO at 256 px). 8-bit latents
store one byte per latent value plus a float32 minimum and maximum per channel. The VAEs
table names the weights measured (SHA-256 of the safetensors files).
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(V.VAE_MODELS), metavar="MODEL")
    parser.add_argument(
        "--precisions", nargs="+", default=list(V.VAE_PRECISIONS), metavar="PRECISION"
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=list(V.DEFAULT_SIZES))
    parser.add_argument("--seed", type=int, default=V.DEFAULT_SEED)
    parser.add_argument(
        "--count",
        type=int,
        default=V.DEFAULT_LATENT_COUNT,
        help="seeded latents to decode (default %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--fixtures",
        type=Path,
        default=None,
        help="fixtures directory (default: $CONFORMANCE_FIXTURES or fixtures/)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="Markdown file to write (default docs/vae.md)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the checks, print the Markdown and write it to ``--out``."""
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        report = R.run_checks(
            args.models,
            args.precisions,
            args.sizes,
            fixtures_dir=args.fixtures,
            seed=args.seed,
            count=args.count,
        )
    except (V.MissingVaeError, V.MissingPhotoError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"vae_report: {message}", file=sys.stderr)
        return 2
    markdown = INTRO + "\n" + R.render_markdown(report)
    print(markdown, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown, encoding="utf-8")
    print(f"\nwritten: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
