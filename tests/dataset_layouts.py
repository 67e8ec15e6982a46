"""Miniature copies of the real NUS-WIDE, Open Images v4 and COCO 2017 layouts, written with the
release files' quirks, and the labels each writer put in them (the tests' ground truth)."""
from __future__ import annotations

import io
import json
import os
import pickle
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


def image_bytes(rng: np.random.Generator, size: int = 96) -> bytes:
    """A noise JPEG; at the default size larger than the 4000-byte Flickr placeholder limit."""
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def small_image_bytes() -> bytes:
    """A real but tiny JPEG (a few hundred bytes), like Flickr's "photo unavailable" file."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 200, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def write_bytes(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


# ---------------------------------------------------------------- NUS-WIDE

NUS_TAGS = ["sky", "water", "actor", "beach", "clouds", "dog", "sunset", "tree", "night", "car"]
NUS_CONCEPTS = ["sky", "computer", "beach", "whales", "dog"]   # computer, whales: not tags


@dataclass
class NusLayout:
    root: str
    tags: dict[str, list[int]]          # relative path -> 0/1 per NUS_TAGS
    concepts: dict[str, list[int]]      # relative path -> 0/1 per NUS_CONCEPTS
    train: list[str]                    # relative paths, TrainImagelist order
    test: list[str]
    flat: set[str] = field(default_factory=set)         # stored as Flickr/<dir>_<file>
    missing: set[str] = field(default_factory=set)
    small: set[str] = field(default_factory=set)        # placeholder-sized files
    same_as_placeholder: set[str] = field(default_factory=set)
    placeholder: str = ""                               # a large "placeholder" image file


def windows(relative: str, prefix: bool) -> str:
    return ("C:\\ImageData\\Flickr\\" if prefix else "") + relative.replace("/", "\\")


def write_nuswide(root: str, seed: int = 0) -> NusLayout:
    """24 images in 3 concept folders; Imagelist with the C:\\ prefix, split lists with and without
    it, CRLF everywhere but one label file, trailing tabs in AllTags1k, 4 flat images, one missing,
    one small (placeholder) file and one byte-identical to a given placeholder."""
    rng = np.random.default_rng(seed)
    folders = ["actor", "beach", "sky"]
    images = [f"{folders[i % 3]}/{i + 1:04d}_{1000003 + 7919 * i}.jpg" for i in range(24)]
    images.sort()
    tags = {image: rng.integers(0, 2, size=len(NUS_TAGS)).tolist() for image in images}
    concepts = {image: rng.integers(0, 2, size=len(NUS_CONCEPTS)).tolist() for image in images}
    order = rng.permutation(len(images))
    train = [images[i] for i in order[:14]]
    test = [images[i] for i in order[14:]]
    layout = NusLayout(root, tags, concepts, train, test)

    def text(relative: str, lines: list[str], ending: str = "\r\n", last_ending: bool = True) -> None:
        body = ending.join(lines) + (ending if last_ending else "")
        write_bytes(os.path.join(root, relative), body.encode())

    text("ImageList/Imagelist.txt", [windows(image, prefix=True) for image in images])
    text("ImageList/TrainImagelist.txt", [windows(image, prefix=i % 2 == 0) + ("\t" if i == 3 else "")
                                          for i, image in enumerate(train)])
    text("ImageList/TestImagelist.txt", [windows(image, prefix=False) for image in test], ending="\n")
    text("NUS_WID_Tags/TagList1k.txt", NUS_TAGS)
    text("NUS_WID_Tags/AllTags1k.txt", ["\t".join(map(str, tags[image])) + "\t" for image in images])
    text("ConceptsList/Concepts81.txt", NUS_CONCEPTS)
    for column, concept in enumerate(NUS_CONCEPTS):
        lf_only = concept == "beach"
        text(f"Groundtruth/AllLabels/Labels_{concept}.txt", [str(concepts[image][column]) for image in images],
             ending="\n" if lf_only else "\r\n", last_ending=not lf_only)

    placeholder = image_bytes(rng)
    assert len(placeholder) > 4000
    layout.placeholder = os.path.join(root, "placeholder.jpg")
    write_bytes(layout.placeholder, placeholder)
    layout.flat = {train[0], train[5], test[1], test[6]}
    layout.missing = {test[2]}
    layout.small = {train[1]}
    layout.same_as_placeholder = {train[2]}
    for image in images:
        if image in layout.missing:
            continue
        data = (small_image_bytes() if image in layout.small else
                placeholder if image in layout.same_as_placeholder else image_bytes(rng))
        stored = image.replace("/", "_") if image in layout.flat else image
        write_bytes(os.path.join(root, "Flickr", stored), data)
    return layout


# ---------------------------------------------------------------- Open Images

OI_SEEN = ["/m/01g317", "/m/09j2d", "/m/0dzct", "/m/04yx4", "/m/07j7r", "/m/0c9ph5", "/m/083wq", "/m/0jbk"]
OI_CANDIDATES = ["/m/0k4j", "/m/01bjv", "/m/0199g", "/m/02wbm", "/m/0cmf2", "/m/06mf6"]
OI_TOP = [4, 0, 2]                                       # top_400_unseen.csv: indices into the candidates
OI_UNSEEN = [OI_CANDIDATES[i] for i in OI_TOP]
OI_OTHER = ["/m/05s2s", "/m/0bt9lr"]                     # named, but in no label list: rows ignored
OI_NAMES = {  # MID -> name as a CSV parser reads it; duplicates on purpose
    "/m/01g317": "Person", "/m/09j2d": "Clothing", "/m/0dzct": "Bread, rolls", "/m/04yx4": "Man",
    "/m/07j7r": "Fiat 500 \"topolino\"", "/m/0c9ph5": "Flower", "/m/083wq": "Wheel", "/m/0jbk": "Bat",
    "/m/0k4j": "Car", "/m/01bjv": "Bicycle", "/m/0199g": "Bat", "/m/02wbm": "Food", "/m/0cmf2": "Anole",
    "/m/06mf6": "Rabbit", "/m/05s2s": "Plant", "/m/0bt9lr": "Dog",
}
OI_DESCRIPTION_LINES = {  # how the release quotes them
    "/m/0dzct": '/m/0dzct,"Bread, rolls"', "/m/07j7r": '/m/07j7r,"Fiat 500 ""topolino"""',
    "/m/0cmf2": '/m/0cmf2, Anole',
}


@dataclass
class OiLayout:
    root: str
    labels: dict[str, dict[str, dict[str, int]]]   # split -> ImageID (first-appearance order) -> MID -> +1/-1
    missing: set[str]
    rows: dict[str, int]
    ignored: dict[str, int]
    repeated: dict[str, int]


def write_openimages(root: str, seed: int = 0, unseen_as: str = "pkl", pickle_protocol: int = 4) -> OiLayout:
    """train and test CSVs (no validation): one image's rows split far apart, rows for MIDs in no
    label list, a repeated (image, MID) whose last row flips the value, a CRLF test file, a
    MID outside the top 400 of the unseen candidates; the
    small files with BOM + CRLF (top-400), quoted names, duplicate names; one image missing."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "classes-trainable.txt"), "w", newline="") as handle:
        handle.write("\n".join(OI_SEEN) + "\n")
    with open(os.path.join(root, "class-descriptions.csv"), "w", newline="") as handle:
        handle.write("".join(OI_DESCRIPTION_LINES.get(mid, f"{mid},{name}") + "\n" for mid, name in OI_NAMES.items()))
    if unseen_as == "pkl":
        with open(os.path.join(root, "unseen_labels.pkl"), "wb") as handle:
            pickle.dump(np.array(OI_CANDIDATES, dtype=object), handle, protocol=pickle_protocol)
    else:
        with open(os.path.join(root, "unseen_labels.txt"), "w") as handle:
            handle.write("\n".join(OI_CANDIDATES) + "\n")
    with open(os.path.join(root, "top_400_unseen.csv"), "wb") as handle:
        handle.write(b"\xef\xbb\xbf" + b"".join(f"{i}\r\n".encode() for i in OI_TOP))
    layout = OiLayout(root, {}, set(), {}, {}, {})
    all_mids = OI_SEEN + OI_UNSEEN + OI_OTHER + [OI_CANDIDATES[1]]      # candidates[1]: not in the top 400
    for split, count, ending in (("train", 12, "\n"), ("test", 8, "\r\n")):
        ids = [f"{rng.integers(0, 2**63):016x}" for _ in range(count)]
        rows = [(image, mid, int(rng.integers(0, 2)))
                for image in ids for mid in rng.choice(all_mids, size=int(rng.integers(1, 6)), replace=False)]
        rows.insert(0, (ids[1], OI_SEEN[1], 0))                      # image 1 appears first ...
        rows.append((ids[1], OI_SEEN[1], 1))                         # ... and last: its last row wins
        rows.append((ids[0], OI_SEEN[0], 1))                         # image 0's rows far apart
        rows.append((ids[0], OI_UNSEEN[0], 0))
        known = set(OI_SEEN + OI_UNSEEN)
        labels: dict[str, dict[str, int]] = {image: {} for image in dict.fromkeys(r[0] for r in rows)}
        for image, mid, confidence in rows:
            if mid in known:
                labels[image][mid] = 2 * confidence - 1
        kept = [(image, mid) for image, mid, _ in rows if mid in known]
        layout.repeated[split] = len(kept) - len(set(kept))
        layout.labels[split] = labels
        layout.rows[split] = len(rows)
        layout.ignored[split] = sum(mid not in known for _, mid, _ in rows)
        lines = ["ImageID,Source,LabelName,Confidence"] + [
            f"{image},{'verification' if n % 3 else 'crowdsource-verification'},{mid},{confidence}"
            for n, (image, mid, confidence) in enumerate(rows)]
        with open(os.path.join(root, f"{split}-annotations-human-imagelabels.csv"), "w", newline="") as handle:
            handle.write(ending.join(lines) + ending)
        for image in ids[:-1]:
            write_bytes(os.path.join(root, split, f"{image}.jpg"), image_bytes(rng, 32))
        layout.missing.add(ids[-1])
    return layout


# ---------------------------------------------------------------- COCO

COCO_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush"]
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


@dataclass
class CocoLayout:
    root: str
    positives: dict[str, dict[str, set[str]]]   # split -> file_name (json order) -> category names
    missing: set[str]


def write_coco(root: str, seed: int = 0) -> CocoLayout:
    """instances_{train,val}2017.json with the 80 real category ids (listed shuffled), a crowd
    annotation, images without annotations; one image file missing."""
    rng = np.random.default_rng(seed)
    layout = CocoLayout(root, {}, set())
    shuffled = rng.permutation(len(COCO_IDS))
    categories = [{"id": COCO_IDS[i], "name": COCO_NAMES[i], "supercategory": "x"} for i in shuffled]
    next_id = 1
    for split, count in (("train", 10), ("val", 6)):
        images, annotations, positives = [], [], {}
        for n in range(count):
            image_id = int(rng.integers(1, 10**6))
            file_name = f"{image_id:012d}.jpg"
            images.append({"id": image_id, "file_name": file_name, "width": 32, "height": 32})
            names = set()
            for _ in range(0 if n % 4 == 3 else int(rng.integers(1, 6))):
                index = int(rng.integers(0, len(COCO_IDS)))
                annotations.append({"id": next_id, "image_id": image_id, "category_id": COCO_IDS[index],
                                    "iscrowd": int(next_id == 2), "bbox": [0, 0, 4, 4], "area": 16.0,
                                    "segmentation": [[0, 0, 4, 0, 4, 4]]})
                names.add(COCO_NAMES[index])
                next_id += 1
            positives[file_name] = names
            if n != 1:
                write_bytes(os.path.join(root, f"{split}2017", file_name), image_bytes(rng, 32))
            else:
                layout.missing.add(file_name)
        layout.positives[split] = positives
        rng.shuffle(annotations)
        write_bytes(os.path.join(root, "annotations", f"instances_{split}2017.json"),
                    json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations,
                                "categories": categories}).encode())
    return layout
