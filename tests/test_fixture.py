"""The ``diffusion_golden`` fixture on one's own pipeline code (conformance.fixture): a test
file of one's own runs in pytester against the shipped tiny model; record, pass, a changed
image fails with metrics, a missing golden fails with the command that records it, unused
goldens are listed, xdist workers report to the controller."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conformance.fixture import as_image, item_names, precision_of
from conformance.golden import GoldenStore

OWN_TEST = '''
import numpy as np
import pytest
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image

from conformance.models import get_model

SHADE = 128
FLAT = 128


@pytest.fixture(scope="module")
def pipe():
    return StableDiffusionImg2ImgPipeline.from_pretrained(
        get_model("tiny-sd").path(), use_safetensors=True, local_files_only=True)


def test_img2img(diffusion_golden, pipe):
    init = Image.fromarray(np.full((32, 32, 3), SHADE, np.uint8))
    image = diffusion_golden.generate(pipe, name="gray", seed=3, prompt="a red circle",
                                      image=init, strength=0.7, num_inference_steps=4)
    assert image.shape == (32, 32, 3)


def test_check_array(diffusion_golden):
    diffusion_golden.check(np.full((8, 8, 3), FLAT, np.uint8), name="flat")
'''


@pytest.fixture(scope="module")
def warm_pipeline(warm_imports):
    """What the test file imports, before pytester snapshots the modules."""
    from diffusers import StableDiffusionImg2ImgPipeline  # noqa: F401


@pytest.fixture
def own(pytester, tmp_path, warm_pipeline):
    golden = pytester.path / "golden"  # beside the test module, as in a project
    results = tmp_path / "out" / "results.json"

    def go(*args, flat=128):
        pytester.makepyfile(test_mine=OWN_TEST.replace("FLAT = 128", f"FLAT = {flat}"))
        r = pytester.runpytest("-p", "no:randomly", "--golden-dir", str(golden),
                               "--results", str(results), *args)
        r.golden, r.results_path = golden, results
        return r

    return go


def outcomes(r):
    """The run's outcomes by ``<test>/<name>`` (ids are ``<node id>/<name>``)."""
    found = json.loads(r.results_path.read_text())["outcomes"]
    assert all("test_mine.py::" in o["id"] for o in found)
    return {o["id"].rsplit("::", 1)[-1]: o for o in found}


def test_a_missing_golden_fails_with_the_command_that_records_it(own):
    r = own()
    r.assert_outcomes(failed=2)
    r.stdout.fnmatch_lines([
        "no golden for test_mine/test-check-array-flat/8x8/fp32: *golden/test_mine holds no "
        "golden set; record this machine's (*) with: pytest "
        "test_mine.py::test_check_array --device cpu --threads 1 --golden-dir * --record"])
    r.stdout.fnmatch_lines(["*no golden: 2 fixture (test_mine): no golden set holds them; "
                            "failed (a diffusion_golden golden must exist; --record "
                            "records it)*"])
    found = outcomes(r)
    assert set(found) == {"test_img2img/gray", "test_check_array/flat"}
    assert {o["check"] for o in found.values()} == {"fixture"}


def test_record_then_exact_then_a_changed_image_fails_with_metrics(own):
    r = own("--record")
    r.stdout.fnmatch_lines(["*fixture: 2 recorded*", "* 2 recorded in *"])
    store = GoldenStore(r.golden)
    (cls,) = store.classes("test_mine")
    assert sorted(store.manifest("test_mine", cls).entries) == [
        "test_mine/test-check-array-flat/8x8/fp32", "test_mine/test-img2img-gray/32x32/fp32"]
    # the same validated layout as the suite's own sets: validate and matrix read them
    from conformance.cli import main

    assert main(["validate", str(r.golden), "--jobs", "1"]) == 0
    assert main(["matrix", str(r.golden), "--markdown", str(r.golden.parent / "m.md")]) == 0
    assert "test_mine/test-img2img-gray/32x32/fp32" in (r.golden.parent / "m.md").read_text()
    r = own()
    r.assert_outcomes(passed=2)
    found = outcomes(r)
    gray = found["test_img2img/gray"]
    assert gray["tier"] == "exact" and gray["golden_choice"]["by"] == "identity"
    assert len(json.loads(json.dumps(gray["step_deltas"]))) == 2  # strength 0.7 of 4 steps
    # another image under the same name: fails with the metrics and the images
    r = own(flat=200)
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*test_mine/test-check-array-flat/8x8/fp32 differs from the * "
                            "golden (chosen by identity*) at the exact tier*",
                            "*metrics: MAE=72.0000*", "*images: actual=*fixture/actual.png*"])


def test_changed_call_arguments_make_the_golden_stale(own, pytester):
    own("--record", "-k", "img2img")
    pytester.makepyfile(test_mine=OWN_TEST.replace("strength=0.7", "strength=0.5"))
    r = pytester.runpytest("-p", "no:randomly", "--golden-dir", str(pytester.path / "golden"),
                           "-k", "img2img")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*golden for test_mine/test-img2img-gray/32x32/fp32 is stale: the "
                            "case changed since recording (call.strength: 0.7 -> 0.5); "
                            "re-record with --record --force*"])


def test_unused_goldens_are_listed(own):
    own("--record")
    r = own("-k", "img2img")
    r.stdout.fnmatch_lines(["note: 1 diffusion_golden golden(s) under * were not used by "
                            "this run*",
                            "  */test_mine/*: test_mine/test-check-array-flat/8x8/fp32"])


def _tamper(golden, keep_probes: bool):
    """Replace the img2img golden's image by one a pixel off (its probes kept or dropped):
    a golden this machine no longer reproduces, though every module computes the same."""
    from conformance.cases import Item, Resolution
    from conformance.fixture import FixtureCase

    store = GoldenStore(golden)
    (cls,) = store.classes("test_mine")
    entry = store.lookup_id("test_mine", "test_mine/test-img2img-gray/32x32/fp32", cls)
    probes = store.load_probes(entry, cls) if keep_probes else None
    image = store.load_image(entry, cls).copy()
    image[0, 0, 0] ^= 1
    case = FixtureCase("test-img2img-gray", "test_mine", "", "", 0, 0, "", 0.0,
                       (Resolution(32, 32),), ("fp32",), params=tuple(entry.params.items()))
    item = Item(case, Resolution(32, 32), "fp32")
    identity = store.manifest("test_mine", cls).identity
    store.record(item, cls, image, entry.steps(), entry.fingerprint, entry.recorded_at,
                 entry.command, force=True, identity=identity)
    if probes is not None:
        store.record_probes(item, cls, probes, identity)


def test_probes_are_stored_and_localize_compares_with_them(own):
    r = own("--record", "--probes", "-k", "img2img")
    store = GoldenStore(r.golden)
    (cls,) = store.classes("test_mine")
    entry = store.lookup_id("test_mine", "test_mine/test-img2img-gray/32x32/fp32", cls)
    assert entry.probes is not None and entry.probes["steps"] == [0]
    _tamper(r.golden, keep_probes=True)
    r = own("--localize", "-k", "img2img")
    r.assert_outcomes(failed=1)
    found = outcomes(r)["test_img2img/gray"]
    assert found["localization"]["against"] == f"the {cls} golden's stored probes"
    assert found["first_divergent_step"] is None  # the latents agree: only the PNG changed


def test_localize_without_stored_probes_says_how_to_add_them(own):
    r = own("--record", "-k", "img2img")
    _tamper(r.golden, keep_probes=False)
    r = own("--localize", "-k", "img2img")
    r.assert_outcomes(failed=1)
    message = outcomes(r)["test_img2img/gray"]["message"]
    assert "has no stored module probes" in message
    assert "test_mine.py::test_img2img --device cpu --threads 1 --golden-dir" in message
    assert "--record --probes" in message


def test_bad_input_is_a_clear_error(own, pytester):
    pytester.makepyfile(test_bad='''
import numpy as np


def test_float_array(diffusion_golden):
    diffusion_golden.check(np.zeros((8, 8, 3), np.float32), name="f")


def test_bad_name(diffusion_golden):
    diffusion_golden.check(np.zeros((8, 8, 3), np.uint8), name="a b")


def test_twice(diffusion_golden):
    diffusion_golden.check(np.zeros((8, 8, 3), np.uint8), name="a")
    diffusion_golden.check(np.zeros((8, 8, 3), np.uint8), name="a")


def test_generator_is_the_suites(diffusion_golden):
    diffusion_golden.generate(object(), name="g", generator=1)


def test_precision(diffusion_golden):
    diffusion_golden.check(np.zeros((8, 8, 3), np.uint8), name="p", precision="fp64")
''')
    r = pytester.runpytest("-p", "no:randomly", "test_bad.py", "--golden-dir",
                           str(pytester.path / "golden"), "--record")
    r.assert_outcomes(failed=5)
    r.stdout.fnmatch_lines([
        "*TypeError: diffusion_golden.check(name='f'): an array must be HxWx3 uint8, not "
        "(8, 8, 3) float32*",
        "*ValueError: diffusion_golden: name 'a b' is not a golden name*",
        "*ValueError: diffusion_golden: name 'a' is used twice in test_bad.py::test_twice*",
        "*TypeError: diffusion_golden.generate(name='g'): 'generator' is set by the suite*",
        "*ValueError: diffusion_golden: precision 'fp64' is not one of fp32, bf16*",
    ])


def test_xdist_workers_report_to_the_controller(pytester, tmp_path):
    pytester.makepyfile(test_mine=OWN_TEST)
    results = tmp_path / "results.json"
    args = ("-p", "no:randomly", "-p", "no:cacheprovider", "-n", "2", "--golden-dir",
            str(pytester.path / "golden"), "--results", str(results))
    r = pytester.runpytest_subprocess(*args, "--record")
    r.stdout.fnmatch_lines(["* 2 recorded in *"])
    r = pytester.runpytest_subprocess(*args)
    r.assert_outcomes(passed=2)
    r.stdout.fnmatch_lines(["*fixture: 2 passed*", "*2 exact via * (same digest as this "
                            "machine)*"])
    doc = json.loads(results.read_text())
    assert sorted(o["id"].rsplit("::", 1)[-1] for o in doc["outcomes"]) == [
        "test_check_array/flat", "test_img2img/gray"]


# -- the pure parts ----------------------------------------------------------------------------
def test_item_names_fit_a_golden_manifest():
    assert item_names("tests/test_mine.py::test_img2img[cat-0.5]", "Gray.v2") == (
        "tests-test_mine", "test-img2img-cat-0-5-gray-v2")
    assert item_names("test_mine.py::test_a", "x") == ("test_mine", "test-a-x")
    model, case = item_names("a/B C.py::Cls::" + "t" * 200, "x")
    assert model == "a-b-c" and len(case) == 64 and case.startswith("cls-ttt")
    # one file name in two folders: two sets of goldens
    assert item_names("a/test_x.py::test_one", "n") != item_names("b/test_x.py::test_one", "n")
    long = item_names("d" * 80 + "/test_x.py::t", "n")[0]
    assert len(long) == 64 and long != item_names("e" * 80 + "/test_x.py::t", "n")[0]
    # a cut name keeps a digest of the whole: two long names stay apart
    assert item_names("m.py::" + "t" * 200, "a") != item_names("m.py::" + "t" * 200, "b")


def test_as_image_accepts_pil_and_uint8_arrays():
    from PIL import Image

    rgba = Image.new("RGBA", (4, 2), (1, 2, 3, 4))
    assert as_image(rgba).shape == (2, 4, 3)
    array = np.zeros((2, 4, 3), np.uint8)
    assert as_image(array) is not None
    for bad, text in ((np.zeros((2, 4), np.uint8), "HxWx3 uint8"),
                      (np.zeros((0, 4, 3), np.uint8), "empty"),
                      ([1, 2], "PIL image or an HxWx3 uint8 numpy array, not list")):
        with pytest.raises(TypeError, match=text):
            as_image(bad)


def test_precision_of_reads_the_denoisers_dtype():
    import torch

    class Unet:
        dtype = torch.bfloat16

    class Pipe:
        unet = Unet()

    assert precision_of(Pipe()) == "bf16"
    assert precision_of(object()) == "fp32"
