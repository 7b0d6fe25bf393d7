"""Image files into one uint8 array: PNG, JPEG and the other formats Pillow reads, of any size and mode, each
turned upright by its EXIF orientation, resized on its short side to `size` and cropped in the centre, as
torchvision's Resize + CenterCrop do. Grey images stay one channel where every image is grey; else all are
RGB. Decoding runs on every core (Pillow decodes without Python's lock) and its result is cached in
data/cache, keyed by the files' names, sizes and times, so a second run or a sweep starts at once.
"""
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from toolkit.errors import UserError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")  # torchvision's
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def is_image(path):
    return path.suffix.lower() in EXTENSIONS


def decode(path, size, channels=None):
    """uint8 [size, size] (grey) or [size, size, 3] of one file, as it is or in `channels`; a UserError naming a
    file Pillow cannot read."""
    from PIL import Image, ImageOps
    import torchvision.transforms.functional as F
    try:
        with Image.open(path) as image:
            image.draft(image.mode, (size, size))  # a JPEG decodes at the smallest scale still >= size a side
            image = ImageOps.exif_transpose(image)
            grey = image.mode in GREY_MODES if channels is None else channels == 1
            image = image.convert("L" if grey else "RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, OSError) and e.errno:  # the disk failed, not the file
            raise
        raise UserError(f"{path}: not an image this toolkit can decode ({type(e).__name__}: {e})") from None
    if image.size != (size, size):
        image = F.center_crop(F.resize(image, size), size)
    return np.asarray(image, dtype=np.uint8)


def stack(arrays, grey, size):
    """One array: [N, size, size] for grey images, else [N, size, size, 3] with any grey ones repeated."""
    if grey:
        return np.stack(arrays) if arrays else np.zeros((0, size, size), np.uint8)
    rgb = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return np.stack(rgb) if rgb else np.zeros((0, size, size, 3), np.uint8)


def decode_all(paths, size, channels=None):
    """The images of `paths` in their order, decoded on every core."""
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(lambda p: decode(p, size, channels), paths, chunksize=64))


def cache_key(groups, size):
    h = hashlib.sha256(str(size).encode())
    for paths in groups:
        for p in paths:
            info = p.stat()
            h.update(f"{p.resolve()}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
        h.update(b"\1")
    return h.hexdigest()[:20]


def read_images(groups, size, cache_dir):
    """[uint8 array per group of paths] (train, dev, test...), one mode for all of them, from the cache when
    the same files were decoded at the same size before; says which, and how long it took."""
    from toolkit.files import atomic_path
    start, count = time.perf_counter(), sum(map(len, groups))
    path = Path(cache_dir) / f"images-{cache_key(groups, size)}.npz"
    if path.is_file():
        try:
            with np.load(path) as f:
                arrays = [f[str(i)] for i in range(len(groups))]
            print(f"images: {count:,} files, from the cache in {time.perf_counter() - start:.1f}s", flush=True)
            return arrays
        except (ValueError, KeyError, OSError, EOFError):
            pass  # a damaged cache is decoded again, not trusted
    decoded = [decode_all(paths, size) for paths in groups]
    grey = all(a.ndim == 2 for group in decoded for a in group)
    arrays = [stack(group, grey, size) for group in decoded]
    print(f"images: {count:,} files decoded to {size} x {size} {'grey' if grey else 'RGB'} in "
          f"{time.perf_counter() - start:.1f}s", flush=True)
    try:
        with atomic_path(path) as tmp:
            np.savez(tmp, **{str(i): a for i, a in enumerate(arrays)})
    except OSError:  # the cache only saves time
        pass
    return arrays
