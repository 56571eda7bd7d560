"""Image loading and the evaluation crop (ADM / LlamaGen / TiTok convention)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


class BadImage(ValueError):
    """An input file that cannot be used; the message is one line naming the file and the fix."""


def load_image(path: str | Path) -> Image.Image:
    """Open, apply the EXIF orientation, convert to RGB (alpha composited on white)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
    except Exception as exc:
        raise BadImage(f"{path}: cannot be decoded as an image ({type(exc).__name__}: {exc}); "
                       "remove it from the dataset folder or re-save it as JPEG/PNG") from exc
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """ADM centre crop: halve with BOX while the short side is >= 2*size, BICUBIC to `size`, centre crop."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.Resampling.BICUBIC)
    left = (image.size[0] - size) // 2
    top = (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def prepare_image(image: Image.Image, resolution: int) -> Image.Image:
    """The one preprocessing path of the benchmark and the interface: RGB, ADM centre crop at `resolution`."""
    return center_crop_resize(image.convert("RGB"), resolution)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
