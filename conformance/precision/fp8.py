"""fp8 storage: the denoiser's weights stored in an fp8 format and computed in float32
through diffusers' ``enable_layerwise_casting``; the other components stay float32.

Their images depend on the battery's float32 probes and on the fp8 cast probe of their own
format (``fp8-e4m3-linear`` for ``fp8-e4m3``).
"""

from __future__ import annotations

from typing import Any

from conformance.precision import Precision, PrecisionKind, register


class Fp8StorageKind(PrecisionKind):
    name = "fp8-storage"
    prefix = "fp8-"
    probe_prefix = "fp8-"

    def depends_on_probe(self, precision: Precision, key: str, owner: PrecisionKind | None
                         ) -> bool:
        return key.endswith("/fp32") and (owner is None or key.startswith(precision.name))

    def prepare(self, precision: Precision, denoiser: Any) -> None:
        import torch

        denoiser.enable_layerwise_casting(storage_dtype=precision.torch_storage_dtype(),
                                          compute_dtype=torch.float32)


KIND = Fp8StorageKind()

register(KIND, (
    Precision("fp8-e4m3", KIND, "float32", "float8_e4m3fn", 8,
              "denoiser weights stored as float8 e4m3, computed in float32",
              identity_line=True),
    Precision("fp8-e5m2", KIND, "float32", "float8_e5m2", 8,
              "denoiser weights stored as float8 e5m2, computed in float32"),
))
