"""Images to explore with: real colour photos bundled with scikit-image, or a dataset's own."""
from __future__ import annotations

from typing import Optional, Union

from PIL import Image

from ..core.data import load_data
from ..core.errors import DataError

# scikit-image ships these colour photos inside the package (no download)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field")


def photo(name: str = "chelsea", size: Optional[int] = None) -> Image.Image:
    """One of scikit-image's bundled colour photos as RGB; `size` resizes the short side."""
    import skimage.data

    if name not in PHOTOS:
        raise DataError(f"unknown photo {name!r}; choose one of {', '.join(PHOTOS)}")
    img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    return resize_short(img, size) if size else img


def photos(names: tuple[str, ...] = PHOTOS[:4], size: Optional[int] = 256) -> dict[str, Image.Image]:
    return {name: photo(name, size) for name in names}


def dataset_images(data: Union[str, object] = "default", n: int = 4, *, size: Optional[int] = None,
                   split: str = "val") -> dict[str, tuple[Image.Image, int]]:
    """The first image of each of `n` classes of a dataset: {class name: (RGB image, label)}."""

    data = load_data(data)
    dataset = data.val if split == "val" else data.train
    out: dict[str, tuple[Image.Image, int]] = {}
    for i in range(len(dataset)):
        img, label = dataset[i]
        name = str(data.classes[label])
        if name not in out and hasattr(img, "convert"):
            img = img.convert("RGB")
            out[name] = (resize_short(img, size) if size else img, int(label))
        if len(out) == n:
            break
    return out


def resize_short(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)


def center_square(img: Image.Image, size: Optional[int] = None) -> Image.Image:
    """The largest centred square, optionally resized to `size`: a pair of images for mixing must match."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    return img.resize((size, size), Image.BICUBIC) if size else img


class ImageSet:
    """Named images with their labels and the class list, for the explorers (photos or a dataset's images).

    Photos get one class each (their own name); a dataset's images keep their labels and its classes.
    """

    def __init__(self, images: dict[str, Image.Image], labels: dict[str, int], classes: list[str]):
        self.images, self.labels, self.classes = images, labels, classes

    @classmethod
    def load(cls, photos_: tuple[str, ...] = PHOTOS[:4], data: Optional[str] = None, *, n: int = 4,
             size: int = 256) -> ImageSet:
        if data:

            dataset = load_data(data)
            picked = dataset_images(dataset, n=n, size=size)
            return cls({k: img for k, (img, _) in picked.items()}, {k: lab for k, (_, lab) in picked.items()},
                       [str(c) for c in dataset.classes])
        names = list(photos_)
        return cls(photos(tuple(names), size), {k: i for i, k in enumerate(names)}, names)

    @property
    def names(self) -> list[str]:
        return list(self.images)

    @property
    def first(self) -> Image.Image:
        return next(iter(self.images.values()))

    def square(self, name: str, size: int = 192) -> Image.Image:
        return center_square(self.images[name], size)
