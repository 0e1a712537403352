"""The terminal's verdict lines (conformance.report.summary): counts by status, then by tier,
golden set and cause; missing goldens; goldens no case makes."""

from __future__ import annotations

from typing import Any

from conformance.core import Check
from conformance.records import Outcome
from conformance.report.summary import (
    CAUSE_CHARS,
    check_lines,
    missing_lines,
    orphan_lines,
    orphans,
    unused_lines,
)


def outcome(item: str = "tiny-sd/dot/64x64/bf16", check: str = "own-class",
            status: str = "passed", tier: str | None = "exact", **over: Any) -> Outcome:
    model, case, res, prec = item.split("/")
    data = {"id": item, "check": check, "model": model, "case": case, "resolution": res,
            "precision": prec, "hardware_class": "cpu-intel-avx512", "status": status,
            "tier": tier, "golden_class": None, "metrics": None, "seconds": 0.1} | over
    return Outcome.from_json(data, "r.json")


def choice(by: str, *differs: str) -> dict[str, Any]:
    return {"by": by, "sharing": [], "differs": list(differs)}


def test_counts_by_status_then_by_tier_set_and_cause():
    probes = "bf16 GEMM, bf16 SDPA probes differ (8 of 80)"
    flags = "the golden's CPU has amx_bf16, this one has none"
    outs = [
        *(outcome(f"tiny-sd/c{i}/64x64/fp32", golden_class="cpu-amx",
                  golden_choice=choice("identity")) for i in range(3)),
        outcome("tiny-sd/c0/64x64/bf16", tier="perceptual", golden_class="cpu-amx",
                golden_choice=choice("nearest", probes, flags)),
        outcome("tiny-sd/c1/96x96/bf16", tier="perceptual", golden_class="cpu-amx",
                status="failed", golden_choice=choice(
                    "nearest", "bf16 GEMM probes differ (4 of 80)", flags)),
        outcome(check="repeatable"),
        outcome("tiny-sd/dot/64x64/fp16", check="fidelity", status="failed",
                tier="fidelity"),
        outcome("tiny-sd/c2/64x64/fp16", status="skipped", tier=None,
                golden_choice=choice("missing")),
    ]
    lines = check_lines(outs, {("tiny-sd/dot/64x64/bf16", Check.REPEATABLE, None),
                               ("tiny-sd/dot/64x64/fp16", Check.FIDELITY, None)})
    assert lines == [
        " repeatable: 1 xfailed",
        "             1 exact, 1 of them xfailed",
        "  own-class: 4 passed, 1 failed, 1 skipped",
        "             3 exact via cpu-amx (same digest as this machine)",
        "             2 perceptual via cpu-amx (nearest set), 1 of them failed: differ: bf16 "
        "GEMM probes (2); the golden's CPU has amx_bf16, this one has none (2); bf16 SDPA "
        "probes (1)",
        "   fidelity: 1 xfailed",
        "             1 fidelity, 1 of them xfailed",
    ]


def test_long_causes_are_cut_and_at_most_four_are_named():
    long = "x" * 200
    outs = [outcome(tier="close", golden_class="cpu-own",
                    golden_choice=choice("nearest", long, "a", "b", "c", "d"))]
    line = check_lines(outs, set())[-1]
    assert ("x" * (CAUSE_CHARS - 3) + "... (1)") in line and "x" * CAUSE_CHARS not in line
    assert line.count("(1)") == 4 and "d (1)" not in line


def test_missing_goldens_are_one_line_saying_what_to_do():
    outs = [outcome(status="skipped", tier=None, golden_choice=choice("missing")),
            outcome("tiny-flux/x/64x64/fp32", check="reference", status="skipped", tier=None,
                    golden_choice=choice("missing")),
            outcome(status="skipped", tier=None, message="no weights")]
    (line,) = missing_lines(outs, strict=False)
    assert line.startswith("no golden: 1 own-class (tiny-sd), 1 reference (tiny-flux): no "
                           "golden set holds them; skipped; --strict-golden")
    assert "failed (--strict-golden)" in missing_lines(outs, strict=True)[0]
    assert missing_lines(outs[2:], strict=True) == []


def test_goldens_no_case_makes_are_listed():
    found = orphans({"g/tiny-sd/cpu-a": ["tiny-sd/old/64x64/fp32", "tiny-sd/dot/64x64/fp32"],
                     "g/tiny-sd/cpu-b": ["tiny-sd/dot/64x64/fp32"]},
                    {"tiny-sd/dot/64x64/fp32"})
    assert [(o.set_dir, o.item_id) for o in found] == [("g/tiny-sd/cpu-a",
                                                        "tiny-sd/old/64x64/fp32")]
    lines = orphan_lines(found, "cases.toml", strict=False)
    assert lines[0].startswith("note: 1 golden(s) match no item of cases.toml")
    assert lines[1] == "  g/tiny-sd/cpu-a: tiny-sd/old/64x64/fp32"
    assert orphan_lines(found, "cases.toml", strict=True)[0].startswith("error: ")
    many = orphans({"s": [f"m/c{i}/1x1/fp32" for i in range(12)]}, set())
    assert orphan_lines(many, "c", strict=False, most=10)[-1] == "  ... and 2 more"
    assert orphan_lines([], "c", strict=True) == []


def test_diffusion_golden_goldens_no_check_used_are_listed():
    many = orphans({"g/m": [f"m/c{i}/1x1/fp32" for i in range(12)]}, set())
    lines = unused_lines(many, "fixtures")
    assert lines[0] == ("note: 12 diffusion_golden golden(s) under fixtures were not used by "
                        "this run (deselected tests, or renamed or removed names)")
    assert lines[1] == "  g/m: m/c0/1x1/fp32" and lines[-1] == "  ... and 2 more"
    assert len(lines) == 12
    assert unused_lines([], "fixtures") == []
