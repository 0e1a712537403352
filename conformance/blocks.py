"""``conformance blocks A B --case NAME``: block-wise similarity of two pipelines.

A and B each name a registered model, optionally with a precision and an invariance
variant (``tiny-sd``, ``tiny-sd@bf16``, ``tiny-flux@fp32+sdpa-math``), or a probe file
written by ``--save`` (on this machine or another). Both are generated at the same seed,
prompt and size with module probes on (see :mod:`conformance.localize`); per top-level block
of the denoiser (``down_blocks.N``, ``mid_block``, ``up_blocks.N``, ``transformer_blocks.N``,
``single_transformer_blocks.N`` ...) the table gives whether the output bits are equal, the
cosine similarity and the relative error estimated from the blocks' random projections,
then the first divergent module and the modules that grow the difference most.

Without B, A is only recorded (give ``--save FILE``). Models whose module lists differ are
compared by name where they match.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceInputError
from conformance.localize import (
    ProbeFileError,
    ProbeRecords,
    Section,
    call_tree,
    cosine_similarity,
    json_fields,
    localize,
    relative_error,
    section_label,
)
from conformance.safeio import show

#: how many modules the growth ranking lists
DEFAULT_TOP = 8


@dataclass(frozen=True)
class Side:
    """One of A / B: a model to generate or a probe file to read."""

    arg: str  # "A" or "B"
    text: str
    model: str | None = None
    precision: str | None = None
    variant: str | None = None
    path: Path | None = None
    #: a case of the case file, run as it is declared (its own model, LoRA, VAE)
    case: str | None = None

    @property
    def label(self) -> str:
        if self.path is not None:
            return str(self.path)
        if self.case is not None:
            return f"case:{self.case}@{self.precision}"
        out = f"{self.model}@{self.precision}"
        return out + (f"+{self.variant}" if self.variant else "")


def parse_side(text: str, arg: str, models: Collection[str] | None = None) -> Side:
    """``MODEL[@PRECISION][+VARIANT]`` (``models``: the names known, default the
    built-ins), ``case:NAME[@PRECISION]`` (a case of the case file, as declared) or the path
    of a probe file."""
    from conformance.generate import VARIANTS
    from conformance.models import MODELS
    from conformance.precision import REFERENCE_PRECISION

    known = list(MODELS if models is None else models)
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise ConformanceInputError(arg, f"{show(text)}: give a model name or a probe file")
    if text.startswith("case:"):
        name, _, precision = text.removeprefix("case:").partition("@")
        _check_precision(arg, text, "@" in text, precision)
        return Side(arg, text, case=name, precision=precision or REFERENCE_PRECISION)
    path = Path(text)
    looks_like_file = (path.suffix.lower() == ".json" or text.lower().endswith(".json.gz")
                       or "/" in text or "\\" in text)
    if looks_like_file or (path.is_file() and text.split("@")[0].split("+")[0] not in known):
        if not path.exists():
            raise ConformanceInputError(
                arg, f"probe file {show(text)} does not exist (a model is written "
                f"MODEL[@PRECISION], models: {', '.join(known)})"
            )
        return Side(arg, text, path=path)
    spec, _, variant = text.partition("+")
    model, _, precision = spec.partition("@")
    if model not in known:
        raise ConformanceInputError(
            arg, f"unknown model {show(model)}; known: {', '.join(known)} (or give a probe "
            "file: the JSON written by --save)"
        )
    _check_precision(arg, text, "@" in spec, precision)
    if "+" in text and variant not in VARIANTS:
        raise ConformanceInputError(
            arg, f"{show(text)}: unknown variant {show(variant)}; accepted: "
            f"{', '.join(VARIANTS)}"
        )
    return Side(arg, text, model=model, precision=precision or REFERENCE_PRECISION,
                variant=variant or None)


def _check_precision(arg: str, text: str, given: bool, precision: str) -> None:
    from conformance.precision import PRECISIONS

    if given and precision not in PRECISIONS:
        raise ConformanceInputError(
            arg, f"{show(text)}: unknown precision {show(precision)}; accepted: "
            f"{', '.join(PRECISIONS)}")


def load_side(side: Side) -> ProbeRecords:
    assert side.path is not None
    try:
        return ProbeRecords.load(side.path)
    except ConformanceInputError as exc:
        raise ConformanceInputError(side.arg, f"{exc}") from None


# -- the case ---------------------------------------------------------------------------------


def _case_from_meta(records: ProbeRecords, side: Side) -> tuple[Any, Any]:
    """The case and resolution a probe file was recorded for (validated like a case file)."""
    from conformance.cases import Resolution, parse_cases

    meta = records.meta
    params = meta.get("params")
    name = meta.get("case")
    if not isinstance(params, dict) or not isinstance(name, str):
        raise ConformanceInputError(
            side.arg, f"{side.path}: the probe file does not say which case it was recorded "
            "for (meta.case / meta.params); give --case"
        )
    try:
        res = Resolution.parse(meta.get("resolution"))
        data = {"schema_version": 1, "cases": {name: {
            **params, "resolutions": [str(res)], "precisions": [meta.get("precision", "fp32")],
        }}}
        case = parse_cases(data, side.path or Path(side.text)).cases[0]
    except (ValueError, ConformanceInputError) as exc:
        raise ConformanceInputError(
            side.arg, f"{side.path}: its recorded case is not usable ({exc})") from None
    return case, res


def _case_for_model(case: Any, model: str, spec: Any) -> Any:
    """``case`` run with ``model`` (its scheduler kept where it fits the model's family)."""
    from conformance.schedulers import SCHEDULERS

    if case.model == model:
        return case
    scheduler = case.scheduler
    if spec.family not in SCHEDULERS[scheduler].families:
        scheduler = next(s.name for s in SCHEDULERS.values() if spec.family in s.families)
    negative = case.negative_prompt if spec.family.negative_prompt else ""
    return dataclasses.replace(case, model=model, scheduler=scheduler, negative_prompt=negative,
                               spec=spec, lora=(), vae=None)


# -- block tables -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockRow:
    section: str
    name: str
    cls: str
    #: "equal", "differ", "only-a", "only-b", "not-comparable"
    bits: str
    cosine: float | None
    rel_err: float | None

    def to_dict(self) -> dict[str, Any]:
        return json_fields(self)


def top_level(section: Section) -> list[str]:
    """The calls a section's table shows: for a denoiser step, the root's direct
    submodule calls (its blocks) and the root itself; else every top-level call."""
    parent, children = call_tree(section.records)
    roots = [name for name, caller in parent.items() if caller is None]
    if section.step is None:
        return roots
    return [name for root in roots for name in (*(c.name for c in children[root]), root)]


def block_rows(a: ProbeRecords, b: ProbeRecords) -> dict[str, list[BlockRow]]:
    """Per section of A (and sections only B has): one row per top-level block."""
    tables: dict[str, list[BlockRow]] = {}
    sections_b = {s.name: s for s in b.sections}
    names_a = [s.name for s in a.sections]
    for sec in [*a.sections, *(s for s in b.sections if s.name not in names_a)]:
        sa = a.section(sec.name)
        sb = sections_b.get(sec.name)
        rec_a = {r.name: r for r in sa.records} if sa else {}
        rec_b = {r.name: r for r in sb.records} if sb else {}
        order = top_level(sa) if sa else []
        if sb:
            order += [n for n in top_level(sb) if n not in rec_a]
        rows = []
        for name in order:
            ra, rb = rec_a.get(name), rec_b.get(name)
            if ra is None or rb is None:
                rows.append(BlockRow(sec.name, name, (ra or rb).cls,
                                     "only-a" if rb is None else "only-b", None, None))
                continue
            rel = relative_error(ra.out, rb.out)
            if ra.out_all == rb.out_all:
                bits = "equal"
            elif rel is None:
                bits = "not-comparable"
            else:
                bits = "differ"
            rows.append(BlockRow(sec.name, name, ra.cls, bits,
                                 cosine_similarity(ra.out, rb.out), rel))
        tables[sec.name] = rows
    return tables


def module_counts(a: ProbeRecords, b: ProbeRecords) -> dict[str, Any]:
    """Modules (distinct names, calls merged) of each run and how many match by name."""
    mods_a = {r.base_name for _s, r in a.records()}
    mods_b = {r.base_name for _s, r in b.records()}
    return {"a": len(mods_a), "b": len(mods_b), "matched": len(mods_a & mods_b),
            "only_a": sorted(mods_a - mods_b), "only_b": sorted(mods_b - mods_a)}


def architecture_note(counts: dict[str, Any]) -> str | None:
    if not counts["only_a"] and not counts["only_b"]:
        return None
    return (f"A has {counts['a']} modules, B {counts['b']}: not the same architecture; "
            f"compared by name where they match ({counts['matched']} modules; "
            f"{len(counts['only_a'])} only in A, {len(counts['only_b'])} only in B)")


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.9f}" if kind == "cos" else f"{value:.3e}"


def _denoiser_of(records: ProbeRecords) -> str:
    for sec in records.sections:
        if sec.step is not None and sec.records:
            return sec.records[-1].base_name
    return "denoiser"


def render_text(tables: dict[str, list[BlockRow]], head: str) -> list[str]:
    lines = [head]
    for section, rows in tables.items():
        lines.append("")
        lines.append(f"{section_label(section)}:")
        width = max([len(r.name) for r in rows] + [5])
        cwidth = max([len(r.cls) for r in rows] + [5])
        lines.append(f"  {'block':<{width}}  {'class':<{cwidth}}  {'bits':<8}  "
                     f"{'cosine':>11}  {'rel.err':>9}")
        for r in rows:
            lines.append(f"  {r.name:<{width}}  {r.cls:<{cwidth}}  {r.bits:<8}  "
                         f"{_fmt(r.cosine, 'cos'):>11}  {_fmt(r.rel_err, 'rel'):>9}")
    return lines


def render_markdown(tables: dict[str, list[BlockRow]], head: str, notes: list[str]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = [f"# Block similarity: {cell(head)}", ""]
    out += [f"{cell(n)}  " for n in notes]
    for section, rows in tables.items():
        out += ["", f"## {section_label(section)}", "",
                "| block | class | bits | cosine | rel. error |", "|---|---|---|---:|---:|"]
        out += [f"| `{r.name}` | {r.cls} | {r.bits} | {_fmt(r.cosine, 'cos')} | "
                f"{_fmt(r.rel_err, 'rel')} |" for r in rows]
    return "\n".join(out) + "\n"


# -- the command ------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    from conformance.options import OPTION_BY_NAME

    p = subparsers.add_parser(
        "blocks", help="block-wise similarity of two pipelines (or probe files) at one seed",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", metavar="A", help="MODEL[@PRECISION][+VARIANT] (e.g. tiny-sd@fp32; a "
                   "built-in or a [models.NAME] of --cases), case:NAME[@PRECISION] (a case of "
                   "--cases as declared: its model, LoRA, VAE) or a probe file written by "
                   "--save")
    p.add_argument("b", metavar="B", nargs="?", default=None,
                   help="the same for the other side; without it A is only recorded")
    p.add_argument("--case", default=None, metavar="NAME",
                   help="case of the case file to generate (default: the one a probe file "
                   "was recorded for)")
    cases = OPTION_BY_NAME["cases"]
    p.add_argument("--cases", type=cases.type, default=None, metavar="FILE", help=cases.help)
    p.add_argument("--resolution", default=None, metavar="WxH",
                   help="image size (default: the case's first resolution)")
    p.add_argument("--steps", type=_count("--steps", 1, 1000), default=None, metavar="N",
                   help="denoising steps (default: the case's)")
    p.add_argument("--probe-steps", type=_steps, default=(0,), metavar="LIST",
                   help="denoising steps to probe, comma list (default: 0, the first)")
    for opt in ("device", "threads"):
        o = OPTION_BY_NAME[opt]
        p.add_argument("--" + opt, type=o.type, default=o.default, metavar=o.metavar,
                       help=o.help)
    p.add_argument("--full", action="store_true",
                   help="run the whole generation (and probe the VAE decode); by default "
                   "generation stops after the last probed step")
    p.add_argument("--top", type=_count("--top", 0, 1000), default=DEFAULT_TOP, metavar="N",
                   help=f"modules listed by error growth (default: {DEFAULT_TOP})")
    p.add_argument("--save", type=Path, default=None, metavar="FILE",
                   help="write A's probe records (JSON) to FILE")
    p.add_argument("--save-b", type=Path, default=None, metavar="FILE",
                   help="write B's probe records (JSON) to FILE")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="write the tables and the localisation as JSON")
    p.add_argument("--markdown", type=Path, default=None, metavar="FILE",
                   help="write the tables as Markdown")
    p.set_defaults(func=run)


def _count(flag: str, lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        if not text.isascii() or not text.isdigit() or not lo <= int(text) <= hi:
            raise argparse.ArgumentTypeError(
                f"{show(text)}: accepted: an integer {lo}..{hi} in digits 0-9")
        return int(text)

    parse.__name__ = flag
    return parse


def _steps(text: str) -> tuple[int, ...]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or len(values) > 1000 or not all(
        v.isascii() and v.isdigit() and len(v) <= 6 for v in values
    ):
        raise argparse.ArgumentTypeError(
            f"{show(text)}: write step indices as a comma list of integers, e.g. 0 or 0,5")
    return tuple(sorted({int(v) for v in values}))


def _case(args: argparse.Namespace, sides: list[Side],
          loaded: dict[str, ProbeRecords], case_set: Any) -> tuple[Any, Any]:
    """The case and resolution to generate: ``--case``, else a ``case:`` side's, else a
    probe file's own."""
    from conformance.cases import Resolution

    named = args.case or next((s.case for s in sides if s.case is not None), None)
    if named is not None:
        case = _named_case(case_set, named, "--case")
        res = case.resolutions[0]
    else:
        from_file = next((s for s in sides if s.path is not None), None)
        if from_file is None:
            raise ConformanceInputError(
                "--case", "required when A and B are models (a probe file says its own case)")
        case, res = _case_from_meta(loaded[from_file.arg], from_file)
    if args.resolution is not None:
        try:
            res = Resolution.parse(args.resolution)
        except ValueError as exc:
            raise ConformanceInputError("--resolution", str(exc)) from None
    if args.steps is not None:
        case = dataclasses.replace(case, steps=args.steps)
    return case, res


def _named_case(case_set: Any, name: str, flag: str) -> Any:
    case = next((c for c in case_set.cases if c.name == name), None)
    if case is None:
        raise ConformanceInputError(flag, f"no case {show(name)} in {case_set.path}; cases: "
                                    f"{', '.join(c.name for c in case_set.cases)}")
    return case


def _generate(side: Side, case: Any, res: Any, args: argparse.Namespace,
              runner: Any, case_set: Any, specs: Mapping[str, Any]) -> ProbeRecords:
    from conformance.cases import Item
    from conformance.localize import probe_item
    from conformance.models import ModelUnavailable

    assert side.precision is not None
    if side.case is not None:
        own = _named_case(case_set, side.case, side.arg)
        case = own if args.steps is None else dataclasses.replace(own, steps=args.steps)
        spec = own.model_spec
    else:
        assert side.model is not None
        spec = specs[side.model]
        case = _case_for_model(case, side.model, spec)
    problem = spec.check_resolution(res.width, res.height)
    if problem:
        raise ConformanceInputError("--resolution", f"{res} for {spec.name}: {problem}")
    bad = [s for s in args.probe_steps if s >= case.steps]
    if bad:
        raise ConformanceInputError(
            "--probe-steps", f"step {bad[0]} is past the last step of a {case.steps}-step "
            "generation (steps count from 0)")
    item = Item(case, res, side.precision)
    print(f"conformance blocks: {side.arg} = {side.label}: generating {item.id} "
          f"({case.steps} steps, probing step {','.join(map(str, args.probe_steps))})",
          file=sys.stderr, flush=True)
    try:
        run = probe_item(runner, item, variant=side.variant, steps=args.probe_steps,
                         stop_early=not args.full)
    except ModelUnavailable as exc:
        raise ConformanceInputError(side.arg, str(exc)) from None
    return run.records


def _write(path: Path, text: str, flag: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConformanceInputError(flag, f"cannot write {path}: {exc.strerror or exc}"
                                    ) from None


def run(args: argparse.Namespace) -> int:
    from conformance.cases import load_cases
    from conformance.models import MODELS

    case_set = load_cases(args.cases)
    specs = {**MODELS, **{c.model: c.model_spec for c in case_set.cases}}
    sides = [parse_side(args.a, "A", specs)]
    if args.b is not None:
        sides.append(parse_side(args.b, "B", specs))
    elif args.save is None:
        raise ConformanceInputError("B", "missing: give B to compare with, or --save FILE to "
                                    "only record A")
    if args.save_b is not None and args.b is None:
        raise ConformanceInputError("--save-b", "given without B")
    loaded = {s.arg: load_side(s) for s in sides if s.path is not None}
    models = [s for s in sides if s.model is not None or s.case is not None]
    if models:
        from conformance.generate import Runner, configure_torch
        from conformance.hardware import check_available

        problem = check_available(args.device)
        if problem:
            raise ConformanceInputError("--device", problem)
        configure_torch(args.threads, device=args.device)
        case, res = _case(args, sides, loaded, case_set)
        for side in sides:
            if side.path is not None:
                _warn_if_other_case(loaded[side.arg], side, case, res)
        runner = Runner(args.device)
        for side in models:
            loaded[side.arg] = _generate(side, case, res, args, runner, case_set, specs)
    for flag, path, arg in (("--save", args.save, "A"), ("--save-b", args.save_b, "B")):
        if path is not None:
            _write(path, loaded[arg].to_json() + "\n", flag)
            print(f"conformance blocks: wrote {arg}'s probe records to {path}", file=sys.stderr)
    if args.b is None:
        return 0
    a, b = loaded["A"], loaded["B"]
    try:
        loc = localize(a, b, top=args.top)
    except ProbeFileError as exc:
        raise ConformanceInputError("B", exc.message) from None
    tables = block_rows(a, b)
    counts = module_counts(a, b)
    notes = [n for n in (architecture_note(counts),) if n]
    head = (f"A {sides[0].label} vs B {sides[1].label} "
            f"({_denoiser_of(a)}, {_meta_summary(a)})")
    lines = render_text(tables, head)
    lines += ["", *notes, *loc.report()]
    print("\n".join(lines))
    if args.json is not None:
        doc = {
            "a": {"arg": sides[0].text, "label": sides[0].label, "meta": a.meta},
            "b": {"arg": sides[1].text, "label": sides[1].label, "meta": b.meta},
            "modules": counts,
            "sections": [{"name": name, "rows": [r.to_dict() for r in rows]}
                         for name, rows in tables.items()],
            "localization": loc.to_dict(),
        }
        _write(args.json, json.dumps(doc, indent=1, allow_nan=False) + "\n", "--json")
    if args.markdown is not None:
        _write(args.markdown, render_markdown(tables, head, [*notes, loc.message]),
               "--markdown")
    return 0


def _meta_summary(records: ProbeRecords) -> str:
    meta = records.meta
    parts = [str(meta[k]) for k in ("item", "device") if isinstance(meta.get(k), str)]
    return ", ".join(parts) or "no meta"


def _warn_if_other_case(records: ProbeRecords, side: Side, case: Any, res: Any) -> None:
    meta = records.meta
    params = meta.get("params")
    if not isinstance(params, dict):
        return
    mine = {k: v for k, v in case.generation_params().items() if k != "model"}
    theirs = {k: v for k, v in params.items() if k != "model"}
    if mine != theirs or meta.get("resolution") != str(res):
        print(f"conformance blocks: warning: {side.arg} ({side.path}) was recorded for "
              f"{meta.get('item')}, not for case {case.name} at {res}: expect differences",
              file=sys.stderr)
