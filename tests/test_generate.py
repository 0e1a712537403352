"""The invariance variants' machinery (conformance.generate): the cfg-split variant's
denoiser wrapper calls the denoiser once per half of the guidance batch."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from conformance.generate import VARIANTS, _split_batch_forward


@dataclass
class Output:
    sample: torch.Tensor

    def __getitem__(self, i: int) -> torch.Tensor:
        return (self.sample,)[i]


def recorder(kind: str = "tuple"):
    calls = []

    def forward(*args, **kwargs):
        calls.append((args, kwargs))
        main = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        out = main * 2 + (kwargs.get("encoder_hidden_states", 0) if "encoder_hidden_states"
                          in kwargs else 0)
        return (out, "extra") if kind == "tuple" else Output(out)

    return forward, calls


def test_an_even_batch_is_two_calls_with_every_batched_argument_split():
    forward, calls = recorder()
    run = _split_batch_forward(forward)
    sample = torch.arange(4.0).reshape(2, 2)
    text = torch.tensor([[10.0, 10.0], [20.0, 20.0]])
    out = run(sample, torch.tensor(5), encoder_hidden_states=text,
              added_cond_kwargs={"time_ids": torch.tensor([[1.0], [2.0]])}, return_dict=False)
    assert len(calls) == 2
    (a0, k0), (a1, k1) = calls
    assert torch.equal(a0[0], sample[:1]) and torch.equal(a1[0], sample[1:])
    assert torch.equal(a0[1], torch.tensor(5))  # a scalar timestep goes to both halves
    assert torch.equal(k0["encoder_hidden_states"], text[:1])
    assert torch.equal(k1["added_cond_kwargs"]["time_ids"], torch.tensor([[2.0]]))
    assert k0["return_dict"] is False
    assert out[1] == "extra" and torch.equal(out[0], sample * 2 + text)


def test_keyword_latents_and_an_output_object():
    forward, calls = recorder("object")
    out = _split_batch_forward(forward)(hidden_states=torch.ones(4, 3))
    assert len(calls) == 2 and isinstance(out, Output) and out.sample.shape == (4, 3)


@pytest.mark.parametrize("batch", [1, 3])
def test_a_batch_without_two_halves_is_one_call(batch):
    forward, calls = recorder()
    _split_batch_forward(forward)(torch.ones(batch, 2))
    assert len(calls) == 1


def test_the_variant_is_listed():
    assert "cfg-split" in VARIANTS
