"""The check kinds' registry (conformance/checks/): one kind per check, what each
parametrizes, deselects and says, and the VAE kind's measurements."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance import PACKAGE_DIR, checks
from conformance.cases import load_cases
from conformance.checks import vae as vae_kind
from conformance.checks.invariance import invariance_items
from conformance.core import Check, Status, Tier
from conformance.generate import VARIANTS, ModelUnavailable
from conformance.precision import REFERENCE_PRECISION
from conformance.records import Outcome
from conformance.schedule import plan_params
from conformance.session import Settings
from conformance.tolerances import DEFAULT_TOLERANCES, load_tolerances

CASES = load_cases(None)
VARIANT_CASES = load_cases(PACKAGE_DIR / "cases-variants.toml")


def ctx(cases=CASES, **filters) -> checks.Context:
    return checks.Context(cases, Settings(**filters))


def ids(check: Check, context: checks.Context | None = None, *args: str) -> list[str]:
    return [p.id for p in checks.kind(check).params(context or ctx(), *args)]


# -- the registry ----------------------------------------------------------------------------


def test_every_check_has_one_kind_in_the_order_of_check():
    assert [k.check for k in checks.kinds()] == list(Check)
    assert checks.kind("vae") is checks.kind(Check.VAE)


def test_an_unknown_kind_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown check kind 'nope'; known: repeatable, "
                                         r"own-class, reference, invariance, "):
        checks.kind("nope")


def test_a_check_without_a_registered_kind_is_named(monkeypatch):
    monkeypatch.setattr(checks, "_KINDS", {c: k for c, k in checks._KINDS.items()
                                           if c is not Check.COMPARE})
    monkeypatch.setattr(checks, "_modules", list)
    with pytest.raises(LookupError, match="no check kind registered for compare"):
        checks.kinds()


def test_the_base_kind_runs_nothing():
    class Plain(checks.CheckKind):
        check = Check.REPEATABLE

    with pytest.raises(NotImplementedError):
        Plain().run(None, None, None)  # type: ignore[arg-type]


# -- what each kind parametrizes ---------------------------------------------------------------


def test_item_kinds_take_every_item_in_its_own_group():
    items = ctx().items()
    for check in (Check.REPEATABLE, Check.OWN_CLASS, Check.REFERENCE):
        params = checks.kind(check).params(ctx())
        assert [p.id for p in params] == [i.id for i in items]
        assert all(p.group == p.item.id and p.values == (p.item,) for p in params)


def test_fidelity_leaves_out_the_reference_precision_and_may_be_empty():
    assert ids(Check.FIDELITY) == [i.id for i in ctx().items()
                                   if i.precision != REFERENCE_PRECISION]
    assert ids(Check.FIDELITY, ctx(precisions=("fp32",))) == []
    assert checks.kind(Check.FIDELITY).may_be_empty
    assert not checks.kind(Check.REPEATABLE).may_be_empty


def test_invariance_ids_read_item_variant():
    items = invariance_items(ctx().items())
    assert ids(Check.INVARIANCE) == [f"{i.id}-{v}" for i in items for v in VARIANTS]
    param = checks.kind(Check.INVARIANCE).params(ctx())[0]
    assert param.values == (items[0], next(iter(VARIANTS))) and param.group == items[0].id


def test_compare_ids_read_item_vs_base_and_need_the_base():
    params = checks.kind(Check.COMPARE).params(ctx(VARIANT_CASES))
    pairs = VARIANT_CASES.compare_pairs()
    assert pairs and [p.id for p in params] == [
        f"{other.id}-vs-{base.case.name}" for _rel, base, other in pairs]
    assert all(p.needs == (base,) and p.values == (other, rel.name)
               for p, (rel, base, other) in zip(params, pairs, strict=True))
    assert ids(Check.COMPARE) == []  # the packaged cases have no relations


def test_the_fixture_kind_parametrizes_nothing():
    assert ids(Check.FIXTURE) == []


def test_vae_ids_cover_each_measurement_s_precisions_in_one_group_per_model():
    assert ids(Check.VAE, None, "decode") == [
        "tiny-sd/vae/bf16", "tiny-sd/vae/fp16", "tiny-flux/vae/bf16", "tiny-flux/vae/fp16"]
    params = checks.kind(Check.VAE).params(ctx(), "latent8")
    assert len(params) == 6 and {p.group for p in params} == {"tiny-sd/vae", "tiny-flux/vae"}
    assert all(p.item is None for p in params)
    assert ids(Check.VAE) == ids(Check.VAE, None, "repeatable")  # no measurement: every id


def test_deselection():
    item_kind, vae = checks.kind(Check.OWN_CLASS), checks.kind(Check.VAE)
    assert item_kind.deselect({"conformance_item": object()}, ctx())  # [NOTSET]
    assert not item_kind.deselect({"conformance_item": ctx().items()[0]}, ctx())
    subject = vae_kind.VaeItem("tiny-sd", "bf16", "decode")
    assert not vae.deselect({"conformance_vae": subject}, ctx())
    assert vae.deselect({"conformance_vae": subject}, ctx(models=("tiny-flux",)))
    assert vae.deselect({"conformance_vae": subject}, ctx(precisions=("fp32",)))
    assert not vae.deselect({"conformance_vae": subject},
                            ctx(models=("tiny-sd",), precisions=("bf16",)))
    assert vae.deselect({}, ctx())


def test_the_scheduler_plans_every_kind_s_tests():
    the_plan = plan_params(checks.schedule_params(ctx()))
    assert the_plan.groups["tiny-sd/vae/fp16"] == "tiny-sd/vae"
    assert the_plan.units["tiny-sd/vae"].pipeline is None
    item = next(i for i in ctx().items() if i.precision == "bf16")
    assert the_plan.group_of(f"conformance/test_fidelity.py::test_fidelity[{item.id}]") \
        == item.id
    assert the_plan.units[item.id].needs == (
        f"{item.model}/{item.case.name}/{item.resolution}/{REFERENCE_PRECISION}",)


# -- the VAE kind ----------------------------------------------------------------------------


def test_a_vae_item_is_named_as_its_outcomes_are():
    subject = vae_kind.VaeItem("tiny-flux", "fp16", "roundtrip")
    assert subject.id == "tiny-flux/vae-roundtrip/64x64/fp16"
    assert (subject.case.name, subject.resolution) == ("vae-roundtrip", "64x64")
    assert subject.test_name == "test_photo_round_trip[tiny-flux/vae/fp16]"


def _outcome(status: Status, message: str) -> Outcome:
    return Outcome(id="tiny-sd/vae-decode/64x64/bf16", check=Check.VAE, model="tiny-sd",
                   case="vae-decode", resolution="64x64", precision="bf16",
                   hardware_class="x", status=status, tier=Tier.FIDELITY, golden_class=None,
                   metrics=None, seconds=0.0, message=message, reproduce="r")


def test_a_vae_failure_reads_its_bounds_and_the_commands():
    kind = vae_kind.Vae()
    nodeid = "conformance/test_vae.py::test_decode_close_to_fp32[tiny-sd/vae/bf16]"
    assert kind.reproduce(None, nodeid) == (  # type: ignore[arg-type]
        "pytest --pyargs conformance -k 'test_decode_close_to_fp32[tiny-sd/vae/bf16]'")
    kind._failures["tiny-sd/vae-decode/64x64/bf16"] = ["decode beyond [t] [n]:", "  MAE: x"]
    assert kind.failure(_outcome(Status.FAILED, "MAE: x"), nodeid).splitlines() == [
        "decode beyond [t] [n]:", "  MAE: x", f"  reproduce: python -m pytest '{nodeid}' -p "
        "no:xdist", "  full table: python benchmarks/vae_report.py"]
    # an error (a tolerance file without the table) reads as its message
    assert kind.failure(_outcome(Status.ERROR, "tol.toml: no [vae.decode.bf16]"), nodeid) == (
        "tol.toml: no [vae.decode.bf16]")


def test_a_tolerance_file_without_vae_tables_keeps_the_packaged_bounds(tmp_path: Path):
    text = DEFAULT_TOLERANCES.read_text()
    plain = tmp_path / "plain.toml"
    plain.write_text(text[: text.index("[vae.")])
    mine = load_tolerances(plain)
    assert mine.vae == {}
    assert vae_kind.vae_tolerances(mine).path == DEFAULT_TOLERANCES
    own = load_tolerances(DEFAULT_TOLERANCES)
    assert vae_kind.vae_tolerances(own) is own


def test_a_missing_vae_is_a_skip_naming_the_file(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(vae_kind.V, "vae_dir", lambda model: tmp_path / model / "vae")
    with pytest.raises(ModelUnavailable,
                       match=f"no VAE fixture for tiny-sd: {tmp_path}/tiny-sd/vae/config.json "
                             "is missing"):
        vae_kind.vae_path("tiny-sd")


@pytest.fixture(scope="module")
def small_vae(tmp_path_factory) -> Path:
    from diffusers import AutoencoderKL

    from tests.test_vae import SMALL_VAE_CONFIG

    path = tmp_path_factory.mktemp("small") / "vae"
    AutoencoderKL(**SMALL_VAE_CONFIG).save_pretrained(path)
    return path


@pytest.mark.parametrize("measure", list(vae_kind.MEASURES))
def test_each_measurement_judges_against_its_table(measure, small_vae, monkeypatch, tmp_path):
    """A seeded small VAE, measured against the packaged bounds and against bounds nothing
    meets: the tier, the worst comparison, and a failure naming the table and the test."""
    monkeypatch.setattr(vae_kind, "vae_path", lambda model: small_vae)
    subject = vae_kind.VaeItem("tiny-sd", "fp32" if measure != "decode" else "bf16", measure)
    cache = vae_kind.Measurements()
    found = vae_kind.measure(subject, load_tolerances(), cache)
    assert found.tier is (Tier.EXACT if measure == "repeatable" else Tier.FIDELITY)
    assert found.metrics is not None
    if measure == "repeatable":
        assert found.problems == [] and found.metrics.identical
        return
    strict = tmp_path / "strict.toml"
    strict.write_text(DEFAULT_TOLERANCES.read_text().replace("psnr_min = ", "psnr_min = 99 #"))
    found = vae_kind.measure(subject, load_tolerances(strict), cache)
    assert any("PSNR: observed=" in p and ">= 99" in p for p in found.problems)
    what = vae_kind.MEASURES[measure].what
    assert found.failure[0] == (f"{what} beyond [vae.{measure}.{subject.precision}] of {strict} "
                                f"[{subject.test_name}]:")
    assert found.failure[1:] == [f"  {p}" for p in found.problems]


UNKNOWN_KIND = """
import pytest


@pytest.mark.conformance_check("nope")
def test_mine(conformance_item, conformance_check):
    conformance_check(conformance_item)
"""


def test_a_mark_naming_no_kind_is_a_usage_error(pytester: pytest.Pytester):
    pytester.makepyfile(test_mine=UNKNOWN_KIND)
    result = pytester.runpytest("--collect-only", "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["test_mine.py::test_mine: conformance_check: unknown check "
                                 "kind 'nope'; known: repeatable, *"])
    assert "Traceback" not in result.stdout.str() and "raise " not in result.stdout.str()


def test_the_plugin_names_an_unknown_kind_as_a_usage_error():
    from conformance.plugin import _kind

    assert _kind("vae", "t").check is Check.VAE
    with pytest.raises(pytest.UsageError, match=r"^t: conformance_check: unknown check kind 'x'"):
        _kind("x", "t")
