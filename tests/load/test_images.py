"""Reading images: every mode becomes the RGB values a hand computation gives.

Each test writes a small file with Pillow (or by hand, for 16-bit colour PNG), reads it
with load_image (mean 0, std 1, so the tensor is the [0, 1] values) and compares with
values computed here from the numbers written.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from reportgen.core.errors import ImageError
from reportgen.load.images import MAX_IMAGE_PIXELS, image_size, load_image
from reportgen.load.spec import InputSpec

RAW = InputSpec()  # no resize, mean 0, std 1: the tensor holds the [0, 1] values


def rgb(path, spec=RAW):
    """(H, W, 3) float32 values the network sees, and the display pixels."""
    im = load_image(path, spec)
    return im.tensor.numpy().transpose(1, 2, 0), im.pixels


def two_rows(a):
    """Images need two rows at least; the tests write each row twice."""
    return np.concatenate([a, a], axis=0)


def test_8bit_rgb_is_divided_by_255(tmp_path):
    a = two_rows(np.array([[[0, 1, 2], [128, 254, 255]]], np.uint8))
    Image.fromarray(a).save(tmp_path / "a.png")
    x, px = rgb(tmp_path / "a.png")
    assert np.array_equal(x, a.astype(np.float32) / 255)
    assert np.array_equal(px, a)


def test_16bit_grey_png_keeps_its_range(tmp_path):
    v = two_rows(np.array([[0, 1000, 32768, 65535]], np.uint16))
    Image.fromarray(v).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    x, px = rgb(tmp_path / "g16.png")
    # 1000 / 65535 = 0.015259; read as 8-bit it would be clipped to 255 (white)
    expected = np.array([0.0, 1000 / 65535, 32768 / 65535, 1.0], np.float32)
    assert np.allclose(x[0, :, 0], expected, atol=1e-7) and np.array_equal(x[..., 0], x[..., 2])
    assert px[0, :, 0].tolist() == [0, 4, 128, 255]  # round(3.89), round(127.5019), 255


def _png16(path, arr, colour_type):
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_16bit_colour_png_is_not_saturated(tmp_path):
    a = two_rows(np.array([[[1000, 32768, 65535], [257, 0, 65280]]], np.uint16))
    _png16(tmp_path / "c16.png", a, colour_type=2)
    x, _ = rgb(tmp_path / "c16.png")
    # Pillow keeps the high byte of each 16-bit sample: v >> 8, over 255.
    assert np.array_equal(x, (a >> 8).astype(np.float32) / 255)
    assert np.abs(x - a / 65535).max() <= 1 / 255


def test_float_tiff_is_read_as_0_to_1_and_clipped(tmp_path):
    v = two_rows(np.array([[0.0, 0.25, 0.5, 1.5, -0.2]], np.float32))
    Image.fromarray(v).save(tmp_path / "f.tif")
    x, px = rgb(tmp_path / "f.tif")
    assert x[0, :, 1].tolist() == [0.0, 0.25, 0.5, 1.0, 0.0]  # read as 8-bit it is black: 0, 0, 0, 1, 0
    assert px[0, :, 1].tolist() == [0, 64, 128, 255, 0]  # round(63.75), round(127.5) (half to even -> 128)


def test_float_tiff_with_nan_is_an_error(tmp_path):
    Image.fromarray(two_rows(np.array([[0.5, np.nan]], np.float32))).save(tmp_path / "n.tif")
    with pytest.raises(ImageError, match=r"n.tif holds NaN or infinite values"):
        load_image(tmp_path / "n.tif", RAW)


def test_cmyk_is_one_minus_ink_times_one_minus_black(tmp_path):
    c = two_rows(np.array([[[200, 100, 50, 30], [0, 0, 0, 255], [0, 0, 0, 0]]], np.uint8))
    Image.fromarray(c, "CMYK").save(tmp_path / "c.tif")
    x, _ = rgb(tmp_path / "c.tif")
    # pixel 0: R = (1 - 200/255)(1 - 30/255) = 0.19031, G = (1 - 100/255)(1 - 30/255) = 0.53633, ...
    assert np.allclose(x[0, 0], [55 / 255 * 225 / 255, 155 / 255 * 225 / 255, 205 / 255 * 225 / 255], atol=1e-6)
    assert np.array_equal(x[0, 1], [0, 0, 0]) and np.array_equal(x[0, 2], [1, 1, 1])


def test_palette_image_gives_its_palette_colours(tmp_path):
    im = Image.fromarray(two_rows(np.array([[0, 1, 2]], np.uint8)), "P")
    im.putpalette([10, 20, 30, 200, 100, 0, 255, 255, 255] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "p.png")
    x, px = rgb(tmp_path / "p.png")
    assert px.tolist() == [[[10, 20, 30], [200, 100, 0], [255, 255, 255]]] * 2
    assert np.array_equal(x, px.astype(np.float32) / 255)


def test_transparent_palette_entry_is_white(tmp_path):
    im = Image.fromarray(two_rows(np.array([[0, 1]], np.uint8)), "P")
    im.putpalette([10, 20, 30, 200, 100, 0] + [0] * (256 * 3 - 6))
    im.save(tmp_path / "pt.png", transparency=0)
    x, _ = rgb(tmp_path / "pt.png")
    assert x[0, 0].tolist() == [1.0, 1.0, 1.0]  # fully transparent: the white background
    assert np.allclose(x[0, 1], np.array([200, 100, 0]) / 255)


def test_rgba_and_la_are_composited_on_white(tmp_path):
    a = two_rows(np.array([[[200, 50, 0, 0], [200, 50, 0, 255], [200, 50, 0, 128]]], np.uint8))
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    x, _ = rgb(tmp_path / "a.png")
    alpha = 128 / 255
    assert x[0, 0].tolist() == [1.0, 1.0, 1.0]
    assert np.allclose(x[0, 1], np.array([200, 50, 0]) / 255)
    # half transparent: 200/255 * 0.50196 + 0.49804 = 0.89178 (on black it would be 0.39370)
    assert np.allclose(x[0, 2], np.array([200, 50, 0]) / 255 * alpha + (1 - alpha), atol=1e-6)
    la = two_rows(np.array([[[100, 128], [100, 0]]], np.uint8))
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    y, _ = rgb(tmp_path / "la.png")
    assert np.allclose(y[0, 0], [100 / 255 * alpha + 1 - alpha] * 3, atol=1e-6)
    assert y[0, 1].tolist() == [1.0, 1.0, 1.0]


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("orientation, turn", [(1, lambda a: a), (3, lambda a: a[::-1, ::-1]),
                                               (6, lambda a: np.rot90(a, k=-1)), (8, lambda a: np.rot90(a, k=1)),
                                               (2, lambda a: a[:, ::-1])])
def test_exif_orientation_is_applied_to_png(tmp_path, orientation, turn):
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    Image.fromarray(a).save(tmp_path / "o.png", exif=_exif(orientation))
    x, px = rgb(tmp_path / "o.png")
    assert np.array_equal(px, turn(a))  # 6: a quarter turn clockwise, so the 2x3 image shows as 3x2
    assert image_size(tmp_path / "o.png") == px.shape[:2]


def test_exif_orientation_is_applied_to_jpeg(tmp_path):
    a = np.zeros((16, 32, 3), np.uint8)
    a[:, :16] = 255  # stored: white left half, black right half
    Image.fromarray(a).save(tmp_path / "o.jpg", quality=100, exif=_exif(6))
    x, _ = rgb(tmp_path / "o.jpg")
    # turned a quarter clockwise: 32 rows x 16 columns, white on top (JPEG: within a few levels)
    assert x.shape == (32, 16, 3)
    assert x[:14].min() > 0.95 and x[18:].max() < 0.05


def test_resizing_a_16bit_image_keeps_float_precision(tmp_path):
    v = np.full((4, 4), 1000, np.uint16)
    Image.fromarray(v).save(tmp_path / "g.png")
    x, _ = rgb(tmp_path / "g.png", InputSpec(size=(2, 2)))
    assert np.allclose(x, 1000 / 65535, atol=1e-7)  # a constant image stays that constant


def test_size_limit_is_checked_before_decoding(tmp_path):
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 1
    Image.new("1", (side, side)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match=rf"big.png claims {side}x{side} pixels, over reportgen's limit"):
        image_size(tmp_path / "big.png")
