"""The ImageNet validation subset of the vision-model comparison (paper Sec. 3.3: 20,000
validation images covering the 1,000 classes uniformly, i.e. 20 per class), as a stimuli
file.

:func:`prepare_imagenet` writes a seeded selection of ``per_class`` images of every class
of the ILSVRC2012 validation set, either from a local ``ILSVRC2012_img_val.tar`` plus the
devkit's ground truth, or from the gated hub data set ``ILSVRC/imagenet-1k`` (validation
parquet shards; needs ``HF_TOKEN``), as a stimuli file (format in
:mod:`motalign.io.stimuli`, written atomically) with ``labels`` (int64), plus a provenance
document ``<out>.json`` (:func:`motalign.datasets.download.provenance_path`).

Labels are the usual 0..999 class indices of the sorted WordNet ids (``n01440764`` = 0,
tench), which is what the hub data set stores and what torchvision uses.  The devkit's
ground truth holds 1-based *ILSVRC2012_ID*\\ s, a different order; they are mapped through
the devkit's ``data/meta.mat`` (ID -> WNID).  The per-class selection is keyed by (label,
image number), so both sources select the very same images.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from ..io.atomic import save_npz, write_json
from ..io.stimuli import decode_image
from .download import provenance_path
from .hub import hub_file

log = logging.getLogger(__name__)

IMAGENET_HUB_REPO = "ILSVRC/imagenet-1k"
#: The validation split of the hub data set: 14 parquet shards of 50,000 rows in all, columns
#: ``image`` (struct of ``bytes`` and ``path``) and ``label`` (int64, 0..999).
IMAGENET_VAL_SHARDS = tuple(f"data/validation-{i:05d}-of-00014.parquet" for i in range(14))
IMAGENET_TOKEN_HELP = (
    "log in at https://huggingface.co, accept the terms at "
    "https://huggingface.co/datasets/ILSVRC/imagenet-1k, create a read token at "
    "https://huggingface.co/settings/tokens and export it as HF_TOKEN "
    "(or pass a local ILSVRC2012_img_val.tar with the devkit instead)")


_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})", re.IGNORECASE)
_VAL_MEMBER = re.compile(r"(?:^|/)ILSVRC2012_val_(\d{8})\.jpe?g$", re.IGNORECASE)
_GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
_META = "data/meta.mat"


def _validate(data: bytes, what: str) -> tuple[int, int]:
    """Check that an encoded image decodes to RGB (:func:`motalign.io.stimuli.decode_image`:
    a clear error naming ``what`` otherwise); its (height, width)."""
    height, width, _ = decode_image(data, what).shape
    return height, width


def _concatenate(files: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``image_bytes`` and ``image_offsets`` of ``files`` (output position -> bytes), each
    file dropped once copied (peak memory: the output plus one file)."""
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(files[k]) for k in range(n)])
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for k in range(n):
        data[offsets[k]:offsets[k + 1]] = np.frombuffer(files.pop(k), dtype=np.uint8)
    return data, offsets


def select_per_class(labels: Sequence[int], numbers: Sequence[int], *, per_class: int,
                     seed: int, class_names: dict | None = None, source: str = "") -> np.ndarray:
    """Indices of a seeded selection of ``per_class`` items of every class.

    For each class (in label order) its items are sorted by ``numbers`` (the image number of
    ``ILSVRC2012_val_XXXXXXXX``), and ``per_class`` of them are drawn without replacement by
    ``numpy.random.default_rng([seed, label])``: the selection depends on the seed and the
    data only, not on the order in which the files were read.  The classes are those present
    in ``labels``.  Returns indices into ``labels`` sorted by image number.
    """
    labels = np.asarray(labels, dtype=np.int64)
    numbers = np.asarray(numbers, dtype=np.int64)
    if labels.shape != numbers.shape:
        raise ValueError(f"{labels.size} labels for {numbers.size} images")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    if np.unique(numbers).size != numbers.size:
        raise ValueError(f"{source}: duplicate image numbers")
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[np.argsort(numbers[members], kind="stable")]
        if members.size < per_class:
            known = class_names or {}
            name = f" ({known[int(label)]})" if int(label) in known else ""
            raise ValueError(f"{source}: class {int(label)}{name} has only {members.size} "
                             f"images, fewer than per_class={per_class}")
        rng = np.random.default_rng([int(seed), int(label)])
        chosen.append(members[rng.choice(members.size, per_class, replace=False)])
    chosen = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    return chosen[np.argsort(numbers[chosen], kind="stable")]


def _read_labels_file(labels_file) -> list[int]:
    path = Path(labels_file)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    labels = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            labels.append(int(line.split()[0]))
        except ValueError:
            raise ValueError(f"{path}, line {i}: not an integer label: {line!r}") from None
    if not labels:
        raise ValueError(f"{path}: no labels")
    return labels


def _find_member(tar: tarfile.TarFile, suffix: str):
    for member in tar.getmembers():
        if member.isfile() and (member.name == suffix or member.name.endswith("/" + suffix)):
            return member
    return None


def _meta_wnids(data: bytes, where: str) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID of the 1000 leaf synsets, from the devkit's ``meta.mat``."""
    try:
        synsets = loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
    except Exception as error:  # scipy raises a variety of errors on a bad file
        raise ValueError(f"{where}: not a readable meta.mat ({error})") from error
    names = synsets.dtype.names or ()
    for field in ("ILSVRC2012_ID", "WNID", "num_children"):
        if field not in names:
            raise ValueError(f"{where}: synsets have no field {field!r} (fields: {names})")
    mapping = {}
    for entry in np.atleast_1d(synsets):
        if int(np.asarray(entry["num_children"]).item()) == 0:
            mapping[int(np.asarray(entry["ILSVRC2012_ID"]).item())] = str(entry["WNID"])
    return mapping


def _devkit_labels(devkit) -> tuple[list[int], str, dict]:
    """Ground-truth labels (in image order) from the devkit archive, and the label space."""
    path = Path(devkit)
    if not path.is_file():
        raise FileNotFoundError(f"devkit archive not found: {path}")
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as error:
        raise ValueError(f"{path}: not a readable tar archive ({error})") from error
    with tar:
        member = _find_member(tar, _GROUND_TRUTH)
        if member is None:
            raise ValueError(f"{path}: no member {_GROUND_TRUTH} (is this "
                             "ILSVRC2012_devkit_t12.tar.gz?)")
        text = tar.extractfile(member).read().decode("ascii", errors="replace")
        where = f"{path}:{member.name}"
        ids = []
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    ids.append(int(line))
                except ValueError:
                    raise ValueError(f"{where}, line {i}: not an integer: {line!r}") from None
        meta = _find_member(tar, _META)
        if meta is None:
            log.warning("%s: no %s; labels are ILSVRC2012_ID - 1, which is NOT the usual "
                        "sorted-WNID class index", path, _META)
            return [i - 1 for i in ids], "ilsvrc2012_id_minus_1", {}
        id_to_wnid = _meta_wnids(tar.extractfile(meta).read(), f"{path}:{meta.name}")
    index = {wnid: k for k, wnid in enumerate(sorted(id_to_wnid.values()))}
    unknown = sorted(set(ids) - set(id_to_wnid))
    if unknown:
        raise ValueError(f"{where}: ILSVRC2012_IDs {unknown[:10]} are not leaf synsets of "
                         f"{path}:{_META}")
    labels = [index[id_to_wnid[i]] for i in ids]
    names = {index[w]: w for w in id_to_wnid.values()}
    return labels, "sorted_wnid_index", names


def _prepare_from_archive(archive, devkit, labels_file, per_class, seed):
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"ImageNet validation archive not found: {archive} "
                                "(expected ILSVRC2012_img_val.tar)")
    if (devkit is None) == (labels_file is None):
        raise ValueError("give exactly one of devkit (ILSVRC2012_devkit_t12.tar.gz) or "
                         "labels_file (one integer label per line) with archive")
    if devkit is not None:
        labels, label_space, class_names = _devkit_labels(devkit)
        label_source = str(devkit)
    else:
        labels, label_space, class_names = _read_labels_file(labels_file), "as_given", {}
        label_source = str(labels_file)

    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as error:
        raise ValueError(f"{archive}: not a readable tar archive ({error})") from error
    with tar:
        members = {}
        for member in tar.getmembers():  # headers only; the archive is not extracted
            match = _VAL_MEMBER.search(member.name) if member.isfile() else None
            if match:
                number = int(match.group(1))
                if number in members:
                    raise ValueError(f"{archive}: image {number} appears twice")
                members[number] = member
        if not members:
            raise ValueError(f"{archive}: no ILSVRC2012_val_XXXXXXXX.JPEG members")
        if len(members) != len(labels):
            raise ValueError(f"{label_source} has {len(labels)} labels but {archive} has "
                             f"{len(members)} validation images")
        numbers = np.array(sorted(members))
        if numbers[0] != 1 or numbers[-1] != len(labels):
            raise ValueError(f"{archive}: images are numbered {numbers[0]}..{numbers[-1]}, "
                             f"expected 1..{len(labels)} to match {label_source}")
        labels = np.asarray(labels, dtype=np.int64)  # labels[k] is image k + 1
        chosen = select_per_class(labels, numbers, per_class=per_class, seed=seed,
                                  class_names=class_names, source=str(archive))
        chosen_numbers = numbers[chosen]
        # the original files, byte for byte, in output order; read in archive order
        # (sequential reads) and written straight into place: memory is the output only
        offsets = np.zeros(len(chosen) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([members[n].size for n in chosen_numbers])
        data = np.empty(int(offsets[-1]), dtype=np.uint8)
        shapes = np.zeros((len(chosen), 2), dtype=np.int64)
        order = sorted(range(len(chosen)), key=lambda k: members[chosen_numbers[k]].offset_data)
        for done, k in enumerate(order, start=1):
            member = members[chosen_numbers[k]]
            raw = tar.extractfile(member).read()
            what = f"{archive}:{member.name}"
            if len(raw) != member.size:
                raise ValueError(f"{what}: read {len(raw)} bytes, the header says {member.size}")
            shapes[k] = _validate(raw, what)
            data[offsets[k]:offsets[k + 1]] = np.frombuffer(raw, dtype=np.uint8)
            if done % 1000 == 0:
                log.info("read and checked %d/%d images", done, len(chosen))
    info = {
        "source": "archive",
        "archive": str(archive),
        "archive_bytes": archive.stat().st_size,
        "labels_from": label_source,
        "label_space": label_space,
        "n_available": int(len(members)),
    }
    return chosen_numbers, labels[chosen], (data, offsets, shapes), info


def _parquet_index(path: Path, shard: str):
    """(label, path) of every row of a hub shard, reading neither image bytes nor more."""
    import pyarrow.parquet as pq  # deferred: optional dependency, data extra

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:
        raise ValueError(f"{path} ({shard}): not a readable parquet file ({error})") from error
    schema = parquet.schema_arrow
    if "label" not in schema.names or "image" not in schema.names:
        raise ValueError(f"{path} ({shard}): expected columns 'image' and 'label', "
                         f"found {schema.names}")
    image_type = schema.field("image").type
    has_path = hasattr(image_type, "names") and "path" in image_type.names
    columns = ["label", "image.path"] if has_path else ["label"]
    table = parquet.read(columns=columns)
    labels = table.column("label").to_pylist()
    if has_path:
        # depending on the pyarrow reader, a struct<path> column or a flat "path" column
        (path_column,) = [name for name in table.column_names if name != "label"]
        paths = [value.get("path") if isinstance(value, dict) else value
                 for value in table.column(path_column).to_pylist()]
    else:
        paths = [None] * len(labels)
    return labels, paths


def _prepare_from_hub(hub_repo, revision, shards, cache_dir, per_class, seed, sha256, pin_name):
    import pyarrow.parquet as pq  # deferred: optional dependency, data extra

    if not shards:
        raise ValueError("shards is empty")
    pins = dict(sha256 or {})
    unknown = sorted(set(pins) - set(shards))
    if unknown:
        raise ValueError(f"{pin_name}: pinned digests for files that are not shards: {unknown}")
    local, digests, commits = [], {}, set()
    for shard in shards:
        hub = hub_file(hub_repo, shard, revision=revision, cache_dir=cache_dir,
                       sha256=pins.get(shard), pin_name=f"{pin_name}[{shard}]",
                       token_help=IMAGENET_TOKEN_HELP)
        local.append(hub.path)
        digests[shard] = hub.sha256
        commits.add(hub.commit)

    rows = []  # (shard index, row in shard, label, number)
    row_order_ids = False
    global_row = 0
    for s, (shard, path) in enumerate(zip(shards, local)):
        labels, paths = _parquet_index(path, shard)
        for r, (label, name) in enumerate(zip(labels, paths)):
            global_row += 1
            if label is None or int(label) < 0:
                raise ValueError(f"{path} ({shard}), row {r}: label {label!r}; the "
                                 "validation split must be labelled (0..999)")
            match = _VAL_NAME.search(name) if isinstance(name, str) else None
            if match:
                number = int(match.group(1))
            else:
                row_order_ids = True
                number = global_row
            rows.append((s, r, int(label), number))
    if row_order_ids:
        log.warning("%s: some image paths carry no ILSVRC2012_val_XXXXXXXX name; their ids "
                    "follow the row order of the shards", hub_repo)
    index = np.array(rows, dtype=np.int64).reshape(-1, 4)
    if np.unique(index[:, 3]).size != len(index):
        raise ValueError(f"{hub_repo}: duplicate image numbers across the shards")
    chosen = select_per_class(index[:, 2], index[:, 3], per_class=per_class, seed=seed,
                              source=f"{hub_repo}@{revision}")
    wanted = {}  # shard -> {row: output position}
    for k, i in enumerate(chosen):
        wanted.setdefault(int(index[i, 0]), {})[int(index[i, 1])] = k
    files = {}  # output position -> the original file's bytes
    shapes = np.zeros((len(chosen), 2), dtype=np.int64)
    for s, positions in sorted(wanted.items()):
        parquet = pq.ParquetFile(local[s])
        row = 0
        for batch in parquet.iter_batches(batch_size=256, columns=["image"]):
            column = batch.column(0).field("bytes")
            for offset in range(batch.num_rows):
                k = positions.get(row + offset)
                if k is not None:
                    raw = column[offset].as_py()
                    where = f"{local[s]} ({shards[s]}), row {row + offset}"
                    if not raw:
                        raise ValueError(f"{where}: no image bytes")
                    shapes[k] = _validate(raw, where)
                    files[k] = raw
                    if len(files) % 1000 == 0:
                        log.info("read and checked %d/%d images", len(files), len(chosen))
            row += batch.num_rows
    if len(files) != len(chosen):
        raise ValueError(f"{hub_repo}: read {len(files)} of {len(chosen)} selected images")
    data, offsets = _concatenate(files, len(chosen))
    info = {
        "source": "huggingface",
        "repo_id": hub_repo,
        "revision": revision,
        "commit": commits.pop() if len(commits) == 1 else sorted(map(str, commits)),
        "shards": list(shards),
        "shard_sha256": digests,
        "label_space": "sorted_wnid_index",
        "ids_from": "row_order" if row_order_ids else "image_path",
        "n_available": int(len(index)),
    }
    return index[chosen, 3], index[chosen, 2], (data, offsets, shapes), info


def prepare_imagenet(out, *, per_class: int = 20, seed: int = 0,
                     archive=None, devkit=None, labels_file=None,
                     hub_repo: str = IMAGENET_HUB_REPO, revision: str = "main",
                     cache_dir=None, shards: Sequence[str] = IMAGENET_VAL_SHARDS,
                     sha256: dict | None = None, pin_name: str = "sha256", **removed) -> dict:
    """Write a seeded class-balanced selection of ImageNet validation images as stimuli.

    ``per_class`` images of every class present in the data (1000 classes x 20 = 20,000 in
    the paper) are drawn by :func:`select_per_class` (seeded per class, independent of file
    order), from either

    * ``archive``: a local ``ILSVRC2012_img_val.tar`` (members read one by one, nothing is
      extracted to disk) with the labels from ``devkit`` (``ILSVRC2012_devkit_t12.tar.gz``:
      ``data/ILSVRC2012_validation_ground_truth.txt``, mapped to sorted-WNID indices through
      ``data/meta.mat``) or ``labels_file`` (one integer label per line in image order,
      stored as given); or
    * the gated hub data set ``hub_repo`` at ``revision``: its validation parquet ``shards``
      are downloaded by huggingface_hub into its cache (``cache_dir``, default
      ``HF_HUB_CACHE``) with the token in ``HF_TOKEN`` (a missing or rejected token raises
      :class:`PermissionError` saying where to request access); each is verified against the
      hub's SHA-256 ETag and, when ``sha256`` (shard -> digest) pins it, against the pin
      (:func:`motalign.datasets.hub.hub_file`).

    The images are stored as their **original files**, byte for byte (the archive member,
    or the parquet row's ``image.bytes``): ``image_bytes`` and ``image_offsets``
    (:mod:`motalign.io.stimuli`), not resized, cropped or re-encoded, so that each model's
    own image processor resizes and crops the original image at extraction.  Each file is
    checked to decode with Pillow (``convert("RGB")``; an error names the archive member or
    parquet row).  Ids are ``ILSVRC2012_val_XXXXXXXX``, ordered by image number; labels are
    stored (int64).

    Memory: the output (about 2.6 GB of JPEG for the paper's 20,000 images) plus one image;
    the hub shards are read in batches of 256 rows.  Returns the provenance (also in
    ``<out>.json``).
    """
    if "image_size" in removed:
        raise TypeError("prepare_imagenet no longer takes image_size: the original images are stored and "
                        "each model's image processor resizes and crops them")
    if removed:
        raise TypeError(f"prepare_imagenet got unexpected keyword arguments {sorted(removed)}")
    if archive is not None:
        numbers, labels, (data, offsets, shapes), info = _prepare_from_archive(
            archive, devkit, labels_file, per_class, seed)
    else:
        if devkit is not None or labels_file is not None:
            raise ValueError("devkit/labels_file need archive (the local validation tar)")
        numbers, labels, (data, offsets, shapes), info = _prepare_from_hub(
            hub_repo, revision, tuple(shards), cache_dir, per_class, seed, sha256, pin_name)
    ids = np.array([f"ILSVRC2012_val_{int(n):08d}" for n in numbers])
    labels = np.asarray(labels, dtype=np.int64)
    save_npz(out, ids=ids, image_bytes=data, image_offsets=offsets, labels=labels)
    classes, counts = np.unique(labels, return_counts=True)
    provenance = {
        "dataset": "imagenet_val",
        **info,
        "per_class": int(per_class),
        "seed": int(seed),
        "n_classes": int(classes.size),
        "n_stimuli": int(len(ids)),
        "images_per_class": sorted({int(c) for c in counts}),
        "selection": ("per class: items sorted by image number, numpy default_rng([seed, "
                      "label]).choice(n, per_class, replace=False); output sorted by image "
                      "number"),
        "preprocessing": ("none: the original files, byte for byte (image_bytes, image_offsets), no "
                          "resizing, cropping or re-encoding; each checked to decode with Pillow "
                          "(convert('RGB')); each model's image processor resizes and crops at extraction"),
        "image_bytes": int(data.size),
        "image_heights": [int(shapes[:, 0].min()), int(shapes[:, 0].max())] if len(shapes) else [],
        "image_widths": [int(shapes[:, 1].min()), int(shapes[:, 1].max())] if len(shapes) else [],
        "ids": "ILSVRC2012_val_XXXXXXXX",
        "out": str(out),
    }
    write_json(provenance_path(out), provenance)
    return provenance
