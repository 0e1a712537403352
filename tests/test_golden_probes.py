"""Module probes stored with a golden: written beside the PNG, named in the manifest entry,
read back as untrusted input (size cap, SHA-256, bounded inflate, validated records)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re

import pytest

from conformance.cases import Item, Resolution, load_cases
from conformance.cli import main
from conformance.errors import ManifestError
from conformance.golden import MANIFEST, PROBES_JSON_LIMIT, PROBES_SUFFIX, GoldenStore
from tests.identities import identity_for

CLS = "cpu-amd-avx2"
FP = {"hardware_class": CLS, "device": "cpu", "threads": 1, "torch": "2.13.0",
      "diffusers": "0.42.1", "device_name": "AMD EPYC"}


@pytest.fixture(scope="module")
def probed():
    """tiny-sd at 32x32, two steps: the image and the step-0 probes."""
    import torch

    from conformance.generate import Runner
    from conformance.localize import probe_item

    torch.set_num_threads(1)
    case = dataclasses.replace(next(c for c in load_cases().cases if c.name == "red-circle"),
                               steps=2)
    item = Item(case, Resolution(32, 32), "fp32")
    runner = Runner("cpu")
    run = probe_item(runner, item, steps=(0,))
    return item, run.generation, run.records


@pytest.fixture
def stored(tmp_path, probed):
    item, gen, records = probed
    store = GoldenStore(tmp_path)
    store.record(item, CLS, gen.image, gen.trace, FP, "t", "c",
                 identity=identity_for(CLS, FP))
    path = store.record_probes(item, CLS, records, identity_for(CLS, FP))
    return store, item, records, path


def test_probes_of_another_identity_are_refused(stored):
    from conformance.golden import IdentityMismatchError

    store, item, records, _ = stored
    other = identity_for(CLS, {**FP, "threads": 2})
    with pytest.raises(IdentityMismatchError, match="its probes would not describe"):
        store.record_probes(item, CLS, records, other)


def test_probes_round_trip_beside_the_golden(stored):
    store, item, records, path = stored
    assert path.name == item.stem + PROBES_SUFFIX
    entry = GoldenStore(store.root).lookup(item, CLS)  # a fresh store reads the manifest
    assert entry.probes["file"] == path.name and entry.probes["steps"] == [0]
    back = store.load_probes(entry, CLS)
    assert back.to_dict() == records.to_dict()


def test_probes_say_when_and_by_which_command_they_were_added(stored, probed):
    store, item, records, _ = stored
    store.record_probes(item, CLS, records, identity_for(CLS, FP),
                        recorded_at="2026-12-02T10:00:00Z", command="conformance record --probes")
    entry = GoldenStore(store.root).lookup(item, CLS)
    assert entry.probes["recorded_at"] == "2026-12-02T10:00:00Z"
    assert entry.probes["command"] == "conformance record --probes"
    assert entry.command == "c"  # the image's own command is kept


def test_entries_without_probes_keep_their_layout(tmp_path, probed):
    item, gen, _ = probed
    store = GoldenStore(tmp_path)
    store.record(item, CLS, gen.image, gen.trace, FP, "t", "c")
    data = json.loads((store.set_dir("tiny-sd", CLS) / MANIFEST).read_text())
    assert "probes" not in data["entries"][item.id]
    assert store.load_probes(store.lookup(item, CLS), CLS) is None


def test_validate_checks_the_probe_file(stored, capsys):
    store, _item, _, path = stored
    assert main(["validate", str(store.root), "--reference-dir", str(store.root)]) == 0
    path.write_bytes(path.read_bytes()[:-9])
    assert main(["validate", str(store.root), "--reference-dir", str(store.root)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: SHA-256 does not match the manifest's" in out


def _replace_probe_file(store, item, path, data):
    """Swap in other bytes and fix the manifest's hash, so later checks run."""
    import hashlib

    path.write_bytes(data)
    manifest = store.set_dir("tiny-sd", CLS) / MANIFEST
    doc = json.loads(manifest.read_text())
    doc["entries"][item.id]["probes"]["sha256"] = hashlib.sha256(data).hexdigest()
    manifest.write_text(json.dumps(doc))
    return GoldenStore(store.root).lookup(item, CLS)


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # the same bytes in every process


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not gzip at all", "is not a gzip file"),
        (_gz(b"{}")[:-12], "truncated gzip"),
        (_gz(b" " * (PROBES_JSON_LIMIT + 10)), "inflates to more than"),
        (_gz(b'{"schema_version": 1}'), "probe file: key kind is missing"),
    ],
    ids=["not-gzip", "truncated", "bomb", "not-probes"],
)
def test_hostile_probe_files_are_refused_by_name(stored, data, message):
    store, item, _, path = stored
    entry = _replace_probe_file(store, item, path, data)
    with pytest.raises(ManifestError) as err:
        store.load_probes(entry, CLS)
    assert err.value.where == str(path) and message in err.value.message


@pytest.mark.parametrize(
    ("probes", "message"),
    [
        ({"file": "x.probes.json.gz", "sha256": "0" * 64, "steps": [0]}, "file must be"),
        ({"file": None}, "must be an object with the keys file, sha256, steps"),
        ("yes", "must be an object with the keys"),
        ({"sha256": "0" * 64, "steps": [0], "inputs": {"file": "x"}}, "inputs must be"),
        ({"sha256": "Z" * 64, "steps": [0]}, "sha256 is not 64"),
        ({"sha256": "0" * 64, "steps": []}, "steps must be a list"),
        ({"sha256": "0" * 64, "steps": [True]}, "steps must be a list"),
        ({"sha256": "0" * 64, "steps": [0], "command": 3}, "command must be a string"),
        ({"sha256": "0" * 64, "steps": [0], "recorded_at": "x" * 5000},
         "recorded_at must be a string"),
    ],
)
def test_malformed_probes_key_is_refused(stored, probes, message):
    store, item, _, path = stored
    manifest = store.set_dir("tiny-sd", CLS) / MANIFEST
    doc = json.loads(manifest.read_text())
    entry = doc["entries"][item.id]
    if isinstance(probes, dict) and "file" not in probes and "sha256" in probes:
        probes = {"file": path.name, **probes}
    entry["probes"] = probes
    manifest.write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match="key .probes.: .*" + message.split(" ")[0]):
        GoldenStore(store.root).lookup(item, CLS)


def test_replacing_a_golden_removes_its_probes(stored, probed):
    store, item, _, path = stored
    _, gen, _ = probed
    store.record(item, CLS, gen.image, gen.trace, FP, "t", "c", force=True,
                 identity=identity_for(CLS, FP))
    assert not path.exists() and store.lookup(item, CLS).probes is None


def test_a_goldens_probe_file_is_a_blocks_side(stored, capsys):
    """`conformance blocks` reads a golden's .probes.json.gz (its case from the file) and
    compares it with a run here: the same machine, the same bits."""
    _store, _item, _records, path = stored
    code = main(["blocks", str(path), "tiny-sd@fp32", "--steps", "2"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "no divergent module" in out.out


def test_a_gzip_bomb_probe_file_is_refused(tmp_path, monkeypatch):
    from conformance import localize
    from conformance.localize import ProbeFileError, ProbeRecords

    monkeypatch.setattr(localize, "PROBE_FILE_LIMIT", 4096)
    bomb = tmp_path / "x.probes.json.gz"
    bomb.write_bytes(gzip.compress(b" " * 4097))
    with pytest.raises(ProbeFileError, match="inflates to more than"):
        ProbeRecords.load(bomb)


def test_validate_checks_a_stored_input_without_importing_torch(tmp_path, probed):
    """--probe-inputs files are checked from their header, hash and structure: validate
    stays free of torch."""
    import subprocess
    import sys

    from conformance.generate import Runner
    from conformance.localize import probe_item

    item, gen, _ = probed
    run = probe_item(Runner("cpu"), item, steps=(0,), stop_early=True, capture=["step0/unet"])
    store = GoldenStore(tmp_path)
    ident = identity_for(CLS, FP)
    store.record(item, CLS, gen.image, gen.trace, FP, "t", "c", identity=ident)
    store.record_probes(item, CLS, run.records, ident, run.captures["step0/unet"])
    entry = store.lookup(item, CLS)
    assert entry.probes["inputs"]["file"] == item.stem + ".inputs.safetensors"
    assert store.load_inputs(entry, CLS).name == "unet"
    code = ("import sys; from conformance.cli import main; "
            f"rc = main(['validate', {str(tmp_path)!r}, '--reference-dir', {str(tmp_path)!r}]); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split()[-2:] == ["0", "False"], out.stdout + out.stderr
    inputs = store.set_dir("tiny-sd", CLS) / entry.probes["inputs"]["file"]
    inputs.write_bytes(inputs.read_bytes()[:-3])
    assert main(["validate", str(tmp_path), "--reference-dir", str(tmp_path)]) == 1


def _capture_bytes(structure=None, capture=None, **header_edit):
    """A valid capture file (one tensor), with its safetensors header edited (``capture``:
    keys of its capture metadata replaced)."""
    import json as _json

    import torch

    from conformance.localize import ArgSpec, CallStructure, InputCapture

    cap = InputCapture("step0", "unet", "UNet2DConditionModel",
                       structure or CallStructure([ArgSpec(tensor="t0")], {}),
                       {"t0": torch.zeros(4)}, "0" * 16)
    data = cap.to_bytes()
    n = int.from_bytes(data[:8], "little")
    head = _json.loads(data[8:8 + n])
    head.update(header_edit)
    if capture is not None:
        meta = head["__metadata__"]
        meta["conformance.capture"] = _json.dumps(
            _json.loads(meta["conformance.capture"]) | capture)
    text = _json.dumps(head).encode()
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def _deep(depth):
    from conformance.localize import ArgSpec

    spec = ArgSpec(tensor="t0")
    for _ in range(depth):
        spec = ArgSpec(list_=[spec])
    return spec


def _specs(*args, **kwargs):
    from conformance.localize import CallStructure

    return CallStructure(list(args), kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"t0": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}},
     "safetensors header: ['t0'].data_offsets [16, 0] ends before it begins"),
    ({"t0": {"dtype": "F32", "shape": [4], "data_offsets": [0]}},
     "safetensors header: ['t0'].data_offsets must be two byte offsets [begin, end], not a list"),
    ({"t0": {"dtype": "F32", "shape": [4], "data_offsets": [-1, 16]}},
     "safetensors header: ['t0'].data_offsets[0] must be a byte offset, not a number (-1)"),
    ({"t0": {"dtype": "F32", "shape": [4], "data_offsets": [0, 10**9]}}, "its tensors hold"),
    ({"__metadata__": {"format": "pt"}}, "safetensors file without 'conformance.capture' "
     "metadata"),
    ({"structure": "tensor t1"}, "the structure names tensors ['t1'], the file holds ['t0']"),
    ({"structure": "deep"}, "capture metadata: structure.args[0].list[0].list[0].list[0].list[0]"
     ".list[0] nests deeper than 4 levels"),
    ({"capture": {"schema_version": 2}}, "capture metadata: schema_version is 2; this version "
     "reads 1"),
    ({"capture": {"section": "later"}}, "capture metadata: section must be text, decode or "
     "stepN, not a string ('later')"),
    ({"capture": {"name": "a/b"}}, "capture metadata: name must be a module path"),
    ({"capture": {"class": 3}}, "capture metadata: class must be a class name, not a number"),
    ({"capture": {"output_digest": "x"}}, "capture metadata: output_digest must be a digest"),
    ({"capture": {"meta": []}}, "capture metadata: meta must be an object, not a list"),
    ({"capture": {"extra": 1}}, "capture metadata: unknown key extra (accepted: section, name, "
     "class, structure, output_digest, meta, schema_version)"),
    ({"capture": {"structure": {"args": [{}], "kwargs": {}}}}, "capture metadata: "
     "structure.args[0] must hold one of tensor, value, tuple, list, dict, not 0 (none)"),
    ({"capture": {"structure": {"args": [{"tensor": "t0", "value": 1}], "kwargs": {}}}},
     "capture metadata: structure.args[0] must hold one of tensor, value, tuple, list, dict, "
     "not 2 (tensor, value)"),
    ({"capture": {"structure": {"args": [{"tensor": 0}], "kwargs": {}}}},
     "capture metadata: structure.args[0].tensor must be a string, not a number (0)"),
    ({"capture": {"structure": {"args": [{"tensor": "t0"}],
                                "kwargs": {"k": {"value": [1]}}}}},
     "capture metadata: structure.kwargs['k'].value must be true or false, a number or a "
     "string or null, not a list"),
    ({"capture": {"structure": {"args": [{"tensor": "t0"}],
                                "kwargs": {"k": {"dict": {"a": {"tensors": "t0"}}}}}}},
     "capture metadata: unknown key structure.kwargs['k'].dict['a'].tensors (accepted: "
     "tensor, value, tuple, list, dict)"),
    ({"capture": {"structure": {"args": {}, "kwargs": {}}}},
     "capture metadata: structure.args must be a list, not an object"),
])
def test_capture_headers_are_checked_without_loading(kwargs, message):
    from conformance.localize import ArgSpec, InputCapture, ProbeFileError

    structure = {None: None, "tensor t1": _specs(ArgSpec(tensor="t1")),
                 "deep": _specs(_deep(5))}[kwargs.pop("structure", None)]
    data = _capture_bytes(structure, **kwargs)
    with pytest.raises(ProbeFileError) as err:
        InputCapture.check_bytes(data, "cap.safetensors")
    assert err.value.where == "cap.safetensors" and message in err.value.message, err.value
    with pytest.raises(ProbeFileError, match=re.escape(message)):
        InputCapture.from_bytes(data, "cap.safetensors")


def test_a_capture_keeps_its_call_byte_for_byte():
    """The capture metadata is written with Python's json, keys in the order the header
    declares (the bytes a golden's manifest hashes); read back, the call is the same."""
    import json as _json

    import torch

    from conformance.localize import ArgSpec, InputCapture

    structure = _specs(ArgSpec(tensor="t0"), ArgSpec(value=None),
                       ArgSpec(tuple_=[ArgSpec(value=1.5), ArgSpec(list_=[ArgSpec(value="x")])]),
                       k=ArgSpec(dict_={"a": ArgSpec(value=True)}))
    cap = InputCapture("step0", "unet", "UNet2DConditionModel", structure,
                       {"t0": torch.ones(2)}, "0" * 16, {"device": "cpu"})
    data = cap.to_bytes()
    n = int.from_bytes(data[:8], "little")
    text = _json.loads(data[8:8 + n])["__metadata__"]["conformance.capture"]
    assert text == _json.dumps({
        "section": "step0", "name": "unet", "class": "UNet2DConditionModel",
        "structure": {"args": [{"tensor": "t0"}, {"value": None},
                               {"tuple": [{"value": 1.5}, {"list": [{"value": "x"}]}]}],
                      "kwargs": {"k": {"dict": {"a": {"value": True}}}}},
        "output_digest": "0" * 16, "meta": {"device": "cpu"}, "schema_version": 1})
    back = InputCapture.from_bytes(data, "ok")
    assert back.structure == structure and back.meta == {"device": "cpu"}
    args, kwargs = back.arguments()
    assert torch.equal(args[0], torch.ones(2))
    assert args[1:] == (None, (1.5, ["x"])) and kwargs == {"k": {"a": True}}
    assert InputCapture.from_bytes(_capture_bytes(), "ok").name == "unet"
