"""LoRA adapters: applied to pipelines for a case's ``lora = [...]``.

Applying (:func:`apply_lora`) goes through diffusers' own ``load_lora_weights`` and
``set_adapters`` (its PEFT backend, so the ``peft`` package must be installed; without it
the case's items skip with the install command). Only ``.safetensors`` files are read, by
``safetensors`` itself, and handed to diffusers as a state dict.

The shipped adapter (``fixtures/tiny-sd-lora``) is fitted by the fixture tooling of a source
checkout, ``python -m fixtures.build lora fit`` (:mod:`fixtures.build.lora_fit`).
"""

from __future__ import annotations

from typing import Any

from conformance.errors import ConformanceInputError
from conformance.models import ModelUnavailable


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
