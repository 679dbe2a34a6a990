"""Every bundle has the model-zoo file set and configs that MONAI can parse."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from samssl.utils.bundles import BASE_NOTE_KEY, config_with_base, merged_config

BUNDLES = sorted(p for p in (Path(__file__).resolve().parents[1] / "bundles").iterdir() if (p / "configs").is_dir())
SHARED = Path(__file__).resolve().parents[1] / "bundles" / "_base"
# evaluate.json / inference.json of every bundle as they were whole, before the family bases (git 048651d),
# with the later changes to the bases (the initialize step, held-out demo data for evaluation)
WHOLE_BEFORE_BASES = Path(__file__).resolve().parent / "data" / "merged_configs"
REQUIRED_FILES = [
    "configs/metadata.json", "configs/train.json", "configs/evaluate.json", "configs/inference.json",
    "configs/multi_gpu_train.json", "configs/logging.conf", "docs/README.md", "LICENSE",
]
# Fields the MONAI model-zoo metadata schema requires.
REQUIRED_METADATA = [
    "version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
    "task", "description", "authors", "copyright", "network_data_format",
]


def test_there_are_bundles():
    assert BUNDLES, "no bundle found under bundles/"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_zoo_file_set(bundle):
    missing = [f for f in REQUIRED_FILES if not (bundle / f).is_file()]
    assert not missing, f"{bundle.name} lacks {missing}"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_docs_have_measured_results_and_no_placeholders(bundle):
    readme = (bundle / "docs" / "README.md").read_text()
    placeholders = re.findall(r"\bRESULTS_[A-Z_]+\b|\bTODO\b|\bTBD\b", readme)
    assert not placeholders, f"{bundle.name}/docs/README.md still holds {placeholders}"
    has_table = re.search(r"\| Dice \(%\)[^|\n]*\|", readme) is not None
    assert "## Results" in readme and has_table, f"{bundle.name}/docs/README.md has no results table"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_metadata_fields(bundle):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert not [k for k in REQUIRED_METADATA if k not in meta]
    assert meta["version"] in meta["changelog"]
    assert {"inputs", "outputs"} <= set(meta["network_data_format"])


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_package_pins_survive_monai_metadata_parser(bundle):
    """MONAI reads metadata.json through `ConfigParser.read_meta`, which renames the deprecated
    `optional_packages_version` onto `required_packages_version` and so wipes the pins: read it the
    way MONAI does (`load_bundle_config`, as `monai.bundle run` and the zoo tools) and compare."""
    import warnings

    from monai.bundle import load_bundle_config

    pins = json.loads((bundle / "configs" / "metadata.json").read_text())["required_packages_version"]
    assert pins and "samssl" in pins, f"{bundle.name}: no package pins in metadata.json"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*deprecated name.*")  # MONAI's renaming warning
        parser = load_bundle_config(str(bundle))
    assert parser.get_parsed_content("_meta_#required_packages_version") == pins
    assert "optional_packages_version" not in parser["_meta_"]


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_train_config_contract(bundle):
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    # `monai.bundle run training` and the default `run` both work
    assert "training" in parser and "run" in parser
    # MONAI Label replaces train#dataset#data with its labelled list; unlabelled data has its own key
    assert "train#dataset#data" in parser and "unlabelled#dataset#data" in parser
    for name in ("evaluate.json", "inference.json", "multi_gpu_train.json"):
        ConfigParser.load_config_file(str(bundle / "configs" / name))  # valid JSON/config syntax
    for preset in sorted((bundle / "configs").rglob("*.json")):
        ConfigParser.load_config_file(str(preset))


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_training_refuses_switches_given_as_strings_before_anything_runs(bundle):
    """`--method#use_sam false` on the command line is the string 'false' (truthy): training must stop on it."""
    from bundle_testing import use_bundle  # same directory, on sys.path under pytest

    use_bundle(bundle.name)  # the section may reference the bundle's scripts package
    config = json.loads((bundle / "configs" / "train.json").read_text())
    check, first = config["training"][:2]
    assert check == "$samssl.utils.config_checks.check_command_line()", f"{bundle.name}: training starts with {check}"
    assert first.startswith("$samssl.utils.config_checks.refuse_string_switches(@"), f"{bundle.name}: training continues with {first}"
    section = first.split("@", 1)[1].split(",", 1)[0]
    assert any(isinstance(v, bool) for v in config[section].values()), f"{bundle.name}: {section} holds no switch"
    parser = ConfigParser(config)
    parser[f"{section}#{next(k for k, v in config[section].items() if isinstance(v, bool))}"] = "false"
    with pytest.raises(RuntimeError) as error:  # MONAI wraps what an expression raises
        parser.get_parsed_content("training#1")
    assert isinstance(error.value.__cause__, ValueError) and "not a boolean" in str(error.value.__cause__)


def test_string_switch_error_names_the_fix():
    from samssl.utils.config_checks import refuse_string_switches

    refuse_string_switches({"use_sam": False, "kd_weight": 1.0, "name": "litemedsam"}, "method")  # fine
    with pytest.raises(ValueError, match=r"method#use_sam is the string 'false'.*--method#use_sam False"):
        refuse_string_switches({"use_sam": "false", "augment": True}, "method")
    with pytest.raises(ValueError, match=r"--sam#enabled True"):
        refuse_string_switches({"enabled": "TRUE"}, "sam")
    with pytest.raises(TypeError):
        refuse_string_switches(["use_sam"], "method")


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_training_presets_merge_into_evaluation_and_inference(bundle):
    """`evaluate.json` + `cpu.json` is how a CPU-preset model is scored (and how the harness writes masks)."""
    presets = sorted(p.name for p in (bundle / "configs").glob("cpu*.json"))  # cpu.json, cpu_fp32.json, ...
    assert "cpu.json" in presets, f"{bundle.name} has no CPU preset"
    presets += ["demo.json"] if (bundle / "configs" / "demo.json").is_file() else []
    for target in ("evaluate.json", "inference.json"):
        for preset in presets:
            parser = ConfigParser()
            parser.read_config([*map(str, config_with_base(bundle / "configs" / target)), str(bundle / "configs" / preset)])
            assert "network_def" in parser, f"{bundle.name}: {target} + {preset}"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_inference_inverts_pred_in_place_before_saving(bundle):
    """MONAI Label runs inference.json's postprocessing without its SaveImaged and uses `pred` as
    left: the prediction must be inverted to the input grid in place, not only in what is saved."""
    steps = merged_config(bundle / "configs" / "inference.json")["postprocessing"]["transforms"]
    targets = [step["_target_"] for step in steps]
    assert "Invertd" in targets and targets[-1] == "SaveImaged", f"{bundle.name}: {targets}"
    invert = steps[targets.index("Invertd")]
    assert invert["keys"] == "pred" and invert["orig_keys"] == "image"


ROOT = Path(__file__).resolve().parents[1]
_DOTTED = re.compile(r"(?<![\w.@#])((?:samssl|scripts)(?:\.\w+)+)")


def _module_prefix(bundle: Path, dotted: str) -> str:
    """The longest prefix of ``dotted`` that is a module of the library or of the bundle's ``scripts``."""
    parts = dotted.split(".")
    base = bundle if parts[0] == "scripts" else ROOT
    found = parts[0]
    for end in range(2, len(parts) + 1):
        path = base.joinpath(*parts[:end])
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            found = ".".join(parts[:end])
        else:
            break
    return found


def _expressions(value) -> list[str]:
    if isinstance(value, str):
        return [value] if value.startswith("$") and not value.startswith("$import ") else []
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [e for item in items for e in _expressions(item)]


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_every_module_an_expression_reads_is_imported_by_the_config(bundle):
    """A ``$`` expression reads ``samssl.x.y`` or ``scripts.x`` as attributes: the module must be among the
    config's ``imports`` (``_target_`` values are imported by MONAI itself). Configs without ``imports``
    (presets, ``multi_gpu_train.json``, baselines) are merged onto ``train.json`` and checked with its imports."""
    configs = {p: json.loads(p.read_text()) for p in sorted((bundle / "configs").rglob("*.json"))
               if not p.name.startswith("base_")}  # a family base is checked merged with each bundle's part
    train_imports = configs[bundle / "configs" / "train.json"]["imports"]
    missing = []
    for path, config in configs.items():
        if not isinstance(config, dict):
            continue
        if len(config_with_base(path)) > 1:  # a bundle's part of a family base: read as MONAI merges them
            config = merged_config(path)
        imports = {i.removeprefix("$import ").strip() for i in config.get("imports", train_imports)}
        for expression in _expressions({k: v for k, v in config.items() if k != "imports"}):
            for dotted in _DOTTED.findall(expression):
                module = _module_prefix(bundle, dotted)
                if not any(i == module or i.startswith(module + ".") for i in imports):
                    missing.append(f"{path.relative_to(bundle)}: {dotted} needs `$import {module}`")
    assert not missing, sorted(set(missing))

def _family(bundle: Path) -> str:
    """'2d' or '3d': the spatial dimensions of the bundle's network input, from its metadata."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    return f"{len(meta['network_data_format']['inputs']['image']['spatial_shape'])}d"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_bundles_share_one_logging_conf(bundle):
    """A link in each bundle's configs/, where MONAI looks for it (next to the first config file)."""
    logging_conf = bundle / "configs" / "logging.conf"
    assert logging_conf.is_symlink() and logging_conf.resolve() == (SHARED / "logging.conf").resolve()


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_bundles_take_evaluation_and_inference_bases_from_their_family(bundle):
    """One evaluate/inference base per family, linked into each bundle's configs/ (so the first
    --config_file file is in the bundle's own configs/, which MONAI takes as the bundle root)."""
    configs = bundle / "configs"
    for kind in ("evaluate", "inference"):
        base = configs / f"base_{kind}.json"
        assert base.is_symlink() and base.resolve() == (SHARED / _family(bundle) / f"{kind}.json").resolve(), base
        assert config_with_base(configs / f"{kind}.json") == [base, configs / f"{kind}.json"]
        own = json.loads((configs / f"{kind}.json").read_text())
        shared = json.loads(base.read_text())
        # the network (and how its weights load) is each bundle's own, never the family's
        assert {"network_def", "network"} <= set(own) and not {"network_def", "network"} & set(shared)
        assert f"configs/base_{kind}.json" in own[BASE_NOTE_KEY]  # the bundle's part says how it is merged


def _with_bundle_part(whole: dict, own: dict, base: dict) -> dict:
    """``whole`` with the values the bundle's own file sets now put in their place (``+key`` lists
    extend the base's part of the list; ``a#b`` keys replace one nested entry)."""
    result = copy.deepcopy(whole)
    for key, value in own.items():
        if key == BASE_NOTE_KEY:
            continue
        if key.startswith("+"):
            result[key[1:]] = result[key[1:]][: len(base[key[1:]])] + value
            continue
        *parents, last = key.split("#")
        node = result
        for parent in parents:
            node = node[parent]
        node[last] = value
    return result


@pytest.mark.parametrize("kind", ["evaluate", "inference"])
@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_family_base_and_bundle_part_merge_into_the_config_the_bundle_had(bundle, kind):
    """``configs/base_<kind>.json`` + ``configs/<kind>.json``, merged as ``monai.bundle run`` merges them,
    are the whole config the bundle held before the bases (tests/data/merged_configs, from git): every
    value the base supplies is the one the bundle had, and no key is added or lost. What the bundle's
    own file sets is the bundle's to change (its network moves with its code), so it is taken as it is
    now; when the bases were introduced it was, value for value, the old file's."""
    configs = bundle / "configs"
    merged = ConfigParser.load_config_files([str(configs / f"base_{kind}.json"), str(configs / f"{kind}.json")])
    assert merged.pop(BASE_NOTE_KEY)
    assert merged == merged_config(configs / f"{kind}.json")
    whole = json.loads((WHOLE_BEFORE_BASES / f"{bundle.name}_{kind}.json").read_text())
    own = json.loads((configs / f"{kind}.json").read_text())
    base = json.loads((configs / f"base_{kind}.json").read_text())
    assert merged == _with_bundle_part(whole, own, base)


# the config key of each bundle's frozen SAM-family encoder runtime, and the id of the model it builds
ENCODER_RUNTIME_KEYS = {
    "samkd_dualtask_skin": ("sam_encoder_runtime", "segmenter"),
    "semisam_la": ("sam#encoder_runtime", "foundation_model"),
    "ssl_medsam2": ("tffs#encoder_runtime", "foundation_model"),
}


@pytest.mark.parametrize("name", sorted(ENCODER_RUNTIME_KEYS))
def test_the_frozen_encoders_runtime_is_a_config_setting_that_reaches_the_model(name, tmp_path):
    """The speed path of a frozen encoder is chosen by config (default fp32, bit-for-bit as before).

    The model's expression names the tuned-teacher setting, whose stage reads the run's data list:
    the run and its demo data go to a temporary folder, never into the bundle."""
    from samssl.utils.bundles import import_bundle_scripts

    key, model_id = ENCODER_RUNTIME_KEYS[name]
    bundle = Path(__file__).resolve().parents[1] / "bundles" / name
    import_bundle_scripts(bundle)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    assert parser[key] == "fp32", "train.json's default: the encoder module itself, eager"
    parser.read_config([str(bundle / "configs" / "train.json"), str(bundle / "configs" / "cpu.json")])
    assert parser[key] in ("fp32", "auto"), "a preset keeps fp32 or lets the parity-checked auto choose"
    parser[key] = "bf16"
    parser["device"] = "$torch.device('cpu')"
    parser["output_dir"] = str(tmp_path / "run")
    parser["demo_dir"] = str(tmp_path / "demo")
    assert parser.get_parsed_content(model_id).encoder_runtime == "bf16"
