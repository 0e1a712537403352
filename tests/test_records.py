"""The typed outcome records and their one JSON path: ``Outcome.to_json`` and
``Outcome.from_json`` round-trip every outcome, and every kind of bad field is refused with a
message naming the file, the outcome and the key."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance import golden as golden_names
from conformance.core import Check, Status, Tier
from conformance.errors import ConformanceInputError
from conformance.metrics import METRICS, compare
from conformance.records import (
    ARTIFACT_NAMES,
    CHOICE_KINDS,
    Artifacts,
    ByClass,
    ClassComparison,
    ComparedSide,
    GenerationError,
    GoldenChoice,
    ModelComparison,
    Outcome,
    RecordedMetrics,
    StepDelta,
    decode_hook,
    to_builtins,
)
from conformance.report.results import read_results, results_document
from conformance.schema import Problem, problem_of

#: The keys of a results file's outcome object, in the order it writes them (schema 2).
OUTCOME_KEYS = [
    "id", "check", "model", "case", "resolution", "precision", "hardware_class", "status",
    "tier", "golden_class", "metrics", "seconds", "first_divergent_step", "message",
    "artifacts", "reproduce", "step_deltas", "by_class", "generate_seconds", "peak_memory_mb",
    "variant", "pixel_sha256", "error", "localization",
]


def good(**fields_: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "tiny-sd/dot/32x32/fp32", "check": "own-class", "model": "tiny-sd",
        "case": "dot", "resolution": "32x32", "precision": "fp32",
        "hardware_class": "cpu-avx2", "status": "passed", "tier": "exact",
        "golden_class": "cpu-avx2", "metrics": {"identical": True, "mae": 0.0, "psnr": None},
        "seconds": 0.25,
    }
    out.update(fields_)
    return out


def refused(data: Any, index: int | None = 3) -> str:
    with pytest.raises(ConformanceInputError) as info:
        Outcome.from_json(data, "runs/r.json", index)
    assert info.value.where == "runs/r.json"
    return info.value.message


# -- the JSON form -------------------------------------------------------------------------------
def test_to_json_writes_the_results_file_keys_in_order():
    o = Outcome.from_json(good(), "r.json")
    data = o.to_json()
    assert list(data) == OUTCOME_KEYS
    # a compare outcome's comparison, an own-class outcome's golden choice: written only
    # where there is one
    assert [f.name for f in fields(Outcome)] == [*OUTCOME_KEYS, "comparison", "golden_choice"]
    assert data["check"] == "own-class" and data["status"] == "passed" and data["tier"] == "exact"
    assert data["metrics"] == {"identical": True, "mae": 0.0, "psnr": None}
    assert data["artifacts"] == {} and data["by_class"] == {} and data["step_deltas"] is None


def test_typed_fields():
    o = Outcome.from_json(good(
        step_deltas=[{"step": 0, "equal": False, "mean_delta": 0, "std_delta": 0.5}],
        by_class={"cpu-b": {"identical": False, "ssim": 0.9, "first_divergent_step": 2},
                  "cpu-a": {"error": "size differs"}},
        artifacts={"diff": "artifacts/d.png", "actual": "artifacts/a.png"},
        error={"type": "RuntimeError", "message": "boom"},
    ), "r.json")
    assert o.check is Check.OWN_CLASS and o.status is Status.PASSED and o.tier is Tier.EXACT
    assert o.metrics == RecordedMetrics(True, {"mae": 0.0, "psnr": math.inf})
    assert o.metrics.psnr == math.inf and o.metrics.ssim is None  # null: the metric's null
    assert o.step_deltas == (StepDelta(0, False, 0.0, 0.5),)
    assert o.by_class == {
        "cpu-b": ClassComparison("cpu-b", RecordedMetrics(False, {"ssim": 0.9}), 2),
        "cpu-a": ClassComparison("cpu-a", None, None, "size differs"),
    }
    assert list(o.by_class) == ["cpu-b", "cpu-a"]  # as the file gives them
    assert o.artifacts == Artifacts(actual="artifacts/a.png", diff="artifacts/d.png")
    assert to_builtins(o.artifacts) == {"actual": "artifacts/a.png", "diff": "artifacts/d.png"}
    assert o.error == GenerationError(type="RuntimeError", message="boom")


def test_recorded_metrics_of_a_measurement_write_what_the_measurement_writes():
    import numpy as np

    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 9
    for m in (compare(b, a), compare(a, a)):
        record = RecordedMetrics.measured(m)
        assert to_builtins(record) == m.to_dict()
        back = json.loads(json.dumps(to_builtins(record)))
        assert problem_of(back, RecordedMetrics, decode_hook) == record


def test_unregistered_metric_keys_are_ignored():
    o = Outcome.from_json(good(metrics={"identical": False, "future_metric": "any"}), "r.json")
    assert o.metrics == RecordedMetrics(False, {})


# -- refusals ------------------------------------------------------------------------------------
REFUSED: list[tuple[Any, str]] = [
    ([1], "malformed outcomes: outcome 3 (outcomes[3]) must be an object, not a list"),
    (good(hardware_class=""), "hardware_class must be a non-empty string, not an empty string"),
    (good(hardware_class=None), "hardware_class must be a non-empty string, not null"),
    (good(tier="bitwise"),
     "tier 'bitwise' is not one of close, differ, exact, fidelity, perceptual"),
    (good(tier=""), "tier '' is not one of close, differ, exact, fidelity, perceptual"),
    (good(check="own_class"),
     "check 'own_class' is not one of compare, fidelity, fixture, invariance, own-class"),
    (good(golden_class=3), "golden_class must be a string or null, not a number (3)"),
    (good(reproduce=["pytest"]), "reproduce must be a string, not a list"),
    (good(generate_seconds="1 s"),
     "generate_seconds must be a finite number of at least 0 or null, not a string"),
    (good(seconds=None), "seconds must be a finite number of at least 0, not null"),
    (good(seconds=2**70), "seconds must be a finite number of at least 0, not "
     "1180591620717411303424 (outside"),
    (good(metrics={"identical": "yes"}), "metrics.identical must be true or false, not a string"),
    (good(metrics={"identical": True, "first_divergent_step": 1.0}),
     "metrics.first_divergent_step must be an integer or null, not a number (1.0)"),
    (good(step_deltas=[{"step": 0, "equal": True, "mean_delta": 0.0}]),
     "step_deltas[0].std_delta is missing"),
    (good(step_deltas=[{"step": 0, "equal": True, "mean_delta": "0", "std_delta": 0.0}]),
     "step_deltas[0].mean_delta must be a number, not a string ('0')"),
    (good(step_deltas=[None]),
     "step_deltas[0] must be an object {step, equal, mean_delta, std_delta}, not null"),
    (good(step_deltas=[{"step": -1, "equal": True, "mean_delta": 0.0, "std_delta": 0.0}]),
     "step_deltas[0].step must be an integer of at least 0, not a number (-1)"),
    (good(by_class={"cpu-x": {"identical": True, "ssim": "high"}}),
     "by_class['cpu-x'].ssim must be a number or null, not a string ('high')"),
    (good(by_class={"cpu-x": {}}), "key by_class['cpu-x'].identical is missing"),
    (good(by_class={"cpu-x": {"identical": None}}),
     "by_class['cpu-x'].identical must be true or false, not null"),
    (good(artifacts={"expected": "a.png"}),
     "unknown key artifacts.expected (accepted: actual, golden, diff, flip)"),
    (good(artifacts={"actual": None}),
     "artifacts.actual must be a string, not null"),
    (good(error={"type": "E", "trace": "..."}),
     "unknown key error.trace (accepted: type, message, device, precision)"),
    (good(error={"device": 0}), "error.device must be a string or null, not a number (0)"),
    (good(localization=[1]), "localization must be an object or null, not a list"),
    (good(localization={"message": 3}),
     "localization.message must be a string or null, not a number (3)"),
    (good(localization={"first_divergent_module": ["unet"]}),
     "localization.first_divergent_module must be a string or null, not a list"),
    (good(pixel_sha256="abc"), "pixel_sha256 must be a string of lower-case hex digits or null"),
    (good(pixel_sha256="a" * 65), "pixel_sha256 must be a string of lower-case hex digits"),
    (good(colour="red", shade="dark"), "unknown key colour (accepted: id, check, model"),
    ({k: v for k, v in good().items() if k != "golden_class"}, "key golden_class is missing"),
    (good(seconds=-1), "seconds must be a finite number of at least 0, not a number (-1)"),
    (good(seconds=float("nan")), "seconds must be a finite number of at least 0, not a number"),
    (good(peak_memory_mb=float("inf")),
     "peak_memory_mb must be a finite number of at least 0 or null, not a number (inf)"),
    (good(metrics={"identical": False, "mae": -1.0}),
     "metrics.mae must be a number in 0..255 or null, not a number (-1.0)"),
    (good(metrics={"identical": False, "ssim": 1.5}),
     "metrics.ssim must be a number in -1..1 or null, not a number (1.5)"),
    (good(by_class={"cpu-x": {"identical": False, "flip": 2.0}}),
     "by_class['cpu-x'].flip must be a number in 0..1 or null, not a number (2.0)"),
]


@pytest.mark.parametrize(("data", "text"), REFUSED, ids=[r[1][:50] for r in REFUSED])
def test_refused_with_the_key(data, text):
    message = refused(data)
    assert text in message, message
    assert message.startswith("malformed outcomes: outcome 3 ")
    if isinstance(data, dict):
        assert message.startswith("malformed outcomes: outcome 3 ('tiny-sd/dot/32x32/fp32'): ")


def test_an_outcome_without_a_string_id_is_named_by_its_index():
    assert refused(good(id=7)).startswith("malformed outcomes: outcome 3 (?): id must be a")


def test_without_an_index_the_outcome_is_named_by_its_id():
    assert refused(good(tier=1), None).startswith(
        "malformed outcomes: outcome ('tiny-sd/dot/32x32/fp32'): tier must be a string or null"
    )
    assert refused("x", None) == "malformed outcomes: outcome must be an object, not a string ('x')"


def test_records_are_read_by_the_schema_with_the_key_path():
    def problem(type_: Any, value: Any) -> str:
        found = problem_of(value, type_, decode_hook)
        assert isinstance(found, Problem)
        return found.message()

    assert problem(RecordedMetrics | None, []) == (
        "the top level must be an object or null, not a list")
    assert problem(ByClass, {"c": {"error": None}}) == (
        "['c'].error must be a string, not null (None)")
    assert problem_of(None, GenerationError | None) is None
    assert problem_of([], tuple[StepDelta, ...] | None) == ()


def test_read_results_names_the_file_and_the_outcome(tmp_path):
    doc = results_document([Outcome.from_json(good(), "x")], "cpu-avx2", {"threads": 1},
                           "t0", "t1", {})
    doc["outcomes"].append(good(status="great"))
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConformanceInputError) as info:
        read_results(path)
    assert info.value.where == str(path)
    assert info.value.message == (
        "malformed outcomes: outcome 1 ('tiny-sd/dot/32x32/fp32'): status 'great' is not one "
        "of error, failed, passed, recorded, skipped"
    )
    doc["outcomes"].pop()
    path.write_text(json.dumps(doc))
    found = read_results(path)
    assert found.hardware_class == "cpu-avx2" and found.label == "cpu-avx2"
    assert [o.to_json() for o in found.outcomes] == doc["outcomes"]


# -- any outcome round-trips ---------------------------------------------------------------------
text = st.text(max_size=12)
names = st.text(min_size=1, max_size=12)
maybe_text = st.none() | text
finite = st.floats(allow_nan=False, allow_infinity=False)
int64 = st.integers(-(2**63), 2**63 - 1)
#: seconds and sizes: finite, 0 or more
amounts = st.floats(0, allow_nan=False, allow_infinity=False) | st.integers(0, 2**63 - 1)


@st.composite
def recorded_metrics(draw: Any) -> RecordedMetrics:
    values: dict[str, float | None] = {}
    for name, metric in METRICS.items():
        if not draw(st.booleans()):
            continue
        lo, hi = metric.range  # a results file holds values in the metric's range
        in_range = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
        if metric.null is not None:  # null stands for the metric's null value
            values[name] = draw(in_range | st.just(metric.null))
        elif metric.integer:
            values[name] = draw(st.none() | st.integers(int(lo), int(hi)))
        else:
            values[name] = draw(st.none() | in_range)
    return RecordedMetrics(draw(st.booleans()), values)


step_delta = st.builds(StepDelta, st.integers(0, 2**63 - 1), st.booleans(),
                       finite | st.just(math.inf), finite)


@st.composite
def class_comparisons(draw: Any) -> dict[str, ClassComparison]:
    classes = draw(st.lists(names, max_size=3, unique=True))
    return {
        c: ClassComparison(c, None, None, draw(text)) if draw(st.booleans())
        else ClassComparison(c, draw(recorded_metrics()), draw(st.none() | int64))
        for c in classes
    }


hexes = st.text("0123456789abcdef", min_size=6, max_size=64)
localizations = st.none() | st.fixed_dictionaries(
    {"message": text}, optional={"first_divergent_module": maybe_text,
                                 "first_divergent_class": maybe_text, "steps": st.lists(int64)}
)
outcomes = st.builds(
    Outcome,
    id=names, check=st.sampled_from(Check),
    # the names an outcome may carry: what the suite itself can produce
    model=st.from_regex(golden_names._MODEL, fullmatch=True),
    case=st.from_regex(golden_names._CASE, fullmatch=True),
    resolution=st.from_regex(golden_names._RESOLUTION, fullmatch=True),
    precision=st.from_regex(golden_names._PRECISION, fullmatch=True),
    hardware_class=names, status=st.sampled_from(Status),
    tier=st.none() | st.sampled_from(Tier), golden_class=maybe_text,
    metrics=st.none() | recorded_metrics(), seconds=amounts,
    first_divergent_step=st.none() | int64, message=text,
    artifacts=st.builds(Artifacts, **{n: maybe_text for n in ARTIFACT_NAMES}),
    reproduce=text, step_deltas=st.none() | st.lists(step_delta, max_size=4).map(tuple),
    by_class=class_comparisons(), generate_seconds=st.none() | amounts,
    peak_memory_mb=st.none() | amounts, variant=maybe_text, pixel_sha256=st.none() | hexes,
    error=st.none() | st.builds(GenerationError, maybe_text, maybe_text, maybe_text,
                                maybe_text),
    localization=localizations,
    golden_choice=st.none() | st.builds(
        GoldenChoice, st.sampled_from(CHOICE_KINDS), st.lists(names, max_size=3).map(tuple),
        st.lists(text, max_size=3).map(tuple)),
    comparison=st.none() | st.builds(
        ModelComparison, names, names,
        *[st.builds(ComparedSide, names, st.none() | amounts, st.none() | amounts,
                    st.none() | amounts)] * 2),
)


@given(outcomes)
@settings(max_examples=300, deadline=None)
def test_from_json_of_to_json_is_the_outcome(outcome):
    assert Outcome.from_json(outcome.to_json(), "r.json", 0) == outcome
    # and through JSON text, as a results file holds it
    again = Outcome.from_json(json.loads(json.dumps(outcome.to_json())), "r.json", 0)
    assert again == outcome
    assert again.to_json() == outcome.to_json()


# -- compare outcomes ----------------------------------------------------------------------------
SIDE = {"id": "tiny-sd/dot/32x32/fp32", "seconds": 0.5, "weights_mib": 8.6, "peak_mib": None}


def test_a_comparison_is_written_only_where_there_is_one():
    plain = Outcome.from_json(good(), "r.json", 0)
    assert "comparison" not in plain.to_json()  # the results file keeps its keys
    cmp = {"relation": "vae", "expect": "differ", "base": SIDE,
           "other": {**SIDE, "id": "tiny-sd/dot-vae/32x32/fp32", "seconds": 1.0}}
    o = Outcome.from_json(good(check="compare", tier="differ", comparison=cmp), "r.json", 0)
    assert o.comparison.other.id.endswith("dot-vae/32x32/fp32")
    assert o.comparison.ratio("seconds") == 2.0 and o.comparison.ratio("peak_mib") is None
    assert o.to_json()["comparison"] == cmp


@pytest.mark.parametrize(("comparison", "text"), [
    ("vae", "comparison must be an object or null, not a string ('vae')"),
    ({"relation": "vae", "expect": "differ", "base": SIDE}, "key comparison.other is missing"),
    ({"relation": "", "expect": "differ", "base": SIDE, "other": SIDE},
     "comparison.relation must be a non-empty string"),
    ({"relation": "v", "expect": "differ", "base": [], "other": SIDE},
     "comparison.base must be an object, not a list"),
    ({"relation": "v", "expect": "differ", "base": SIDE, "other": {**SIDE, "seconds": "1"}},
     "comparison.other.seconds must be a finite number of at least 0 or null"),
    ({"relation": "v", "expect": "differ", "base": SIDE, "other": {**SIDE, "id": 3}},
     "comparison.other.id must be a non-empty string"),
])
def test_malformed_comparisons_are_refused_with_the_key(comparison, text):
    assert text in refused(good(comparison=comparison))


def test_a_golden_choice_is_written_only_where_there_is_one():
    assert "golden_choice" not in Outcome.from_json(good(), "r.json", 0).to_json()
    choice = {"by": "nearest", "sharing": [], "differs": ["threads 2 here, 1 in the golden's"]}
    o = Outcome.from_json(good(golden_choice=choice), "r.json", 0)
    assert o.golden_choice.by == "nearest" and o.to_json()["golden_choice"] == choice
    default = Outcome.from_json(good(golden_choice={"by": "identity"}), "r.json", 0)
    assert default.golden_choice.sharing == () and default.golden_choice.differs == ()


@pytest.mark.parametrize(("choice", "text"), [
    ("identity", "golden_choice must be an object or null, not a string"),
    ({"by": "guess"}, "golden_choice.by 'guess' is not one of identity, nearest, class, missing"),
    ({"by": "identity", "why": []}, "unknown key golden_choice.why (accepted: by, sharing, "
     "differs)"),
    ({"by": "identity", "sharing": "cpu-a"}, "golden_choice.sharing must be a list of at "
     "most 64 strings"),
    ({"by": "nearest", "differs": [1]},
     "golden_choice.differs[0] must be a string of at most 4096 characters, not a number (1)"),
    ({"by": "nearest", "differs": ["x"] * 65}, "golden_choice.differs must be a list"),
    ({"by": "nearest", "differs": ["x" * 4097]},
     "golden_choice.differs[0] must be a string of at most 4096 characters"),
])
def test_malformed_golden_choices_are_refused_with_the_key(choice, text):
    assert text in refused(good(golden_choice=choice))
