"""Plain dtypes: every component of the pipeline loaded in one dtype through
``torch_dtype`` (``fp32``, the reference, ``bf16``, ``fp16``).

Their images depend on the battery's float32 probes and, below float32, on the probes run in
their own dtype; VAE checks, LoRA adapters and real checkpoints take these precisions only.
"""

from __future__ import annotations

from conformance.precision import Precision, PrecisionKind, register


class DtypeKind(PrecisionKind):
    name = "dtype"
    plain = True

    def depends_on_probe(self, precision: Precision, key: str, owner: PrecisionKind | None
                         ) -> bool:
        return owner is None and key.endswith(("/fp32", f"/{precision.name}"))


KIND = DtypeKind()

register(KIND, (
    Precision("fp32", KIND, "float32", None, 32, "all components in float32",
              identity_line=True),
    Precision("bf16", KIND, "bfloat16", None, 16, "all components in bfloat16",
              identity_line=True),
    Precision("fp16", KIND, "float16", None, 16, "all components in float16",
              identity_line=True),
))
