r"""Package a trained bundle as the MONAI model zoo ships it, and check a bundle's zoo metadata offline.

A zoo bundle is a zip ``<name>_v<version>.zip`` holding one folder ``<name>/`` with the bundle's
``configs/``, ``docs/``, ``LICENSE``, its ``scripts/`` package, ``models/model.pt`` (the trained
weights), ``models/model.ts`` (the same network as TorchScript, with the bundle's metadata and
``inference.json`` embedded) and ``large_files.yml`` (every weight file with its sha256, the list
``python -m monai.bundle download_large_files`` reads and verifies). ``python -m monai.bundle
download --url <zip url or file://path> --bundle_dir <dir>`` unpacks it as is.

In this repository a bundle's ``evaluate.json`` and ``inference.json`` hold only its own part,
merged onto ``configs/base_<name>.json`` (a link to the family's shared base in ``bundles/_base/``),
and ``configs/logging.conf`` is a link to the one shared file. The zip holds them flattened: each
``configs/<name>.json`` is the merged whole (what ``monai.bundle run`` would merge), no
``base_*.json``, a real ``logging.conf``, and no link or reference to a file outside the bundle, so
``python -m monai.bundle run --config_file configs/inference.json`` works in the unzipped folder alone.

The shared library is not copied into the zip: a downloaded bundle imports ``samssl`` from the
``samssl`` package that ``metadata.json`` pins under ``required_packages_version`` (``pip
install samssl==<version>``, or ``pip install <checkout of this repository>``), exactly as
zoo bundles take ``monai`` from pip. Everything else a bundle's configs read is relative to the
bundle's own folder.

Before packaging, the metadata is checked against the zoo's schema shipped in
``tools/zoo/meta_schema_20240725.json`` (no network needed) and the checkpoint is loaded into the
bundle's deployed network by its own ``inference.json`` (a checkpoint of another bundle or a
truncated file is refused there, naming the file).

Examples::

    python tools/package_bundle.py verify                     # every bundle's metadata + network in/out
    python tools/package_bundle.py package uamt_skin --checkpoint bundles/uamt_skin/models/model.pt --out dist
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

from samssl.utils.bundles import BASE_PREFIX, config_with_base, merged_config
from samssl.utils.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "bundles"
SCHEMA = ROOT / "tools" / "zoo" / "meta_schema_20240725.json"

# Folders a run writes inside a bundle; none of them belongs in a release.
_GENERATED = ("runs", "models", "predictions", "eval", "demo_data", "__pycache__")

__all__ = [
    "SCHEMA",
    "bundle_names",
    "file_sha256",
    "flatten_configs",
    "package_bundle",
    "refuse_deprecated_metadata",
    "verify_metadata",
    "verify_network_shapes",
]


def bundle_names(root: Path = BUNDLES) -> list[str]:
    """Every bundle in ``root``: each folder with a ``configs/metadata.json`` (a new bundle joins by existing)."""
    return sorted(p.name for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in blocks (weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundle_env(bundle_dir: Path) -> dict[str, str]:
    """Environment for a bundle subprocess: the bundle's folder on the import path (its ``scripts``).

    ``samssl`` comes from the installed ``samssl`` package, as for a downloaded bundle.
    """
    return dict(os.environ, PYTHONPATH=str(bundle_dir))


def _monai_bundle(args: list[str], bundle_dir: Path) -> str:
    """Run ``python -m monai.bundle <args>`` in ``bundle_dir``; raise with its output when it fails."""
    result = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=bundle_dir, env=_bundle_env(bundle_dir),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`python -m monai.bundle {' '.join(args[:2])}` failed for {bundle_dir}:\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout + result.stderr


def refuse_deprecated_metadata(meta: dict, meta_file: Path) -> None:
    """Refuse MONAI's deprecated metadata names, which silently replace the keys they were renamed to.

    MONAI's parser (``ConfigParser.read_meta``, used by ``monai.bundle run`` and ``load_bundle_config``)
    renames ``optional_packages_version`` to ``required_packages_version`` and in doing so overwrites
    the real pins (with ``{}`` when the old key was empty). The schema cannot say why the key is wrong,
    so this check does.
    """
    from monai.bundle import utils as bundle_utils

    deprecated = {"optional_packages_version": "required_packages_version",
                  **getattr(bundle_utils, "DEPRECATED_ID_MAPPING", {})}
    for old, new in deprecated.items():
        if old in meta:
            raise InvalidInputError(
                f"{meta_file} has {old!r}, MONAI's deprecated name for {new!r}: MONAI's parser replaces "
                f"{new!r} with its value, so the pins in {new!r} are lost. Remove {old!r} (put packages the "
                f"bundle needs under {new!r}; name optional ones in the bundle's docs/README.md)."
            )


def verify_metadata(bundle_dir: Path, schema: Path = SCHEMA) -> None:
    """``monai.bundle verify_metadata`` against the shipped zoo schema; raises ``ValueError`` naming the field."""
    from monai.bundle import verify_metadata as monai_verify_metadata

    meta_file = bundle_dir / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    refuse_deprecated_metadata(meta, meta_file)
    declared = Path(meta.get("schema", "")).name
    if declared != schema.name:
        raise ValueError(f"{meta_file} names the schema {declared!r}; the shipped schema is {schema.name} "
                         "(update the 'schema' field or ship the schema it names in tools/zoo/).")
    with warnings.catch_warnings():  # the schema is this repository's own file: no download, nothing to hash-check
        warnings.filterwarnings("ignore", message="No hash value provided", category=UserWarning)
        monai_verify_metadata(meta_file=str(meta_file), filepath=str(schema), create_dir=False)


def _declared_shapes(meta: dict) -> tuple[dict, dict]:
    data_format = meta["network_data_format"]
    return data_format["inputs"]["image"], data_format["outputs"]["pred"]


def verify_network_shapes(bundle_dir: Path) -> None:
    """``monai.bundle verify_net_in_out`` on ``inference.json``'s ``network_def``, plus the spatial shape.

    MONAI's check covers channels and dtype; the deployed networks here keep the input's spatial
    size, so the output's spatial shape is compared with the metadata's too. Runs in a subprocess
    with the bundle's ``scripts`` on the path, as the bundle CLI would. The network runs on
    PyTorch's ``meta`` device, which propagates shapes and dtypes without computing anything (a
    fold ensemble of five nnU-Net-size networks took a minute on the CPU for the same answer).
    """
    meta = json.loads((bundle_dir / "configs" / "metadata.json").read_text())
    image, pred = _declared_shapes(meta)
    configs = bundle_dir / "configs"
    inference = [str(p) for p in config_with_base(configs / "inference.json")]  # with its shared base, if any
    # One subprocess for both checks (the bundle's `scripts` must not meet another bundle's).
    check = (
        "import json, torch\n"
        "from monai.bundle import ConfigParser, verify_net_in_out\n"
        f"verify_net_in_out(net_id='network_def', meta_file={str(configs / 'metadata.json')!r}, "
        f"config_file={inference!r}, device='meta')\n"
        "parser = ConfigParser()\n"
        f"parser.read_config({inference!r})\n"
        "net = parser.get_parsed_content('network_def').eval().to('meta')\n"
        f"x = torch.rand(1, {image['num_channels']}, *{list(image['spatial_shape'])}, device='meta')\n"
        "with torch.no_grad():\n"
        "    print('output shape', json.dumps(list(net(x).shape)))\n"
    )
    result = subprocess.run([sys.executable, "-c", check], cwd=bundle_dir, env=_bundle_env(bundle_dir),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"verify_net_in_out failed for {bundle_dir.name}:\n{result.stderr[-3000:]}")
    line = [x for x in result.stdout.splitlines() if x.startswith("output shape ")][-1]
    shape = json.loads(line[len("output shape "):])
    expected = [1, pred["num_channels"], *pred["spatial_shape"]]
    if shape != expected:
        raise ValueError(f"{bundle_dir.name}: metadata declares output {expected} for input "
                         f"{[1, image['num_channels'], *image['spatial_shape']]}, the network gives {shape}.")


_WEIGHT_SUFFIXES = (".pt", ".pth", ".ts")


def _large_files_yml(entries: list[tuple[str, str]], url_base: str) -> str:
    lines = ["# Weight files of this bundle, verified by `python -m monai.bundle download_large_files`.", "large_files:"]
    for path, sha in entries:
        url = f"{url_base.rstrip('/')}/{path}" if url_base else ""
        lines += [f'  - path: "{path}"', f'    url: "{url}"', f'    hash_val: "{sha}"', '    hash_type: "sha256"']
    return "\n".join(lines) + "\n"


def _file_references(value, found: list[str]) -> list[str]:
    """Every string in a config value that names a config file by a ``%`` macro (``%other.json#key``)."""
    if isinstance(value, dict):
        for v in value.values():
            _file_references(v, found)
    elif isinstance(value, list):
        for v in value:
            _file_references(v, found)
    elif isinstance(value, str) and value.startswith("%") and any(s in value.lower() for s in (".json", ".yaml", ".yml")):
        found.append(value)
    return found


def flatten_configs(bundle_dir: Path) -> None:
    """Make a copied bundle's ``configs/`` self-contained, in place (the zoo's form).

    Each ``configs/<name>.json`` with a ``configs/base_<name>.json`` becomes the two merged as
    ``monai.bundle`` merges them, and the base is removed; every link under the bundle is replaced
    by a copy of the file it points to (``logging.conf``). Raises ``ValueError`` when a config still
    names another config file (a ``%file#key`` macro) or a link points to no file.
    """
    configs = bundle_dir / "configs"
    for path in sorted(bundle_dir.rglob("*")):
        if path.is_symlink():
            target = path.resolve()
            if not target.is_file():
                raise ValueError(f"{path} links to {target}, which is not a file.")
            path.unlink()
            shutil.copyfile(target, path)
    for base in sorted(configs.glob(f"{BASE_PREFIX}*.json")):
        own = base.with_name(base.name[len(BASE_PREFIX):])
        if not own.is_file():
            raise ValueError(f"{base} is the base of {own.name}, which the bundle does not have.")
        merged = merged_config(own)
        own.write_text(json.dumps(merged, indent=4) + "\n")
        base.unlink()
    for config in sorted(configs.rglob("*.json")):
        macros = _file_references(json.loads(config.read_text()), [])
        if macros:
            raise ValueError(f"{config.relative_to(bundle_dir)} reads other config files ({macros}): "
                             "a zoo bundle's configs must stand alone.")


def package_bundle(name: str, checkpoint: Path, out_dir: Path, url_base: str = "", bundles_root: Path = BUNDLES) -> Path:
    """Build ``<out_dir>/<name>_v<version>.zip`` from ``bundles/<name>`` and a trained ``model.pt``.

    Args:
        name: bundle folder name.
        checkpoint: the trained weights (the ``model.pt`` a training run writes).
        out_dir: where the zip goes (created).
        url_base: where the released weight files will be downloadable, written into
            ``large_files.yml`` (empty: the files travel inside the zip and are only hash-checked).
        bundles_root: folder holding the bundles.

    Returns:
        The zip's path.
    """
    source = bundles_root / name
    if not (source / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"no bundle at {source} (bundles here: {', '.join(bundle_names(bundles_root))}).")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist: train the bundle first "
                                f"(it writes runs/<run_name>/model.pt) and pass that file.")
    verify_metadata(source)
    version = json.loads((source / "configs" / "metadata.json").read_text())["version"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{name}_package_") as staging_root:
        staged = Path(staging_root) / name
        shutil.copytree(source, staged, ignore=shutil.ignore_patterns(*_GENERATED, "*.pyc", "*.partial"))  # links copied as files
        flatten_configs(staged)  # one whole file per config, a real logging.conf: nothing outside the bundle
        models = staged / "models"
        models.mkdir()
        shutil.copyfile(checkpoint, models / "model.pt")
        # The export loads the weights into the bundle's deployed network by its own inference.json,
        # which refuses a checkpoint of another network, and scripts it with the metadata embedded.
        _monai_bundle(["run", "export", "--config_file", str(staged / "configs" / "inference.json")], staged)
        weights = [(f"models/{f.name}", file_sha256(f)) for f in sorted(models.iterdir())]
        (staged / "large_files.yml").write_text(_large_files_yml(weights, url_base))
        archive = out_dir / f"{name}_v{version}.zip"
        partial = archive.with_suffix(".zip.partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(staged.rglob("*")):
                if path.is_file():  # weights are stored: float32 deflates by a few percent at a high CPU cost
                    stored = path.suffix in _WEIGHT_SUFFIXES
                    zf.write(path, Path(name) / path.relative_to(staged),
                             compress_type=zipfile.ZIP_STORED if stored else None)
        partial.replace(archive)
    return archive


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check metadata (zoo schema) and network in/out shapes")
    verify.add_argument("bundles", nargs="*", help="bundle names (default: every bundle)")
    package = commands.add_parser("package", help="write <name>_v<version>.zip")
    package.add_argument("bundle")
    package.add_argument("--checkpoint", required=True, type=Path, help="trained model.pt")
    package.add_argument("--out", default=ROOT / "dist", type=Path)
    package.add_argument("--url_base", default="", help="release URL the weight files will be served from")
    args = parser.parse_args(argv)
    if args.command == "verify":
        for name in args.bundles or bundle_names():
            verify_metadata(BUNDLES / name)
            verify_network_shapes(BUNDLES / name)
            print(f"{name}: metadata matches {SCHEMA.name}; network input/output shapes match the metadata")
        return 0
    archive = package_bundle(args.bundle, args.checkpoint, args.out, url_base=args.url_base)
    print(f"wrote {archive} ({archive.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
