"""Tests of the fixture tooling (``fixtures/build``): data set, tokenizers, training, LoRA
fitting and its command line, ``python -m fixtures.build``."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fixtures.build import data, tokenizers, train
from fixtures.build.__main__ import PROG, main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- data set


def test_dataset_is_deterministic_from_seed() -> None:
    a_img, a_cap = data.generate(12, 64, seed=7)
    b_img, b_cap = data.generate(12, 64, seed=7)
    c_img, c_cap = data.generate(12, 64, seed=8)
    assert a_img.shape == (12, 64, 64, 3) and a_img.dtype == np.uint8
    assert np.array_equal(a_img, b_img) and a_cap == b_cap
    assert not np.array_equal(a_img, c_img) or a_cap != c_cap


def test_dataset_sizes_share_scenes() -> None:
    _, cap64 = data.generate(4, 64, seed=3)
    img96, cap96 = data.generate(4, 96, seed=3)
    assert img96.shape == (4, 96, 96, 3)
    assert cap64 == cap96
    allowed = set(data.all_captions())
    assert all(c in allowed for c in cap64)


def test_dataset_captions_cover_layouts_and_vocabulary() -> None:
    _, caps = data.generate(300, 32, seed=0)
    assert any(" above " in c for c in caps)
    assert any(" left of " in c for c in caps)
    assert any(" above " not in c and " left of " not in c for c in caps)
    words = set(data.vocabulary())
    assert {w for c in caps for w in c.split()} <= words


def test_dataset_batches_alternate_sizes() -> None:
    ds = data.ShapesDataset((64, 96), (10, 6), seed=1)
    it = ds.batches((4, 2), seed=0)
    sizes = [next(it)[1].shape[1:3] for _ in range(4)]
    assert sizes == [(64, 64), (96, 96), (64, 64), (96, 96)]


def test_render_draws_requested_colour() -> None:
    scene = data.Scene((data.Shape("square", "red", 0.5, 0.5, 0.3),), "white", "single")
    img = np.asarray(data.render(scene, 64))
    assert tuple(img[32, 32]) == data.COLOURS["red"]
    assert tuple(img[2, 2]) == (250, 250, 250)
    assert scene.caption == "a red square on a white background"


# ----------------------------------------------------------------------------- tokenizers


def test_clip_tokenizer_roundtrip(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, CLIPTokenizer

    tokenizers.save_clip_tokenizer(tmp_path)
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "merges.txt").is_file()
    built = tokenizers.build_clip_tokenizer()
    loaded = CLIPTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    auto = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    caption = "a red circle left of a blue square on a gradient background"
    ids = built(caption).input_ids
    assert loaded(caption).input_ids == ids == auto(caption).input_ids
    assert len(ids) == len(caption.split()) + 2  # one token per word + bos/eos
    assert loaded.decode(ids, skip_special_tokens=True) == caption
    assert loaded.model_max_length == 77
    padded = loaded(caption, padding="max_length", max_length=77).input_ids
    assert len(padded) == 77
    # words outside the caption vocabulary still tokenize
    assert loaded.decode(loaded("zebra 42").input_ids, skip_special_tokens=True) == "zebra 4 2"


def test_t5_tokenizer_roundtrip(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, T5Tokenizer

    tokenizers.save_t5_tokenizer(tmp_path)
    built = tokenizers.build_t5_tokenizer()
    loaded = T5Tokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    auto = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    caption = "a green triangle above a purple square on a black background"
    ids = built(caption).input_ids
    assert loaded(caption).input_ids == ids == auto(caption).input_ids
    assert len(ids) == len(caption.split()) + 1  # one piece per word + </s>
    assert ids[-1] == loaded.eos_token_id
    assert loaded.decode(ids, skip_special_tokens=True) == caption
    assert loaded.convert_tokens_to_ids("<extra_id_0>") == len(loaded) - 1
    assert len([t for t in loaded.get_vocab() if t.startswith("<extra_id_")]) == 100


# ----------------------------------------------------------------------------- CLI


def _train_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG)
    sub = parser.add_subparsers(dest="cmd")
    train.register(sub)
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


def test_train_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    rc = _train_cli(["train", "tiny-sd", "--out", str(out), "--steps-vae", "1"])
    assert rc != 0
    err = capsys.readouterr().err
    assert str(out) in err and "--force" in err
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_train_parser_defaults() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    train.register(sub)
    args = parser.parse_args(["train", "tiny-flux", "--out", "x"])
    assert args.threads == 1 and args.seed == 0 and not args.force
    assert args.steps_vae is None and args.steps_denoiser is None
    assert callable(args.func)


# ----------------------------------------------------------------------------- fitting


def test_lora_fit_is_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    from fixtures.build.lora_fit import WEIGHTS, LoraRecipe, fit_lora

    recipe = LoraRecipe(steps=2, images=32, batch=4)
    fit_lora(recipe, FIXTURES / "tiny-sd", tmp_path / "a")
    fit_lora(recipe, FIXTURES / "tiny-sd", tmp_path / "b")
    a, b = (tmp_path / x / WEIGHTS for x in "ab")
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "lora.json").read_bytes() == (tmp_path / "b" / "lora.json"
                                                            ).read_bytes()
    state = load_file(str(a))
    assert state and all(k.startswith("unet.") for k in state)
    assert any("lora_A" in k for k in state) and any("lora_B" in k for k in state)


def test_vae_mse_finetune_is_deterministic(tmp_path: Path) -> None:
    from dataclasses import replace

    recipe = replace(train.RECIPES["tiny-sd-vae-mse"], steps_vae=2, n_images=(8, 4))
    train.finetune_component(recipe, tmp_path / "a", FIXTURES / "tiny-sd")
    train.finetune_component(recipe, tmp_path / "b", FIXTURES / "tiny-sd")
    name = "diffusion_pytorch_model.safetensors"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert json.loads((tmp_path / "a" / "config.json").read_text())["_class_name"] == \
        "AutoencoderKL"


def test_lora_cli_is_registered_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lora"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["lora", "fit", "--out", str(out), "--steps", "1"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    with pytest.raises(SystemExit):
        main(["lora", "fit", "--model", "tiny-flux", "--out", str(out)])


# ----------------------------------------------------------------------------- the command


def _options(parser: argparse.ArgumentParser, *words: str) -> dict[str, list[str]]:
    """``{sub-command: its option strings}`` below ``words`` of ``parser``."""
    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: sorted(s for a in sub._actions for s in a.option_strings)
            for name, sub in action.choices.items()}


def test_the_commands_keep_their_names_and_flags() -> None:
    """What ``conformance train`` / ``lora fit`` / ``montage`` took, under the new command."""
    from fixtures.build.__main__ import build_parser

    parser = build_parser()
    options = _options(parser)
    assert sorted(options) == ["lora", "montage", "train"]
    assert options["train"] == ["--force", "--help", "--images", "--out", "--seed",
                                "--steps-denoiser", "--steps-vae", "--threads", "-h"]
    assert options["montage"] == ["--fixtures", "--help", "--out", "--seed", "--sizes",
                                  "--threads", "-h"]
    assert _options(parser, "lora") == {"fit": ["--base", "--force", "--help", "--model",
                                                "--out", "--rank", "--seed", "--steps",
                                                "--threads", "-h"]}
    args = parser.parse_args(["train", "tiny-sd-vae-mse", "--out", "x"])
    assert (args.command, args.model, args.func) == ("train", "tiny-sd-vae-mse", train._run)


def test_montage_draws_the_checkouts_fixtures_by_default() -> None:
    from fixtures.build import montage

    assert montage.FIXTURES_DIR == FIXTURES
    assert (montage.FIXTURES_DIR / "checksums.json").is_file()


def test_bad_input_is_one_line_naming_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A base folder with no pipeline: one line, exit status 2, nothing written."""
    base = tmp_path / "empty"
    base.mkdir()
    assert main(["lora", "fit", "--base", str(base), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"{PROG} lora: error: {base}: no model_index.json: build the model first "
        f"({PROG} train tiny-sd)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_an_interrupt_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "_run", interrupted)
    assert main(["train", "tiny-sd", "--out", "x"]) == 130
    assert capsys.readouterr().err == f"{PROG} train: interrupted\n"


def test_the_command_conformance_names_runs_from_the_checkout_root() -> None:
    """``conformance train --help`` prints the command that runs it now; run from the
    checkout's root, that command works (``fixtures`` beside ``conformance``)."""
    from conformance.cli import moved_message

    line = moved_message(["train", "--help"])
    assert line is not None
    command = line.split(" run: ", 1)[1]
    assert command == f"{PROG} train --help"
    proc = subprocess.run(["sh", "-c", command.replace("python", shlex.quote(sys.executable),
                                                       1)],
                          cwd=FIXTURES.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: {PROG} train ")


def test_the_tooling_is_not_part_of_any_fixture() -> None:
    """``checksums.json`` lists the model folders only: the code beside them enters no
    fixture's checksums, so changing it never makes a shipped model fail its check."""
    listed = json.loads((FIXTURES / "checksums.json").read_text())
    assert "build" not in listed
    assert all((FIXTURES / name / "model_index.json").is_file()
               or (FIXTURES / name / "config.json").is_file()
               or (FIXTURES / name / "lora.json").is_file() for name in listed)
