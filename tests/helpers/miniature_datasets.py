"""Miniature copies of the benchmarks' official files, for tests.

Each ``make_<name>_source(folder, classes=..., images_per_class=...)`` writes the official files of
one benchmark, under their official names and in their official layout, into ``folder`` (usable
as ``--source``), and returns a :class:`MiniatureSource` that also holds the split rows a correct
preparer must write. Images are tiny JPEGs; some are grayscale (CUB, Cars) or CMYK (SOP), as in
the real data. Class ids follow the real splits: CUB 1-100 train, Cars 1-98 train, SOP 1-11318
train; In-Shop items with odd ids train, even ids alternate their images between query and
gallery; iNaturalist classes are species ids listed in Smooth-AP's split files (the first half
train); VehicleID vehicles with odd ids train, the even ones fill the nested test lists (small in
medium in large). ``MINIATURE_BUILDERS`` maps each dataset name to its builder.
"""

import io
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

IMAGE_SIZE = (16, 12)
SOP_SUPER_CLASSES = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug")


@dataclass(frozen=True)
class MiniatureSource:
    """Official files written into ``folder``; ``splits`` maps a split to its (path, label) rows."""

    folder: Path
    files: tuple[str, ...]
    splits: dict[str, list[tuple[str, int]]]


def jpeg(index: int, mode: str = "RGB") -> bytes:
    """A small JPEG whose colour depends on ``index``, saved in ``mode`` (RGB, L or CMYK)."""
    color = (index * 37 % 256, index * 91 % 256, index * 53 % 256)
    buffer = io.BytesIO()
    Image.new("RGB", IMAGE_SIZE, color).convert(mode).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _lines(rows) -> bytes:
    return "".join(" ".join(map(str, row)) + "\n" for row in rows).encode()


def make_cub200_source(folder, *, classes=(1, 2, 101, 102), images_per_class=2) -> MiniatureSource:
    """``CUB_200_2011.tgz``; the first image of each class is grayscale."""
    folder = _created(folder)
    images, members, rows = [], {}, []
    for cid in classes:
        for k in range(images_per_class):
            image_id = len(images) + 1
            path = f"{cid:03d}.Bird_{cid}/Bird_{cid}_{k:04d}_{image_id}.jpg"
            images.append((image_id, path, cid))
            members[f"CUB_200_2011/images/{path}"] = jpeg(image_id, "L" if k == 0 else "RGB")
            rows.append((f"CUB_200_2011/images/{path}", cid))
    members.update({
        "CUB_200_2011/images.txt": _lines((i, p) for i, p, _ in images),
        "CUB_200_2011/image_class_labels.txt": _lines((i, c) for i, _, c in images),
        "CUB_200_2011/classes.txt": _lines((c, f"{c:03d}.Bird_{c}") for c in classes),
        # The classification split, which disagrees with the zero-shot one on purpose.
        "CUB_200_2011/train_test_split.txt": _lines((i, i % 2) for i, _, _ in images),
        "CUB_200_2011/bounding_boxes.txt": _lines((i, 1.0, 2.0, 10.0, 8.0) for i, _, _ in images),
    })
    write_tgz(folder / "CUB_200_2011.tgz", members)
    return MiniatureSource(folder, ("CUB_200_2011.tgz",), _split_at(rows, 100))


def make_cars196_source(folder, *, classes=(1, 2, 99, 100), images_per_class=2) -> MiniatureSource:
    """``car_ims.tgz`` and ``cars_annos.mat``: a 1xN struct array, as loadmat reads the real one."""
    folder = _created(folder)
    members, rows = {}, []
    for cid in classes:
        for k in range(images_per_class):
            path = f"car_ims/{len(rows) + 1:06d}.jpg"
            members[path] = jpeg(len(rows), "L" if k == 0 and cid == classes[0] else "RGB")
            rows.append((path, cid))
    fields = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
    annotations = np.empty((1, len(rows)), dtype=[(name, "O") for name in fields])
    for i, (path, cid) in enumerate(rows):
        box = [np.array([[v]], dtype=np.uint16) for v in (1, 2, 14, 10)]
        labels = [np.array([[v]], dtype=np.uint8) for v in (cid, i % 2)]
        annotations[0, i] = (path, *box, *labels)
    class_names = np.empty((1, max(classes)), dtype=object)
    class_names[0, :] = [f"Car model {c}" for c in range(1, max(classes) + 1)]
    write_tgz(folder / "car_ims.tgz", members)
    savemat(folder / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return MiniatureSource(folder, ("car_ims.tgz", "cars_annos.mat"), _split_at(rows, 98))


def make_sop_source(folder, *, classes=(1, 2, 11319, 11320), images_per_class=2) -> MiniatureSource:
    """``Stanford_Online_Products.zip``; the first image of each class is CMYK."""
    folder = _created(folder)
    members, splits = {}, {"train": [], "test": []}
    for cid in classes:
        split = "train" if cid <= 11318 else "test"
        super_id = cid % len(SOP_SUPER_CLASSES) + 1
        for k in range(images_per_class):
            path = f"{SOP_SUPER_CLASSES[super_id - 1]}_final/{111085122871 + cid}_{k}.JPG"
            members[f"Stanford_Online_Products/{path}"] = jpeg(cid + k, "CMYK" if k == 0 else "RGB")
            splits[split].append((cid, super_id, path))
    for split, rows in splits.items():
        table = [("image_id", "class_id", "super_class_id", "path")]
        table += [(i, *row) for i, row in enumerate(rows, start=1)]
        members[f"Stanford_Online_Products/Ebay_{split}.txt"] = _lines(table)
    write_zip(folder / "Stanford_Online_Products.zip", members)
    expected = {
        split: [(f"Stanford_Online_Products/{path}", cid) for cid, _, path in rows]
        for split, rows in splits.items()
    }
    return MiniatureSource(folder, ("Stanford_Online_Products.zip",), expected)


def make_inshop_source(folder, *, classes=(1, 2, 3, 4), images_per_class=2) -> MiniatureSource:
    """``img.zip`` and ``list_eval_partition.txt`` (count line, header, space-padded columns)."""
    folder = _created(folder)
    members, table = {}, []
    splits = {"train": [], "query": [], "gallery": []}
    for item in classes:
        for k in range(images_per_class):
            path = f"img/WOMEN/Dresses/id_{item:08d}/{k + 1:02d}_1_front.jpg"
            status = "train" if item % 2 else ("query", "gallery")[k % 2]
            members[path] = jpeg(item * 10 + k)
            table.append(f"{path:<56}id_{item:08d}{'':8}{status}")
            splits[status].append((path, item))
    partition = [str(len(table)), "image_name item_id evaluation_status", *table]
    (folder / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    write_zip(folder / "img.zip", members)
    return MiniatureSource(folder, ("img.zip", "list_eval_partition.txt"), splits)


INAT_SUPERCATEGORIES = ("Plantae", "Insecta", "Aves", "Fungi")


def make_inaturalist_source(folder, *, classes=(7477, 2108, 5014, 813), images_per_class=2) -> MiniatureSource:
    """``train_val2018.tar.gz`` and Smooth-AP's ``Inat_dataset_splits.zip``; the first half of
    ``classes`` train; the split files list paths in no class order, as the real ones."""
    folder = _created(folder)
    members, splits = {}, {"train": [], "test": []}
    for i, cid in enumerate(classes):
        split = "train" if i < len(classes) / 2 else "test"
        for k in range(images_per_class):
            path = f"train_val2018/{INAT_SUPERCATEGORIES[i % 4]}/{cid}/{cid * 7919 + k:032x}.jpg"
            members[path] = jpeg(cid + k, "L" if k == 1 else "RGB")
            splits[split].append((path, cid))
    splits = {split: rows[::-1] for split, rows in splits.items()}
    members["train_val2018/Plantae/9999/not_listed.jpg"] = jpeg(9999)  # in neither split, as val-only species
    write_tgz(folder / "train_val2018.tar.gz", members)
    lists = {f"Inat_dataset_splits/Inaturalist_{split}_set1.txt": "".join(f"{path}\n" for path, _ in rows).encode()
             for split, rows in splits.items()}
    write_zip(folder / "Inat_dataset_splits.zip", lists)
    return MiniatureSource(folder, ("train_val2018.tar.gz", "Inat_dataset_splits.zip"), splits)


VEHICLEID_TEST_LISTS = {"test_small": "test_list_800.txt", "test_medium": "test_list_1600.txt",
                        "test_large": "test_list_2400.txt"}


def make_vehicleid_source(folder, *, classes=(1, 2, 3, 4, 5, 6, 7, 8), images_per_class=2,
                          inner_folder="VehicleID_V1.0") -> MiniatureSource:
    """``VehicleID_V1.0.zip``: ``image/<7-digit id>.jpg``, ``train_test_split/`` and ``attribute/``
    under ``inner_folder`` ("" puts them at the top). Odd vehicles train; of the even ones the
    first is in every test list, the second in medium and large, the others in large only."""
    folder = _created(folder)
    prefix = f"{inner_folder}/" if inner_folder else ""
    members, lines = {}, {"train": [], "test_small": [], "test_medium": [], "test_large": []}
    test_vehicles = [cid for cid in classes if cid % 2 == 0]
    image_id = 0
    for cid in classes:
        for _ in range(images_per_class):
            image_id += 37  # ids with gaps, as the real ones
            members[f"{prefix}image/{image_id:07d}.jpg"] = jpeg(image_id)
            if cid % 2:
                lines["train"].append((image_id, cid))
                continue
            rank = test_vehicles.index(cid)
            for split, first in (("test_small", 1), ("test_medium", 2), ("test_large", len(test_vehicles))):
                if rank < first:
                    lines[split].append((image_id, cid))
    names = {"train": "train_list.txt", **VEHICLEID_TEST_LISTS}
    for split, rows in lines.items():
        members[f"{prefix}train_test_split/{names[split]}"] = _lines((f"{i:07d}", c) for i, c in rows)
    members[f"{prefix}attribute/model_attr.txt"] = _lines((c, c % 3) for c in classes if c % 2)
    write_zip(folder / "VehicleID_V1.0.zip", members)
    expected = {split: [(f"{prefix}image/{i:07d}.jpg", c) for i, c in rows] for split, rows in lines.items()}
    return MiniatureSource(folder, ("VehicleID_V1.0.zip",), expected)


def _created(folder) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _split_at(rows, last_train_class: int) -> dict[str, list[tuple[str, int]]]:
    return {
        "train": [row for row in rows if row[1] <= last_train_class],
        "test": [row for row in rows if row[1] > last_train_class],
    }


MINIATURE_BUILDERS = {
    "cub200": make_cub200_source,
    "cars196": make_cars196_source,
    "sop": make_sop_source,
    "inshop": make_inshop_source,
    "inaturalist": make_inaturalist_source,
    "vehicleid": make_vehicleid_source,
}


def prepare_miniature(name: str, root, **builder_options) -> Path:
    """Write the miniature official files of benchmark ``name`` under ``root/official/<name>`` and
    prepare them into ``root/<name>`` with the real preparer; returns that prepared folder."""
    from dml_bench.data.prepare import prepare_dataset

    root = Path(root)
    source = MINIATURE_BUILDERS[name](root / "official" / name, **builder_options)
    prepare_dataset(name, root / name, source=str(source.folder), skip_checksum=True, check_standard_counts=False)
    return root / name
