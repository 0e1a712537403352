from __future__ import annotations

import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.cases import DEFAULT_CASES, Resolution, load_cases
from conformance.errors import CaseFileError

GOOD = """
schema_version = 1
[axes]
resolutions = ["64x64", "96x96"]
precisions = ["fp32", "bf16"]

[cases.one]
model = "tiny-sd"
prompt = "a red circle on a white background"
seed = 1
steps = 4
scheduler = "euler"
guidance_scale = 4
"""


def write(tmp_path, text):
    path = tmp_path / "cases.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_default_case_file_loads_and_has_enough_items():
    cases = load_cases()
    assert cases.path == DEFAULT_CASES
    items = cases.items()
    assert len(items) >= 12
    assert len({i.id for i in items}) == len(items)
    assert all(i.id.count("/") == 3 for i in items)


def test_good_file_expands_axes(tmp_path):
    cases = load_cases(write(tmp_path, GOOD))
    ids = [i.id for i in cases.items()]
    assert ids == [
        "tiny-sd/one/64x64/fp32",
        "tiny-sd/one/64x64/bf16",
        "tiny-sd/one/96x96/fp32",
        "tiny-sd/one/96x96/bf16",
    ]
    case = cases.cases[0]
    assert case.guidance_scale == 4.0 and isinstance(case.guidance_scale, float)
    assert case.negative_prompt == ""


def test_filters(tmp_path):
    cases = load_cases(write(tmp_path, GOOD))
    assert [i.id for i in cases.items(precisions=["bf16"], resolutions=[Resolution(64, 64)])] == [
        "tiny-sd/one/64x64/bf16"
    ]
    assert cases.items(models=["tiny-flux"]) == []


def test_case_overrides_axes(tmp_path):
    text = GOOD + 'resolutions = ["32x48"]\nprecisions = ["fp16"]\n'
    items = load_cases(write(tmp_path, text)).items()
    assert [i.id for i in items] == ["tiny-sd/one/32x48/fp16"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("seed = 1", 'seed = "1"'),
         r"case file: cases\['one'\]\.seed must be an integer in 0\.\.9223372036854775807, "
         r"not a string \('1'\)"),
        (("seed = 1", "seed = true"), r"\.seed must be an integer in 0\.\.\d+, not a boolean"),
        (("seed = 1", "seed = -1"), r"\.seed must be an integer in 0\.\.\d+, not a number \(-1\)"),
        (("steps = 4", "steps = 0"),
         r"\.steps must be an integer in 1\.\.1000, not a number \(0\)"),
        (("guidance_scale = 4", "guidance_scale = -1.0"),
         r"\.guidance_scale must be a number in 0\.0\.\.100\.0, not a number \(-1\.0\)"),
        (("guidance_scale = 4", 'guidance_scale = "x"'),
         r"\.guidance_scale must be a number in 0\.0\.\.100\.0, not a string"),
        (("seed = 1", "seed = 1\ncfg = 3"),
         r"unknown key cases\['one'\]\.cfg \(accepted: model, prompt"),
        (("seed = 1\n", ""), r"key cases\['one'\]\.seed is missing"),
        (('"euler"', '"heun"'), r"cases\['one'\]\.scheduler 'heun' is not one of euler, "),
        (('"euler"', '"flow-euler"'), r"'flow-euler' does not fit tiny-sd \(sd family\)"),
        (('"tiny-sd"', '"sd99"'),
         r"cases\['one'\]\.model: unknown model 'sd99'; known: flux-schnell"),
        (('"64x64", ', '"60x64", '),
         r"cases\['one'\]\.resolutions: 60x64: width 60 is not a multiple of 16"),
        (('"64x64", ', '"4096x64", '), r"width 4096 is outside 32..256"),
        (('"64x64", ', '"64*64", '), r"'64\*64' is not a resolution; write WIDTHxHEIGHT"),
        (('"64x64", ', '"96x96", '), r"axes\.resolutions: lists 96x96 twice"),
        (('"fp32", ', '"fp64", '), r"axes\.precisions\[0\] 'fp64' is not one of fp32, "),
        (("[cases.one]", "[cases.One]"),
         r"key cases\['One'\] is not accepted \(lower-case letters, digits and '-'"),
        (("schema_version = 1", "schema_version = 2"), r"schema_version is 2"),
        (("[axes]", "[axes]\nseeds = [1]"),
         r"unknown key axes\.seeds \(accepted: resolutions, precisions\)"),
        (("[axes]", "[defaults]"), r"unknown key defaults \(accepted: schema_version, axes"),
        (("precisions = [\"fp32\", \"bf16\"]", "precisions = []"),
         r"axes\.precisions must be a list of 1 to \d+ precision names, not an empty list"),
        (("precisions = [\"fp32\", \"bf16\"]", "precisions = 3"),
         r"axes\.precisions must be a list of 1 to \d+ precision names, not a number"),
    ],
)
def test_errors_name_file_case_and_key(tmp_path, edit, message):
    old, new = edit
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(CaseFileError, match=message) as info:
        load_cases(path)
    assert str(info.value).startswith(str(path))


def test_flux_rejects_negative_prompt(tmp_path):
    text = GOOD.replace('"tiny-sd"', '"tiny-flux"').replace('"euler"', '"flow-euler"')
    text += 'negative_prompt = "blurry"\n'
    with pytest.raises(CaseFileError, match="takes no negative prompt"):
        load_cases(write(tmp_path, text))


def test_missing_resolutions(tmp_path):
    text = GOOD.replace('resolutions = ["64x64", "96x96"]\n', "")
    with pytest.raises(CaseFileError, match="no resolutions"):
        load_cases(write(tmp_path, text))


def test_no_cases(tmp_path):
    with pytest.raises(CaseFileError, match=r"case file: key cases is missing"):
        load_cases(write(tmp_path, "schema_version = 1\n"))


def test_case_not_a_table(tmp_path):
    with pytest.raises(CaseFileError, match=(
            r"cases\['x'\] must be a \[cases\.NAME\] table, not a string")):
        load_cases(write(tmp_path, 'schema_version = 1\ncases = { x = "y" }\n'))


def test_invalid_toml_and_unreadable(tmp_path):
    with pytest.raises(CaseFileError, match="invalid TOML"):
        load_cases(write(tmp_path, "schema_version = = 1"))
    with pytest.raises(CaseFileError, match="cannot read case file"):
        load_cases(tmp_path / "absent.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"# \xff\n")
    with pytest.raises(CaseFileError, match="not UTF-8"):
        load_cases(bad)


def test_resolution_parse_and_str():
    assert str(Resolution.parse(" 64x96 ")) == "64x96"
    for bad in ("0x64", "64x", "x", "64X64", "-64x64"):
        with pytest.raises(ValueError):
            Resolution.parse(bad)


def test_cases_carry_their_resolved_model(tmp_path):
    from conformance.models import MODELS

    cases = load_cases(write(tmp_path, GOOD))
    assert all(c.spec is MODELS["tiny-sd"] and c.model_spec is c.spec for c in cases.cases)
    assert all(c.lora == () and c.vae is None for c in cases.cases)


def test_models_is_a_top_level_key(tmp_path):
    with pytest.raises(CaseFileError, match="accepted: schema_version, axes, models, cases"):
        load_cases(write(tmp_path, GOOD.replace("schema_version = 1", "schema_version = 1\n"
                                                                      "model = 1")))


_LORA_KEY = st.text(st.characters(min_codepoint=0x61, max_codepoint=0x7A), min_size=1,
                    max_size=12).filter(lambda k: k not in ("path", "scale"))


@given(key=_LORA_KEY)
def test_any_unknown_lora_key_is_refused_naming_it(key):
    from pathlib import Path

    from conformance.cases import parse_cases

    data = {"schema_version": 1, "cases": {"one": {
        "model": "tiny-sd", "prompt": "p", "seed": 1, "steps": 1, "scheduler": "euler",
        "guidance_scale": 1.0, "resolutions": ["64x64"], "lora": [{"path": "x", key: 1}]}}}
    with pytest.raises(CaseFileError) as err:
        parse_cases(data, Path("c.toml"))
    assert str(err.value) == (f"c.toml: case file: unknown key cases['one'].lora[0].{key} "
                              "(accepted: path, scale)")


# [compare.NAME] ------------------------------------------------------------------------
PAIRED = GOOD + """
[cases.two]
model = "tiny-flux"
prompt = "a red circle on a white background"
seed = 1
steps = 2
scheduler = "flow-euler"
guidance_scale = 3.5
precisions = ["fp32"]
"""


def test_compare_relation_pairs_items_at_shared_axes(tmp_path):
    text = PAIRED + '[compare.m]\nbase = "one"\nagainst = ["two"]\n'
    cases = load_cases(write(tmp_path, text))
    (rel,) = cases.relations
    assert (rel.name, rel.base, rel.against, rel.expect) == ("m", "one", ("two",), "differ")
    pairs = [(b.id, o.id) for _, b, o in cases.compare_pairs()]
    assert pairs == [("tiny-sd/one/64x64/fp32", "tiny-flux/two/64x64/fp32"),
                     ("tiny-sd/one/96x96/fp32", "tiny-flux/two/96x96/fp32")]
    # the base item is paired even where the filters drop its model
    assert len(cases.compare_pairs(models=["tiny-flux"])) == 2
    assert cases.compare_pairs(models=["tiny-sd"]) == []


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('base = "one"\nagainst = ["two"]\nbogus = 1',
         "unknown key compare['m'].bogus (accepted: base, against"),
        ('against = ["two"]', "key compare['m'].base is missing"),
        ('base = "nope"\nagainst = ["two"]',
         "compare['m'].base: 'nope' is not a case of this file; the cases are one, two"),
        ('base = "one"\nagainst = "two"', "compare['m'].against must be a non-empty list"),
        ('base = "one"\nagainst = []', "compare['m'].against must be a non-empty list"),
        ('base = "one"\nagainst = ["one"]', "names a case twice or names the base"),
        ('base = "one"\nagainst = ["two", "two"]', "names a case twice or names the base"),
        ('base = "one"\nagainst = ["two"]\nexpect = "same"',
         "compare['m'].expect 'same' is not one of differ, identical, close, perceptual"),
        ('base = "one"\nagainst = ["two"]\ndescription = 3',
         "compare['m'].description must be a string of at most"),
    ],
)
def test_compare_relation_errors_name_the_table_and_key(tmp_path, table, message):
    with pytest.raises(CaseFileError) as err:
        load_cases(write(tmp_path, PAIRED + "[compare.m]\n" + table + "\n"))
    assert message in str(err.value) and "cases.toml" in str(err.value)


def test_compared_cases_hold_prompt_and_seed_and_share_an_axis(tmp_path):
    other_seed = PAIRED.replace("seed = 1\nsteps = 2", "seed = 2\nsteps = 2")
    with pytest.raises(CaseFileError, match="case 'two' differs from the base 'one' in seed"):
        load_cases(write(tmp_path, other_seed + '[compare.m]\nbase = "one"\nagainst = ["two"]\n'))
    no_axis = PAIRED.replace('precisions = ["fp32"]\n', 'precisions = ["fp16"]\n')
    with pytest.raises(CaseFileError, match="shares no \\(resolution, precision\\)"):
        load_cases(write(tmp_path, no_axis + '[compare.m]\nbase = "one"\nagainst = ["two"]\n'))
    with pytest.raises(CaseFileError, match=r"compare must be a table of \[compare\.NAME\] tables"):
        load_cases(write(tmp_path, 'compare = 3\n' + PAIRED))
    with pytest.raises(CaseFileError, match=r"key compare\['Bad Name'\] is not accepted"):
        load_cases(write(tmp_path, PAIRED + '[compare."Bad Name"]\nbase = "one"\n'
                                            'against = ["two"]\n'))


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
    lambda k: k not in ("base", "against", "expect", "description")))
def test_any_unknown_compare_key_is_refused_by_name(tmp_path_factory, key):
    path = write(tmp_path_factory.mktemp("c"),
                 PAIRED + f'[compare.m]\nbase = "one"\nagainst = ["two"]\n{key} = 1\n')
    with pytest.raises(CaseFileError, match=rf"unknown key compare\['m'\]\.{key} "):
        load_cases(path)
