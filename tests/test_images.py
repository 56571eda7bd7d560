import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import shared_path
from vision_tokenizers.base import pil_to_tensor01, tensor01_to_pil, to_uint8
from vision_tokenizers.datasets import ImageSet, open_dataset, resolve_dataset, sample_paths
from vision_tokenizers.images import BadImage, center_crop_resize, load_image


def reference_adm_crop(image: Image.Image, size: int) -> np.ndarray:
    """Independent rewrite of guided-diffusion's center_crop_arr, crop done on the array."""
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.array(image)
    y, x = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[y:y + size, x:x + size]


@pytest.mark.parametrize("size", [64, 256, 512])
def test_center_crop_matches_adm(size):
    for path in sorted(shared_path("images", "photos").glob("*.jpg"))[:3]:
        image = load_image(path)
        ours = np.asarray(center_crop_resize(image, size))
        assert ours.shape == (size, size, 3)
        np.testing.assert_array_equal(ours, reference_adm_crop(image, size))


def test_exif_orientation_and_rgb(tmp_path):
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.size == (10, 20) and image.mode == "RGB"
    rgba = tmp_path / "alpha.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(rgba)
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not black


def test_bad_image_is_one_line_error_naming_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(BadImage) as info:
        load_image(bad)
    message = str(info.value)
    assert "\n" not in message and str(bad) in message and "remove it" in message


def test_imageset_skips_bad_files_and_keeps_the_rest(tmp_path):
    for i in range(3):
        Image.new("RGB", (80, 60), (i * 40, 0, 0)).save(tmp_path / f"img{i}.png")
    (tmp_path / "zzz.jpg").write_bytes(b"\x00" * 10)
    images = open_dataset(str(tmp_path))
    assert images.ids == ["img0", "img1", "img2", "zzz"]  # ids from the paths, before anything is decoded
    (ids, pixels), = images.batches(32, 4)
    assert ids == ["img0", "img1", "img2"] and pixels.shape == (3, 3, 32, 32) and pixels.dtype == torch.uint8
    assert list(images.bad) == ["zzz"]
    batches = list(images.batches(32, 2))
    assert [len(b[0]) for b in batches] == [2, 1]


def test_datasets_resolve():
    assert len(sample_paths()) >= 5
    name, paths = resolve_dataset(str(shared_path("images", "coco_val2017")))
    assert name == "coco_val2017" and len(paths) == 7
    with pytest.raises(FileNotFoundError, match="not 'samples'"):
        resolve_dataset("/nonexistent/folder")
    assert isinstance(open_dataset("samples", num_images=2), ImageSet)


def test_uint8_conversion_rounds_not_floors():
    x = torch.tensor([-0.1, 0.4 / 255, 0.6 / 255, 254.6 / 255, 1.2]).view(1, 1, 1, 5)
    assert to_uint8(x).flatten().tolist() == [0, 0, 1, 255, 255]  # flooring would give [0, 0, 0, 254, 255]
    photo = center_crop_resize(load_image(sorted(shared_path("images", "photos").glob("*.jpg"))[0]), 64)
    assert np.array_equal(np.asarray(tensor01_to_pil(pil_to_tensor01([photo]))[0]), np.asarray(photo))
