"""Tests of the typed, strict parameters (src/mentoring/config.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from mentoring.config import ConfigError, Params, load_params, parse_params

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS_YAML = REPO_ROOT / "params.yaml"


def test_repo_params_yaml_equals_code_defaults() -> None:
    params = load_params(PARAMS_YAML)
    defaults = Params()
    # section by section first, so a disagreement names the section in the failure
    for section in Params.model_fields:
        assert getattr(params, section) == getattr(defaults, section), section
    assert params == defaults


def test_repo_params_yaml_values() -> None:
    params = load_params(PARAMS_YAML)
    assert params.train_baseline.epochs == 20
    assert params.line.classes == ("scratch", "crack", "dent", "stain", "hole", "chip")
    assert params.sizes == params.line.profiles["demo"]
    assert set(params.line.setups) == {"original", "new"}
    assert params.line.setups["new"].nuisances["reflection"] == 0.4


def test_unknown_key_names_section_and_key() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_params({"train_baseline": {"lrr": 0.1}})
    msg = str(exc.value)
    assert "[train_baseline]" in msg
    assert "'lrr'" in msg
    assert "unknown key" in msg


def test_unknown_nested_key_names_section_and_path() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_params({"line": {"setups": {"original": {"noyse": [0, 1]}, "new": {}}}})
    msg = str(exc.value)
    assert "[line]" in msg
    assert "noyse" in msg


def test_wrong_type_names_key() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_params({"train_baseline": {"epochs": "many"}})
    msg = str(exc.value)
    assert "[train_baseline]" in msg
    assert "epochs" in msg
    assert "'many'" in msg


def test_out_of_range_value_names_key() -> None:
    with pytest.raises(ConfigError, match=r"\[evaluate\] threshold"):
        parse_params({"evaluate": {"threshold": 1.5}})


def test_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_params({"trian_baseline": {"epochs": 3}})
    assert "trian_baseline" in str(exc.value)
    assert "unknown section" in str(exc.value)


def test_source_is_named_in_errors() -> None:
    with pytest.raises(ConfigError, match=r"^my-params\.yaml:"):
        parse_params({"model": {"width": "wide"}}, source="my-params.yaml")


def test_non_mapping_is_an_error() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_params([1, 2, 3])  # type: ignore[arg-type]


def test_empty_mapping_gives_defaults() -> None:
    assert parse_params({}) == Params()
    assert parse_params(None) == Params()


def test_profile_must_be_a_known_profile() -> None:
    with pytest.raises(ConfigError, match=r"base\.profile 'huge'"):
        parse_params({"base": {"profile": "huge"}})
    # a profile defined in line.profiles is accepted
    params = parse_params(
        {
            "base": {"profile": "huge"},
            "line": {
                "profiles": {
                    "huge": {"original_train": 1, "original_eval": 2, "new_pool": 3, "new_eval": 4}
                }
            },
        }
    )
    assert params.sizes.new_eval == 4


def test_image_size_must_be_multiple_of_stride() -> None:
    with pytest.raises(ConfigError, match=r"image_size 100 is not a multiple of model\.stride 8"):
        parse_params({"line": {"image_size": 100}})
    with pytest.raises(ConfigError, match="not a multiple"):
        parse_params({"line": {"image_size": 64}, "model": {"stride": 128}})
    assert parse_params({"line": {"image_size": 96}, "model": {"stride": 32}}).line.image_size == 96


def test_stride_must_be_power_of_two() -> None:
    with pytest.raises(ConfigError, match=r"\[model\].*power of two"):
        parse_params({"model": {"stride": 12}})


def test_the_generator_only_draws_its_own_classes() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_params({"line": {"classes": ["scratch", "blob"]}})
    assert "[line]" in str(exc.value)
    assert "'blob'" in str(exc.value) and "ingested data" in str(exc.value)


@pytest.mark.parametrize("source", ["folder", "s3", "dvc"])
def test_an_ingested_line_has_any_class_names(source: str) -> None:
    line = {
        "source": source,
        "classes": ["knot", "porosity", "burr"],
        "part_refs": ["housing"],
        "s3": {"uri": "s3://plant/line"},
        "dvc": {"repo": "https://git.example.com/plant/data.git"},
    }
    assert parse_params({"line": line}).line.classes == ("knot", "porosity", "burr")


@pytest.mark.parametrize(
    "classes", [["knot", "knot"], ["a/b"], [" knot"], []], ids=["dup", "slash", "padded", "none"]
)
def test_class_names_must_be_usable_ids(classes: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"line\.classes"):
        parse_params({"line": {"source": "folder", "classes": classes}})


def test_s3_source_needs_an_s3_uri() -> None:
    with pytest.raises(ConfigError, match=r"line\.s3\.uri is empty"):
        parse_params({"line": {"source": "s3"}})
    with pytest.raises(ConfigError, match="must start with s3://"):
        parse_params({"line": {"s3": {"uri": "/local/path"}}})


def test_unknown_part_ref_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'gear'"):
        parse_params({"line": {"part_refs": ["disc", "gear"]}})


def test_unknown_nuisance_is_an_error() -> None:
    setups = {"original": {"nuisances": {"smoke": 1.0}}, "new": {}}
    with pytest.raises(ConfigError) as exc:
        parse_params({"line": {"setups": setups}})
    msg = str(exc.value)
    assert "'smoke'" in msg
    assert "setups.original" in msg


def test_setups_must_define_both_domains() -> None:
    with pytest.raises(ConfigError, match="'new'"):
        parse_params({"line": {"setups": {"original": {}}}})


def test_load_params_dotted_overrides(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS_YAML.read_text())
    params = load_params(
        path,
        overrides={
            "base.profile": "tiny",
            "train_baseline.epochs": 3,
            "line.setups.new.noise": [0.0, 0.001],
            "evaluate.threshold": 0.3,
        },
    )
    assert params.base.profile == "tiny"
    assert params.sizes == params.line.profiles["tiny"]
    assert params.train_baseline.epochs == 3
    assert params.line.setups["new"].noise == (0.0, 0.001)
    assert params.evaluate.threshold == 0.3
    # untouched keys keep the file's values
    assert params.line.setups["new"].background == (0.16, 0.24)
    assert params.model == Params().model


def test_load_params_override_creates_missing_section(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: 3\n")
    params = load_params(path, overrides={"model.width": 8})
    assert params.base.seed == 3
    assert params.model.width == 8


def test_load_params_override_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS_YAML.read_text())
    with pytest.raises(ConfigError, match=r"\[train_baseline\] unknown key 'lrr'"):
        load_params(path, overrides={"train_baseline.lrr": 0.1})


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(ConfigError) as exc:
        load_params(path)
    assert str(path) in str(exc.value)
    assert "not found" in str(exc.value)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("base:\n  seed: [1, 2\n  device: cpu\n")
    with pytest.raises(ConfigError) as exc:
        load_params(path)
    assert str(path) in str(exc.value)
    assert "YAML" in str(exc.value)


def test_errors_in_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("model:\n  widht: 8\n")
    with pytest.raises(ConfigError) as exc:
        load_params(path)
    assert str(path) in str(exc.value)
    assert "[model]" in str(exc.value)
    assert "'widht'" in str(exc.value)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("")
    assert load_params(path) == Params()


def test_models_are_frozen() -> None:
    params = Params()
    with pytest.raises(ValidationError):
        params.train_baseline.epochs = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        params.base = params.base  # type: ignore[misc]
    with pytest.raises(ValidationError):
        params.line.setups["new"].hot_spot_prob = 0.9  # type: ignore[misc]
    assert params.train_baseline.epochs == 20


def test_params_file_that_is_not_a_mapping_names_it(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml.*mapping"):
        load_params(path, {"base.seed": 1})


def test_override_through_a_value_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("base:\n  seed: 3\n")
    with pytest.raises(ConfigError, match=r"'base\.seed\.x'.*'base\.seed' is not a section"):
        load_params(path, {"base.seed.x": 1})


def test_line_dvc_source_defaults_and_overrides() -> None:
    params = load_params(PARAMS_YAML)
    assert params.line.source == "synthetic"
    assert (params.line.dvc.repo, params.line.dvc.rev, params.line.dvc.path) == ("", "", "data")
    url, sha = "https://git.example.com/plant/line-data.git", "0123456789abcdef" * 2 + "01234567"
    params = load_params(
        PARAMS_YAML, {"line.source": "dvc", "line.dvc.repo": url, "line.dvc.rev": sha}
    )
    assert params.line.source == "dvc"
    assert (params.line.dvc.repo, params.line.dvc.rev, params.line.dvc.path) == (url, sha, "data")


def test_line_dvc_source_needs_a_repo() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_params({"line": {"source": "dvc", "dvc": {"rev": "main"}}})
    msg = str(exc.value)
    assert "[line]" in msg and "line.dvc.repo is empty" in msg and "line.dvc.rev" in msg
    # the other sources do not need one
    assert parse_params({"line": {"source": "folder"}}).line.dvc.repo == ""


@pytest.mark.parametrize("path", ["/srv/data", "../data", "data/../../x", ""])
def test_line_dvc_path_must_stay_inside_the_repo(path: str) -> None:
    with pytest.raises(ConfigError, match=r"\[line\] dvc: .*line\.dvc\.path .* inside the repo"):
        parse_params({"line": {"dvc": {"path": path}}})


def test_line_dvc_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"\[line\] unknown key 'dvc\.branch'"):
        parse_params({"line": {"source": "dvc", "dvc": {"repo": "x", "branch": "main"}}})


# strict types: a boolean is never a number, a number never a boolean, no inf/nan ---------------


def _leaves(node: object, path: tuple[str | int, ...] = ()) -> list[tuple[tuple, object]]:
    """(path, value) of every scalar of a dumped params tree (lists: by index)."""
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(node, list):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, (*path, i))]
    return [(path, node)]


def _with(data: dict, path: tuple, value: object) -> dict:
    import copy

    data = copy.deepcopy(data)
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return data


def _numbers_and_switches() -> list[tuple[tuple, object]]:
    defaults = Params().model_dump(mode="json")
    return [(p, v) for p, v in _leaves(defaults) if isinstance(v, bool | int | float)]


def test_every_number_refuses_a_boolean_and_every_switch_a_number() -> None:
    """Every int, float and bool field of every section (in the defaults' tree: tuples, dicts
    and profiles included): lax pydantic took True for 1 and 1 for True."""
    defaults = Params().model_dump(mode="json")
    leaves = _numbers_and_switches()
    assert len(leaves) > 80  # the walk reached the nested sections
    accepted = []
    for path, value in leaves:
        wrong = 1 if isinstance(value, bool) else True
        try:
            parse_params(_with(defaults, path, wrong))
        except ConfigError as exc:
            assert f"[{path[0]}]" in str(exc), (path, str(exc))
        else:
            accepted.append(".".join(map(str, path)))
    assert accepted == []


def test_every_float_refuses_inf_and_nan() -> None:
    defaults = Params().model_dump(mode="json")
    accepted = []
    for path, value in _numbers_and_switches():
        if isinstance(value, bool) or not isinstance(value, float):
            continue
        for bad in (float("inf"), float("-inf"), float("nan")):
            try:
                parse_params(_with(defaults, path, bad))
            except ConfigError:
                continue
            accepted.append((".".join(map(str, path)), bad))
    assert accepted == []


def test_epochs_yes_in_the_file_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train_baseline:\n  epochs: yes\n")  # YAML 1.1: yes is True
    with pytest.raises(ConfigError) as exc:
        load_params(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert "[train_baseline] epochs" in msg
    assert "YAML reads yes/no/on/off/true/false as booleans" in msg


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("train_baseline:\n  lr: true\n", "[train_baseline] lr"),
        ("train:\n  lambda_w: on\n", "[train] lambda_w"),
        ("line:\n  channels: yes\n", "[line] channels"),
        ("mine:\n  budget: yes\n", "[mine] budget"),
        ("line:\n  setups:\n    original:\n      gain: [yes, 1.0]\n", "[line] setups.original"),
    ],
)
def test_booleans_for_numbers_are_refused(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(where)):
        load_params(path)


@pytest.mark.parametrize("value", [1, 0, "yes", "true"])
def test_a_switch_refuses_a_number_or_a_string(value: object) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_params({"train_baseline": {"augment": value}})
    assert "[train_baseline] augment" in str(exc.value)
    assert "write true or false" in str(exc.value)


def test_overrides_keep_their_yaml_types(tmp_path: Path) -> None:
    """``-S`` values are read as YAML: numbers, ``1e-3`` (a string in YAML 1.1, a float for
    pydantic), booleans; an infinite rate or a boolean epoch count is refused."""
    from mentoring.config import parse_overrides

    path = tmp_path / "params.yaml"
    path.write_text("")
    sets = ["train_baseline.lr=1e-3", "train_baseline.epochs=3", "base.compile=true"]
    params = load_params(path, parse_overrides(sets))
    assert params.train_baseline.lr == pytest.approx(1e-3)  # parsed from the string "1e-3"
    assert params.train_baseline.epochs == 3
    assert params.base.compile is True
    assert load_params(path, parse_overrides(["train.lr=1"])).train.lr == 1.0  # int for a float
    for bad, where in [
        ("train_baseline.lr=inf", "[train_baseline] lr"),
        ("train_baseline.lr=.nan", "[train_baseline] lr"),
        ("train_baseline.epochs=yes", "[train_baseline] epochs"),
        ("base.compile=1", "[base] compile"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(where)):
            load_params(path, parse_overrides([bad]))


def test_an_integral_float_is_an_int_as_pipeline_parameters_send_it() -> None:
    """A Kubeflow pipeline parameter is a protobuf Struct: its numbers are doubles."""
    assert parse_params({"train_baseline": {"epochs": 3.0}}).train_baseline.epochs == 3
    with pytest.raises(ConfigError, match=r"\[train_baseline\] epochs"):
        parse_params({"train_baseline": {"epochs": 3.5}})
