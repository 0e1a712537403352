"""The ``conformance`` command.

Sub-commands:

* ``run [pytest args]``: the conformance suite (``pytest --pyargs conformance``), with the
  suite's options (``--device``, ``--precision`` ...) passed through;
* ``record [pytest args]``: the same with ``--record``: writes missing goldens for this
  machine's hardware class;
* ``cases``: list the item ids the case file and filters give;
* ``models``: the registered models and whether their weights are here;
* ``fingerprint``: this machine's hardware class, measured identity (the probe battery's
  digests, the CPU/GPU features that steer dispatch) and environment fingerprint (JSON);
* ``quantize``, ``matrix``, ``cpu-matrix`` ...: registered by their modules (see
  ``EXTENSIONS``).

Training, fitting and drawing the embedded tiny models is the fixture tooling of a source
checkout (``python -m fixtures.build``); ``conformance train``, ``montage`` and ``lora`` say
so in one line (:data:`MOVED`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
from collections.abc import Sequence

from conformance import __version__
from conformance.errors import ConformanceInputError

#: Modules that add sub-commands through ``register(subparsers)``.
EXTENSIONS = (
    "conformance.quant.command",
    "conformance.report.command",
    "conformance.cpu_matrix",
    "conformance.validate",
    "conformance.migrate",
    "conformance.blocks",
    "conformance.models.ldm",
    "conformance.init",
)

#: Sub-commands that left this command for the fixture tooling of a source checkout
#: (``fixtures/build``, not installed): the command that runs each now.
MOVED = {
    "train": "python -m fixtures.build train",
    "montage": "python -m fixtures.build montage",
    "lora": "python -m fixtures.build lora",
}


def _run(args: argparse.Namespace, extra: list[str], record: bool) -> int:
    import pytest

    extra = list(extra)
    if record:
        # `record --out DIR` is `--golden-dir DIR`: where the new golden set is written.
        for i, arg in enumerate(extra):
            if arg == "--out" and i + 1 < len(extra):
                extra[i] = "--golden-dir"
            elif arg.startswith("--out="):
                extra[i] = "--golden-dir=" + arg.split("=", 1)[1]
    argv = ["--pyargs", "conformance", *extra]
    if record and "--record" not in argv:
        argv.append("--record")
    return int(pytest.main(argv))


def _cases(args: argparse.Namespace) -> int:
    from conformance.cases import load_cases

    case_set = load_cases(args.cases)
    problem = case_set.filter_problem(args.model, args.precision, args.resolution)
    if problem:
        raise ConformanceInputError(case_set.path, problem)
    items = case_set.items(args.model, args.precision, args.resolution)
    for item in items:
        print(item.id)
    print(f"{len(items)} items from {case_set.path}", file=sys.stderr)
    return 0


def _models(args: argparse.Namespace) -> int:
    from conformance.models import MODELS, ModelUnavailable

    specs = dict(MODELS)
    if args.cases is not None:
        from conformance.cases import load_cases

        specs.update({c.model: c.model_spec for c in load_cases(args.cases).cases})
    for spec in specs.values():
        if not spec.builtin:
            source = spec.source.describe() if spec.source is not None else "?"
            print(f"{spec.name:<13} {spec.family.value:<5} {'declared':<8} {source} "
                  f"(in {spec.declared_in})")
            if spec.description:
                print(f"{'':<13} {spec.description}")
            continue
        if spec.real is None:
            path = spec.path()
            here = "present" if (path / "model_index.json").is_file() else "missing"
            where = str(path)
        else:
            from conformance.models import sources

            try:
                resolved = sources.resolve(sources.get_real_model(spec.real))
                here, where = "present", resolved.describe()
            except (ModelUnavailable, ConformanceInputError) as exc:
                here, where = "missing", str(exc).splitlines()[0]
        print(f"{spec.name:<13} {spec.family.value:<5} {here:<8} {where}")
        print(f"{'':<13} {spec.description}")
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    from conformance.generate import configure_torch
    from conformance.hardware import check_available, fingerprint

    problem = check_available(args.device)
    if problem:
        raise ConformanceInputError("--device", problem)
    configure_torch(args.threads, device=args.device)
    from conformance.identity import format_identity, measure

    fp = fingerprint(args.device, args.threads)
    identity = measure(args.device, fp)
    for line in format_identity(identity):
        print(line.removeprefix("conformance: "), file=sys.stderr)
    sharing = _sharing(identity, args.golden_dir)
    print(json.dumps(fp | {"identity": identity.to_dict(), "bit_equivalent_goldens": sharing},
                     indent=1))
    return 0


def _sharing(identity: object, golden_dir: object) -> dict[str, list[str]]:
    """Print, per precision, the golden sets under ``golden_dir`` whose digest equals this
    machine's (the own-class check holds their goldens to the exact tier); returned for the
    JSON."""
    from pathlib import Path

    from conformance.golden import GoldenStore
    from conformance.lookup import sharing_sets
    from conformance.precision import IDENTITY_PRECISIONS

    root = Path(str(golden_dir))
    store = GoldenStore(root)
    sharing = sharing_sets(store, store.models(), identity,  # type: ignore[arg-type]
                           IDENTITY_PRECISIONS)
    print(f"golden sets under {root} with this machine's bits (same precision digest; the "
          "own-class check holds them to the exact tier):", file=sys.stderr)
    digests = getattr(identity, "precision_digests", None) or {}
    for precision, sets in sharing.items():
        by_class: dict[str, list[str]] = {}
        for name in sets:
            model, _, cls = name.partition("/")
            by_class.setdefault(cls, []).append(model)
        text = "; ".join(f"{cls} ({', '.join(ms)})" for cls, ms in by_class.items()) or (
            "none: checked against the nearest set (close or perceptual tier)")
        print(f"  {precision:<12} {str(digests.get(precision, '?'))[:6]}  {text}",
              file=sys.stderr)
    return sharing


#: Extensions whose modules import torch / diffusers at import time: only the chosen one is
#: imported, so ``conformance validate``, ``matrix`` and ``--help`` stay cheap.
HEAVY = {
    "conformance.quant.command": ("quantize", "quantize a diffusers model to a GGUF file"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``conformance`` parser; ``command`` (the sub-command about to run) decides which
    of the :data:`HEAVY` extensions is imported."""
    from conformance.options import OPTION_BY_NAME

    parser = argparse.ArgumentParser(
        prog="conformance",
        description="Determinism conformance suite for diffusion image generation.",
        epilog="Training, fitting and drawing the embedded tiny models (train, lora fit, "
        "montage): python -m fixtures.build, from a source checkout's root.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in (
        ("run", "run the conformance suite (other arguments go to pytest)"),
        ("record", "record missing goldens for this machine's class (arguments go to pytest)"),
    ):
        p = sub.add_parser(name, help=text, description=text, add_help=False)
        p.set_defaults(func=None, record=(name == "record"))

    p = sub.add_parser("cases", help="list the conformance item ids")
    for opt in ("cases", "model", "precision", "resolution"):
        o = OPTION_BY_NAME[opt]
        p.add_argument("--" + opt, type=o.type, default=None, metavar=o.metavar, help=o.help)
    p.set_defaults(func=_cases)

    p = sub.add_parser("models", help="list the registered models (and a case file's own)")
    o = OPTION_BY_NAME["cases"]
    p.add_argument("--cases", type=o.type, default=None, metavar="FILE",
                   help="also list the [models.NAME] tables of this case file")
    p.set_defaults(func=_models)

    p = sub.add_parser("fingerprint", help="print this machine's hardware class, measured "
                       "identity and fingerprint")
    for opt in ("device", "threads", "golden-dir"):
        o = OPTION_BY_NAME[opt]
        p.add_argument("--" + opt, type=o.type, default=o.default, metavar=o.metavar, help=o.help)
    p.set_defaults(func=_fingerprint)

    for module_name in EXTENSIONS:
        if module_name in HEAVY and HEAVY[module_name][0] != command:
            # listed in --help without importing torch and diffusers (never selected: the
            # chosen command's module is imported for real)
            name, text = HEAVY[module_name]
            sub.add_parser(name, help=text, add_help=False)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # optional extension not present
            raise
        module.register(sub)
    return parser


#: The exit status when the reader of standard output went away (``conformance cases |
#: head -1``): 128 + SIGPIPE, what a shell reports for a command a closed pipe ended.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command. A reader that closes standard output early (``| head``) ends
    the command quietly with :data:`EXIT_BROKEN_PIPE`, without a traceback."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # what is still buffered meets the closed pipe here, not at exit
        return code
    except BrokenPipeError:
        # Python's recipe: point standard output at devnull so that the flush at exit
        # does not raise again
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no real stdout (pytest's capture)
            pass
        return EXIT_BROKEN_PIPE


def moved_message(argv: Sequence[str]) -> str | None:
    """The one line for a sub-command of :data:`MOVED` (``argv`` as given to ``conformance``):
    where it went, with the same arguments; ``None`` for any other command."""
    if not argv or argv[0] not in MOVED:
        return None
    command = " ".join([MOVED[argv[0]], *(shlex.quote(a) for a in argv[1:])])
    return (f"conformance {argv[0]}: moved to the fixture tooling of a source checkout; "
            f"from the checkout's root run: {command}")


def _main(argv: Sequence[str] | None = None) -> int:
    # transformers announces missing optional packages (torchvision) on import; the
    # command's own output is what matters here.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    argv = list(sys.argv[1:] if argv is None else argv)
    moved = moved_message(argv)
    if moved is not None:
        print(moved, file=sys.stderr)
        return 2
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    if argv and argv[0] in ("run", "record"):
        if any(a in ("-h", "--help") for a in argv[1:2]):
            print(f"usage: conformance {argv[0]} [pytest and suite options]\n")
            print("Runs `pytest --pyargs conformance`; see `pytest --help` under 'conformance'.")
            if argv[0] == "record":
                print("`--out DIR` writes the golden set under DIR (same as --golden-dir DIR);"
                      " existing goldens are kept, so an interrupted record resumes.")
            return 0
        return _run(argparse.Namespace(), argv[1:], record=argv[0] == "record")
    return dispatch(parser.parse_args(argv), "conformance")


def dispatch(args: argparse.Namespace, prog: str) -> int:
    """Run the parsed sub-command ``args.func`` of the command ``prog``: bad input is one line
    naming it, exit status 2; an interrupt one line, exit status 130."""
    try:
        return int(args.func(args) or 0)
    except ConformanceInputError as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
