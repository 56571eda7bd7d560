"""Image loading and the evaluation crop (ADM / LlamaGen / TiTok convention).

`load_image` turns any file a user may drop into a dataset folder into an 8-bit RGB image, or raises `BadImage` with
one line naming the file and the fix. Conversions: 16-bit samples scaled by 1/257 (never clipped at 255), CMYK through
its embedded ICC profile (else Pillow's plain conversion), transparency composited on white, EXIF orientation applied.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
# Longest side / shortest side kept before the ADM resize; beyond it the long side is centre-cropped first, so a
# 100000x1 strip cannot blow up into a multi-GB intermediate (the crop that follows keeps only the centre anyway).
MAX_ASPECT = 8
# Pillow reads 16-bit RGB(A) PNG samples keeping only the high byte; decoding again with the little-endian unpacker
# yields the low byte of the same (big-endian) samples, so both together give the full 16-bit value.
_LOW_BYTE_RAWMODE = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


# Markers that may follow a JPEG scan's entropy-coded data: tables and misc. segments, the next scan, end of image.
_AFTER_SCAN = {0xC4, 0xCC, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xFE, *range(0xE0, 0xF0)}


class BadImage(ValueError):
    """An input file that cannot be used; the message is one line naming the file and the fix."""


def _check_file(path: Path) -> None:
    """Refuse what is not a regular, non-empty file before opening it (opening a FIFO would block forever)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise BadImage(f"{path}: broken symbolic link (points to {os.readlink(path)}, which does not exist); "
                           "fix the link or remove it from the dataset folder") from None
        raise BadImage(f"{path}: no such file; it was moved or deleted while the run was starting") from None
    except OSError as exc:
        raise BadImage(f"{path}: cannot be examined ({exc.strerror}); fix the path (a link loop?) or its folder's "
                       "permissions, or remove it") from None
    if not stat.S_ISREG(info.st_mode):
        raise BadImage(f"{path}: not a regular file (a FIFO, socket or device); remove it from the dataset folder")
    if info.st_size == 0:
        raise BadImage(f"{path}: empty file (0 bytes); copy it again from its source or remove it")


def jpeg_structure_problem(data: bytes) -> str | None:
    """Where a JPEG's marker structure is broken, or None. libjpeg decodes a misplaced marker inside the image data
    (corruption mid-stream) into a garbled picture with only a warning, which Pillow drops; this walk finds it.
    So is a copy padded with zeros, which decodes without error. Other corruption of the entropy-coded bytes cannot be
    seen in the file (JPEG has no checksum)."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, restart = 2, False
    while pos < len(data):
        if data[pos] != 0xFF:
            return f"byte {pos}: 0x{data[pos]:02X} where a marker belongs"
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= len(data):
            break
        marker, start = data[pos], pos - 1
        if marker == 0xD9:
            return None  # end of image; what follows (camera trailers, MPO frames) is not this image's data
        if marker in (0x00, 0x01, 0xD8) or 0x02 <= marker <= 0xBF or 0xD0 <= marker <= 0xD7:
            return f"byte {start}: stray marker 0xFF{marker:02X}"
        length = int.from_bytes(data[pos + 1:pos + 3], "big")
        if marker == 0xDD:  # DRI: restart markers will appear in the scans
            restart = int.from_bytes(data[pos + 3:pos + 5], "big") > 0
        pos += 1 + length
        if marker != 0xDA:
            continue
        expected = 0
        while (pos := data.find(b"\xff", pos)) >= 0 and pos + 1 < len(data):  # the scan's entropy-coded data
            nxt = data[pos + 1]
            if nxt in (0x00, 0xFF):  # a stuffed 0xFF byte, or fill before a marker
                pos += 1 + (nxt == 0x00)
            elif 0xD0 <= nxt <= 0xD7:
                if not restart or nxt != 0xD0 + expected:
                    return f"byte {pos}: restart marker 0xFF{nxt:02X} out of sequence inside the image data"
                expected, pos = (expected + 1) % 8, pos + 2
            elif nxt in _AFTER_SCAN:
                break
            else:
                return f"byte {pos}: marker 0xFF{nxt:02X} inside the image data"
        if pos < 0 or pos + 1 >= len(data):
            break
    return "no end-of-image marker: a truncated or zero-padded copy"


def _scaled_16bit(samples: np.ndarray) -> Image.Image:
    """16-bit samples (H,W) / (H,W,3|4) -> an 8-bit L / RGB / RGBA image: x / 257 rounded (65535 -> 255), never
    clipped."""
    return Image.fromarray(np.round(samples.astype(np.float64) / 257).astype(np.uint8))


def _rawmode(im: Image.Image) -> str | None:
    """How Pillow will unpack the file's samples (read before `load`, which clears the tiles)."""
    rawmodes = {t.args if isinstance(t.args, str) else t.args[0] for t in im.tile if t.args}
    return next(iter(rawmodes)) if len(rawmodes) == 1 else None


def _png_rgb16(path: Path, im: Image.Image, rawmode: str | None) -> Image.Image | None:
    """A 16-bit RGB(A) PNG (already loaded as `im`) at full precision, scaled to 8 bits; None for any other file."""
    if im.format != "PNG" or rawmode not in _LOW_BYTE_RAWMODE:
        return None
    high = np.asarray(im).astype(np.uint32)  # `im` is loaded: Pillow's high bytes
    with Image.open(path) as low_im:
        low_im.tile = [t._replace(args=_LOW_BYTE_RAWMODE[rawmode]) for t in low_im.tile]
        low_im.load()
        low = np.asarray(low_im).astype(np.uint32)
    return _scaled_16bit(high * 256 + low)


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """CMYK through the file's embedded ICC profile to sRGB; Pillow's plain conversion without one (or without
    LittleCMS)."""
    icc = im.info.get("icc_profile")
    if not icc:
        return im.convert("RGB")
    try:
        from PIL import ImageCms
    except ImportError:  # Pillow built without LittleCMS
        return im.convert("RGB")
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (OSError, ValueError, ImageCms.PyCMSError) as exc:
        warnings.warn(f"{getattr(im, 'filename', 'CMYK image')}: embedded ICC profile unusable ({exc}); "
                      "converted without it", stacklevel=3)
        return im.convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: 16-bit gray scaled by 1/257, CMYK via its ICC profile, alpha on white."""
    if im.mode.startswith("I;16"):  # 16-bit grayscale (PNG, TIFF)
        im = _scaled_16bit(np.asarray(im))
    elif im.mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if im.mode == "I" and lo >= 0 and hi <= 65535:  # 16-bit samples in a 32-bit container
            im = _scaled_16bit(arr)
        elif im.mode == "F" and lo >= 0 and hi <= 1:
            im = Image.fromarray(np.round(arr * 255).astype(np.uint8))
        else:
            raise ValueError(f"{'32-bit integer' if im.mode == 'I' else 'floating-point'} samples in "
                             f"[{lo:.6g}, {hi:.6g}] have no known white level")
    if im.mode == "CMYK":
        return _cmyk_to_rgb(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open a file as 8-bit RGB with its EXIF orientation applied; `BadImage` (one line: file and fix) otherwise."""
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as im:
            rawmode, fmt = _rawmode(im), im.format
            im.load()
            orientation = im.getexif().get(ExifTags.Base.Orientation)
            rgb = to_rgb(_png_rgb16(path, im, rawmode) or im)
    except PermissionError:
        raise BadImage(f"{path}: permission denied; make it readable (chmod a+r) or remove it from the dataset "
                       "folder") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"{path}: too large to decode safely ({exc}); downscale it (e.g. to 8000 px on the long "
                       "side) or remove it") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types; every one means "this file is unusable"
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise BadImage(f"{path}: cannot be decoded as an image ({type(exc).__name__}: {text}); copy it again from "
                       "its source, re-save it as JPEG/PNG, or remove it from the dataset folder") from exc
    if fmt in ("JPEG", "MPO") and (problem := jpeg_structure_problem(path.read_bytes())):
        raise BadImage(f"{path}: corrupt JPEG data ({problem}); the picture decodes garbled: copy it again from its "
                       "source or remove it from the dataset folder")
    method = _ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return rgb.transpose(method) if method is not None else rgb


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """ADM centre crop: halve with BOX while the short side is >= 2*size, BICUBIC to `size`, centre crop.

    Beyond `MAX_ASPECT`:1 the long side is centre-cropped to `MAX_ASPECT` times the short side first (bounded
    memory; the region kept is the same to within a pixel).
    """
    width, height = image.size
    keep = MAX_ASPECT * min(width, height)
    if max(width, height) > keep:
        left, top = (width - keep) // 2 if width > height else 0, (height - keep) // 2 if height > width else 0
        image = image.crop((left, top, left + min(width, keep), top + min(height, keep)))
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
    """Every entry under `folder` with an image suffix that is not a directory, sorted.

    Broken links, FIFOs and the like are listed so that `load_image` reports them instead of letting them vanish; a
    directory named like an image is walked like any other sub-folder.
    """
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
