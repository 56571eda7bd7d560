"""Awkward input files (issue 12): each is converted correctly or reported in one line naming the file and the fix,
while the other images complete. The corpus is generated here, never committed.

Unit tests compare `load_image` against references computed independently with numpy on the raw samples; one
`pytest bench` run over the whole corpus checks that every bad file reaches the report (count and list) and every
good one gets its row.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import shared_path
from tests.test_failures import bench
from vision_tokenizers.datasets import ImageSet, open_dataset, unique_ids
from vision_tokenizers.images import MAX_ASPECT, BadImage, center_crop_resize, list_images, load_image, prepare_image

RNG = np.random.default_rng(12)


def photo(width: int, height: int, channels: int = 3) -> np.ndarray:
    """A smooth gradient with some noise: JPEG-friendly, and far from a flat colour."""
    y, x = np.mgrid[0:height, 0:width]
    planes = [x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) * 255 / max(width + height - 2, 1),
              (width - 1 - x) * 255 / max(width - 1, 1)]
    base = np.stack(planes[:channels], -1)
    return np.clip(base + RNG.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------ PNG by hand
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def png_bytes(samples: np.ndarray, color_type: int, bit_depth: int = 16) -> bytes:
    """A PNG of `samples` (H, W, C) written from the specification: big-endian samples, every row filtered with
    the next of the five filter types in turn, so a decoder has to undo all of them."""
    rows = samples.astype(">u2" if bit_depth == 16 else np.uint8).reshape(samples.shape[0], -1).view(np.uint8)
    rows = rows.astype(np.int32)
    bpp = samples.shape[2] * bit_depth // 8
    out, prior = [], np.zeros_like(rows[0])
    for y, raw in enumerate(rows):
        left = np.concatenate([np.zeros(bpp, np.int32), raw[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int32), prior[:-bpp]])
        kind = y % 5
        predictor = [0, left, prior, (left + prior) // 2, _paeth(left, prior, up_left)][kind]
        out.append(bytes([kind]) + ((raw - predictor) % 256).astype(np.uint8).tobytes())
        prior = raw
    height, width = samples.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(out)))
            + _chunk(b"IEND", b""))


def bomb_png() -> bytes:
    """A 20000 x 10000 grayscale PNG header (200 megapixels, over Pillow's limit) with almost no data."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 10000, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------------- a CMYK profile
def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def cmyk_profile() -> bytes:
    """A minimal ICC v2 CMYK output profile (lut8, Lab PCS) that prints pure cyan ink as sRGB red: a conversion that
    uses the profile gives red where Pillow's plain conversion gives cyan."""
    clut = b""
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    lab = (0, 0, 0) if k else (54.29, 80.80, 69.89) if (c, m, y) == (1, 0, 0) else (100, 0, 0)
                    clut += bytes([round(lab[0] * 255 / 100), round(lab[1] + 128), round(lab[2] + 128)])
    ramp = bytes(range(256))
    lut = (b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
           + ramp * 4 + clut + ramp * 3)
    desc = b"desc" + bytes(4) + struct.pack(">I", 5) + b"test\x00" + bytes(4 + 4 + 2 + 1 + 67)
    white = b"XYZ " + bytes(4) + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    tags = [(b"desc", desc), (b"wtpt", white), (b"cprt", b"text" + bytes(4) + b"none\x00"), (b"A2B0", lut)]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"prtr" + b"CMYK" + b"Lab "
              + bytes(12) + b"acsp" + b"APPL" + bytes(24) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + data


def jpeg_bytes(array: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=95, **save)
    return buf.getvalue()


def image_bytes(image: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- the corpus, on disk
GRAY16 = (np.arange(48 * 40).reshape(40, 48) * 34).astype(np.uint16)  # 0 .. 65246, every 34th value
RGB16 = RNG.integers(0, 65536, (40, 48, 3)).astype(np.uint16)


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg_bytes(photo(60, 40), exif=exif)


def _palette_with_transparency() -> bytes:
    im = Image.fromarray(photo(40, 30)).quantize(16)
    return image_bytes(im, "PNG", transparency=0)


def _png(array: np.ndarray) -> bytes:
    return image_bytes(Image.fromarray(array), "PNG")


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupt_middle(data: bytes, garbage: bytes | None = None) -> bytes:
    """`data` with bytes in the middle overwritten (by frame markers, unless given), as a bad disk block does."""
    middle = len(data) // 2
    garbage = b"\xff\xc0" * 100 if garbage is None else garbage
    return data[:middle] + garbage + data[middle + len(garbage):]


def _zero_padded(data: bytes) -> bytes:
    """What an interrupted download into a preallocated file leaves: the second half is zeros."""
    return data[: len(data) // 2] + bytes(len(data) - len(data) // 2)


GOOD: dict[str, object] = {  # file name -> bytes, or a callable returning bytes
    "photo.jpg": lambda: jpeg_bytes(photo(80, 60)),
    "gray16.png": lambda: image_bytes(Image.fromarray(GRAY16), "PNG"),
    "rgb16.png": lambda: png_bytes(RGB16, color_type=2),
    "cmyk.jpg": lambda: image_bytes(Image.new("CMYK", (40, 30), (255, 0, 0, 0)), "JPEG", icc_profile=cmyk_profile()),
    "cmyk_plain.jpg": lambda: image_bytes(Image.frombytes("CMYK", (40, 30), photo(40, 30, 4).tobytes()), "JPEG"),
    "rgba.png": lambda: image_bytes(Image.fromarray(photo(40, 30, 3)).convert("RGBA"), "PNG"),
    "palette_trns.png": _palette_with_transparency,
    "gray.jpg": lambda: jpeg_bytes(photo(50, 40, 1)[..., 0]),
    "exif_rotated.jpg": _rotated_jpeg,
    "one_pixel.png": lambda: image_bytes(Image.new("RGB", (1, 1), (200, 30, 60)), "PNG"),
    "wide.png": lambda: image_bytes(Image.fromarray(photo(3000, 3)), "PNG"),
    "tall.png": lambda: image_bytes(Image.fromarray(photo(3, 3000)), "PNG"),
    "café crème 日本.png": lambda: image_bytes(Image.fromarray(photo(40, 30)), "PNG"),
    "with space.jpg": lambda: jpeg_bytes(photo(40, 30)),
    "dup.jpg": lambda: jpeg_bytes(photo(40, 30)),
    "dup.png": lambda: image_bytes(Image.fromarray(photo(40, 30)), "PNG"),
    "folder.jpg/inside.png": lambda: image_bytes(Image.fromarray(photo(40, 30)), "PNG"),
}
BAD: dict[str, tuple[object, str]] = {  # file name -> (bytes or a special kind, what the one line says)
    "zero.jpg": (b"", "empty file (0 bytes)"),
    "truncated.jpg": (lambda: _truncated(jpeg_bytes(photo(80, 60))), "image file is truncated"),
    "truncated.png": (lambda: _truncated(_png(photo(80, 60))), "truncated"),
    "corrupt_mid.jpg": (lambda: _corrupt_middle(jpeg_bytes(photo(80, 60))), "broken data stream"),
    "stray_marker.jpg": (lambda: _corrupt_middle(jpeg_bytes(photo(80, 60)), b"\xff\x01"), "corrupt JPEG data"),
    "zero_padded.jpg": (lambda: _zero_padded(jpeg_bytes(photo(80, 60))), "no end-of-image marker"),
    "corrupt_mid.png": (lambda: _corrupt_middle(_png(photo(80, 60))), "cannot be decoded"),
    "text.png": (b"just some notes, not an image\n", "cannot identify image file"),
    "bomb.png": (bomb_png, "too large to decode safely"),
    "dangling.jpg": ("symlink", "broken symbolic link"),
    "fifo.jpg": ("fifo", "not a regular file"),
    "unreadable.jpg": ("chmod000", "permission denied"),
}


def make_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in [*GOOD.items(), *((n, c) for n, (c, _) in BAD.items())]:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "symlink":
            path.symlink_to(folder / "gone" / "photo.jpg")
        elif content == "fifo":
            os.mkfifo(path)
        elif content == "chmod000":
            path.write_bytes(jpeg_bytes(photo(40, 30)))
            path.chmod(0)
        else:
            path.write_bytes(content() if callable(content) else content)
    return folder


def ids_by_name(folder: Path) -> dict[str, str]:
    """File name (relative, posix) -> the image id the benchmark gives it."""
    paths = list_images(folder)
    return {p.relative_to(folder).as_posix(): i for p, i in zip(paths, unique_ids(paths), strict=True)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("awkward") / "images")


def pixels(path: Path) -> np.ndarray:
    return np.asarray(load_image(path))


# ------------------------------------------------------------------------------------------------------ conversions
def test_16bit_gray_is_scaled_by_257_not_clipped(corpus):
    expected = np.round(GRAY16 / 257).astype(np.uint8)
    got = pixels(corpus / "gray16.png")
    assert got.shape == (40, 48, 3) and all(np.array_equal(got[..., c], expected) for c in range(3))
    assert got.mean() == pytest.approx(GRAY16.mean() / 257, abs=0.5)  # clipping at 255 would make it ~white


def test_16bit_rgb_and_rgba_keep_all_16_bits(corpus, tmp_path):
    np.testing.assert_array_equal(pixels(corpus / "rgb16.png"), np.round(RGB16 / 257).astype(np.uint8))
    rgba16 = np.concatenate([RGB16, np.full((40, 48, 1), 65535, np.uint16)], axis=-1)
    rgba16[0, 0, 3] = 0  # one transparent pixel: white
    (tmp_path / "rgba16.png").write_bytes(png_bytes(rgba16, color_type=6))
    expected = np.round(RGB16 / 257).astype(np.uint8)
    expected[0, 0] = 255
    np.testing.assert_array_equal(pixels(tmp_path / "rgba16.png"), expected)


def test_cmyk_goes_through_its_embedded_profile(corpus):
    pytest.importorskip("PIL.ImageCms", reason="Pillow built without LittleCMS: the plain conversion is used")
    red = pixels(corpus / "cmyk.jpg")[0, 0].astype(int)
    assert red[0] >= 240 and red[1] <= 25 and red[2] <= 25, red  # the profile's red, not the plain conversion's cyan
    with Image.open(corpus / "cmyk.jpg") as im:
        assert np.asarray(im.convert("RGB"))[0, 0].tolist() == [0, 255, 255]  # what ignoring the profile gives


def test_cmyk_without_profile_is_the_plain_conversion(corpus):
    with Image.open(corpus / "cmyk_plain.jpg") as im:
        assert im.mode == "CMYK" and "icc_profile" not in im.info
        cmyk = np.asarray(im).astype(np.float64)
    expected = (255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255
    assert np.abs(pixels(corpus / "cmyk_plain.jpg") - expected).max() <= 1


def test_transparency_is_composited_on_white(corpus, tmp_path):
    rgba = photo(40, 30, 4)
    (tmp_path / "alpha.png").write_bytes(image_bytes(Image.fromarray(rgba), "PNG"))
    alpha = rgba[..., 3:].astype(np.float64) / 255
    expected = rgba[..., :3] * alpha + 255 * (1 - alpha)
    assert np.abs(pixels(tmp_path / "alpha.png") - expected).max() <= 1
    with Image.open(corpus / "palette_trns.png") as im:
        index, palette = np.asarray(im), np.asarray(im.getpalette()).reshape(-1, 3)
    expected = np.where((index == 0)[..., None], 255, palette[index])
    assert (index == 0).any() and np.array_equal(pixels(corpus / "palette_trns.png"), expected)


def test_exif_orientation_and_grayscale(corpus, tmp_path):
    array = photo(30, 20)
    for orientation, k in ((3, 2), (6, -1), (8, 1)):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.png"
        Image.fromarray(array).save(path, exif=exif)
        np.testing.assert_array_equal(pixels(path), np.rot90(array, k))
    assert load_image(corpus / "exif_rotated.jpg").size == (40, 60)
    gray = pixels(corpus / "gray.jpg")
    assert gray.shape == (40, 50, 3) and np.array_equal(gray[..., 0], gray[..., 2])


def test_tiny_and_extreme_aspect_images_crop_with_bounded_memory(corpus, monkeypatch):
    assert np.asarray(prepare_image(load_image(corpus / "one_pixel.png"), 64)).reshape(-1, 3).tolist() == \
        [[200, 30, 60]] * 64 * 64
    sizes = []
    resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, *a, **k: sizes.append(size) or resize(
        self, size, *a, **k))
    strip = Image.fromarray(photo(100_000, 2))
    out = center_crop_resize(strip, 512)
    assert out.size == (512, 512) and max(max(s) for s in sizes) <= MAX_ASPECT * 512  # not a 25600000-px strip
    keep = MAX_ASPECT * 2
    left = (100_000 - keep) // 2
    reference = center_crop_resize(strip.crop((left, 0, left + keep, 2)), 512)
    assert np.array_equal(np.asarray(out), np.asarray(reference))
    for name, size in (("wide.png", (3000, 3)), ("tall.png", (3, 3000))):
        image = load_image(corpus / name)
        assert image.size == size and prepare_image(image, 64).size == (64, 64)


def test_normal_aspect_ratios_keep_the_exact_adm_crop():
    from tests.test_images import reference_adm_crop

    image = Image.fromarray(photo(400, 50))  # 8:1, at the limit: untouched
    np.testing.assert_array_equal(np.asarray(center_crop_resize(image, 64)), reference_adm_crop(image, 64))


# --------------------------------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("name", sorted(set(BAD) - {"unreadable.jpg"}))
def test_bad_file_is_one_line_naming_the_file_and_the_fix(corpus, name):
    with pytest.raises(BadImage) as info:
        load_image(corpus / name)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{corpus / name}: ") and BAD[name][1] in message
    assert any(fix in message for fix in ("remove it", "downscale it", "copy it again", "fix the link"))


def test_unreadable_file_is_reported_as_permission_denied(corpus, monkeypatch):
    path = corpus / "unreadable.jpg"
    if os.access(path, os.R_OK):  # root ignores permission bits: make `open` answer as it would for anyone else
        real_open = open

        def denying_open(file, *args, **kwargs):
            if os.fspath(file) == str(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", denying_open)
    with pytest.raises(BadImage, match="permission denied; make it readable") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_folder_listing_keeps_broken_links_and_fifos_and_walks_directories_named_like_images(corpus):
    names = {p.relative_to(corpus).as_posix() for p in list_images(corpus)}
    assert {"dangling.jpg", "fifo.jpg", "folder.jpg/inside.png"} <= names and "folder.jpg" not in names
    assert names == set(GOOD) | set(BAD)


def test_files_sharing_a_stem_get_distinct_ids(tmp_path):
    paths = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "x" / "a.png", tmp_path / "b.png"]
    assert unique_ids(paths) == ["a", "a_png", "a_png_2", "b"]
    assert ImageSet("s", paths).ids == ["a", "a_png", "a_png_2", "b"]


def test_imageset_keeps_good_files_and_lists_every_bad_one(corpus):
    images = open_dataset(str(corpus))
    ids, batch = next(images.batches(32, len(images.paths)))
    by_name = ids_by_name(corpus)
    readable_as_root = {"unreadable.jpg"} if os.access(corpus / "unreadable.jpg", os.R_OK) else set()
    assert set(images.bad) == {by_name[n] for n in set(BAD) - readable_as_root}
    assert set(ids) == {by_name[n] for n in set(GOOD) | readable_as_root} and batch.shape == (len(ids), 3, 32, 32)
    assert {"dup", "dup_png", "inside", "truncated", "truncated_png", "café crème 日本"} <= set(ids) | set(images.bad)


# ------------------------------------------------------------------------------------------- through pytest bench
def _unprivileged() -> tuple[str, ...] | None:
    """A command prefix under which root obeys file permissions (setpriv drops the capabilities that bypass them);
    () when not root; None when root and setpriv is missing (then chmod 000 cannot make a file unreadable)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    return (setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--") if setpriv else None


def test_bench_over_the_awkward_folder_reports_every_bad_file_and_measures_the_rest(tmp_path):
    folder = make_corpus(tmp_path / "awkward")
    prefix = _unprivileged()
    by_name = ids_by_name(folder)
    bad = {by_name[n]: reason for n, (_, reason) in BAD.items()}
    good = {by_name[n] for n in GOOD}
    if prefix is None:  # root without setpriv: the chmod-000 file is readable and measured like the others
        bad.pop("unreadable")
        good.add("unreadable")
    report = tmp_path / "report"
    proc = bench("--tokenizers", "magvit2_tiny", "--weights-dir", str(shared_path("golden")), "--offline",
                 "--dataset", str(folder), "--report-dir", str(report), "--benchmark-disable", "--save-images", "-1",
                 prefix=prefix or ())
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for name in BAD:  # one warning line per bad file
        if by_name[name] in bad:
            assert f"{folder / name}: " in proc.stdout, name
    rows = list(csv.DictReader((report / "benchmark_results.csv").open(encoding="utf-8")))
    assert {r["image_id"] for r in rows} == good and all(float(r["psnr"]) > 0 for r in rows)
    entry = json.loads((report / "report.json").read_text())["tokenizers"]["magvit2_tiny"]
    assert entry["n_images"] == len(good) and entry["failed_images"] == []
    listed = {b["image_id"]: b["reason"] for b in entry["bad_inputs"]}
    assert set(listed) == set(bad)  # every one, not only the last (skip records no longer overwrite each other)
    for image_id, reason in listed.items():
        assert bad[image_id] in reason, (image_id, reason)
    summary = (report / "summary.md").read_text(encoding="utf-8")
    assert f"| `magvit2_tiny` | {len(bad)} | 0 | 0 |" in summary and f"Bad input files ({len(bad)}):" in summary
    for image_id in bad:
        assert f"- `{image_id}`: " in summary
    saved = np.asarray(Image.open(report / "originals" / "64" / "gray16.png"))  # the 16-bit file, not a white square
    np.testing.assert_array_equal(saved, np.asarray(prepare_image(load_image(folder / "gray16.png"), 64)))
