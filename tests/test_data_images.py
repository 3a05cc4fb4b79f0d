"""Image decoding (real BIOSCAN photographs), mode conversion, and the eval/train transforms
(docs/method.md, Training recipes)."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from bioclip_cli.config.schema import ImageDataConfig
from bioclip_cli.data.images import (
    EvalTransform,
    TrainTransform,
    decode_array,
    decode_image,
    flip_rotate_matrix,
    jpeg_size,
    make_generator,
    opencv_affine,
    pixels_to_float,
    resized_size,
    to_tensor,
)


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def reference_eval(img: Image.Image, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """The eval transform (docs/method.md, Training recipes) written out:
    ToTensor, Resize(shorter side, bilinear, antialias, on floats), CenterCrop."""
    x = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).float().div(255)
    h, w = x.shape[1:]
    size = (resize, int(resize * w / h)) if h <= w else (int(resize * h / w), resize)
    if size != (h, w):
        x = torch.nn.functional.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
    return x[:, top : top + crop, left : left + crop]


@pytest.fixture
def photos(realdata):
    folder = realdata / "bioscan1m_repo" / "images"
    return {
        "full": [folder / "4284053_Odonata.jpg", folder / "5580278_Coleoptera.jpg"],
        "small": [folder / "BIOUG68001-C12.jpg", folder / "cropped_resized_BIOUG68020-A01.jpg"],
    }


def test_decode_full_size_photo_with_draft(photos):
    data = photos["full"][0].read_bytes()
    full = decode_image(data)
    assert full.mode == "RGB" and full.size == (2880, 2160)
    small = decode_image(data, min_side=256)
    assert small.mode == "RGB" and small.size == (360, 270)  # 1/8 DCT scale, still >= 256
    assert decode_image(data, min_side=500).size == (720, 540)  # 1/4
    assert decode_image(data, min_side=600).size == (1440, 1080)  # 1/4 would be too small
    assert decode_image(data, min_side=1500).size == (2880, 2160)  # less than 2x: full decode
    # the reduced decode is the same picture: compare with a resize of the full decode
    ref = np.asarray(full.resize(small.size, Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(np.asarray(small, dtype=np.float32) - ref).mean() < 3.0


def test_decode_256px_crops(photos):
    for path in photos["small"]:
        img = decode_image(path.read_bytes(), min_side=256)
        assert img.mode == "RGB" and min(img.size) == 256
        assert img.size == Image.open(path).size


@pytest.mark.parametrize(
    ("mode", "make", "expected"),
    [
        ("L", lambda: Image.new("L", (8, 6), 100), (100, 100, 100)),
        ("LA", lambda: Image.new("LA", (8, 6), (50, 128)), (50, 50, 50)),
        ("RGBA", lambda: Image.new("RGBA", (8, 6), (10, 20, 30, 0)), (10, 20, 30)),
        ("P", lambda: Image.new("RGB", (8, 6), (200, 0, 0)).convert("P", palette=Image.Palette.ADAPTIVE), (200, 0, 0)),
        ("I;16", lambda: Image.fromarray(np.full((6, 8), 40000, dtype=np.uint16)), (156, 156, 156)),
        ("I;16 small", lambda: Image.fromarray(np.full((6, 8), 77, dtype=np.uint16)), (77, 77, 77)),
    ],
)
def test_any_mode_becomes_rgb(mode, make, expected):
    img = decode_image(encode(make(), "PNG"))
    assert img.mode == "RGB" and img.size == (8, 6)
    assert img.getpixel((3, 3)) == expected


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red
    img = decode_image(encode(cmyk, "JPEG", quality=95))
    r, g, b = img.getpixel((8, 8))
    assert img.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_eval_transform_is_exact_on_a_full_size_photo(photos):
    data = photos["full"][1].read_bytes()
    cfg = ImageDataConfig(draft=False)
    got = EvalTransform(cfg)(data)
    expected = reference_eval(Image.open(io.BytesIO(data)))
    assert got.shape == (3, 224, 224) and got.dtype == torch.float32
    assert torch.equal(got, expected)
    drafted = EvalTransform(ImageDataConfig(draft=True))(data)  # faster, nearly the same pixels
    assert drafted.shape == (3, 224, 224) and (drafted - expected).abs().mean() < 0.02


def test_eval_transform_crop_offsets_round_half_to_even(photos):
    img = Image.open(photos["small"][0])  # 341 x 256: no resize, left = round(58.5) = 58
    x = to_tensor(img.convert("RGB"))
    got = EvalTransform()(photos["small"][0].read_bytes())
    assert torch.equal(got, x[:, 16:240, 58:282])
    odd = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 343, 3), dtype=np.uint8))
    assert torch.equal(EvalTransform()(odd), to_tensor(odd)[:, 16:240, 60:284])  # round(59.5) = 60


def test_eval_transform_range_and_normalisation(photos):
    data = photos["small"][1].read_bytes()
    plain = EvalTransform()(data)
    assert 0 <= plain.min() and plain.max() <= 1 + 1e-6
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    norm = EvalTransform(ImageDataConfig(mean=mean, std=std))(data)
    expected = (plain - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(norm, expected)
    tiny = EvalTransform(ImageDataConfig(resize=36, crop=32))(data)
    assert tiny.shape == (3, 32, 32)


def test_resized_size_truncates_the_longer_side():
    assert resized_size(2160, 2880, 256) == (256, 341)
    assert resized_size(256, 341, 256) == (256, 341)
    assert resized_size(500, 300, 256) == (426, 256)


def test_train_transform_shape_range_and_determinism(photos):
    data = photos["small"][0].read_bytes()
    tt = TrainTransform()
    a, b = tt(data, 123), tt(data, 123)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert a.shape == (3, 224, 224) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert torch.equal(tt(data, g1), tt(data, g2))
    outs = [tt(data, seed) for seed in range(6)]
    assert len({o.sum().item() for o in outs}) == 6  # different seeds, different augmentations
    assert all(0 <= o.min() and o.max() <= 1 for o in outs)
    full = tt(photos["full"][0].read_bytes(), 5)  # from a 2880 x 2160 photo (draft decode)
    assert full.shape == (3, 224, 224)


def test_train_rotation_fills_black_and_flips():
    white = encode(Image.new("RGB", (256, 256), (255, 255, 255)), "PNG")
    cfg = ImageDataConfig(scale=[1.0, 1.0], ratio=[1.0, 1.0], rotation=45.0, hflip=False, vflip=False)
    outs = [TrainTransform(cfg)(white, seed) for seed in range(8)]
    rotated = [o for o in outs if o[:, 0, 0].sum() == 0]
    assert rotated, "a rotation of up to 45 degrees leaves black corners"
    assert all(o[:, 112, 112].tolist() == [1.0, 1.0, 1.0] for o in outs)
    # flips only: the left half of a two-colour image ends up left or right
    half = np.zeros((256, 256, 3), dtype=np.uint8)
    half[:, :128] = 255
    img = Image.fromarray(half)
    cfg = ImageDataConfig(scale=[1.0, 1.0], ratio=[1.0, 1.0], rotation=0.0, hflip=True, vflip=False)
    lefts = {round(TrainTransform(cfg)(img, seed)[0, 100, 10].item()) for seed in range(16)}
    assert lefts == {0, 1}


def test_crop_box_tries_then_falls_back():
    tt = TrainTransform(ImageDataConfig(scale=[1.0, 1.0], ratio=[2.0, 2.0]))
    assert tt.crop_box(100, 100, [0.5] * 40) == (25, 0, 50, 100)  # 2:1 never fits: central fallback
    tt = TrainTransform(ImageDataConfig(scale=[0.25, 0.25], ratio=[1.0, 1.0]))
    top, left, h, w = tt.crop_box(100, 200, [0.0, 0.0, 0.99, 0.0] + [0.5] * 36)
    assert (h, w) == (71, 71) and top == 29 and left == 0


def test_color_jitter_is_seeded(photos):
    data = photos["small"][1].read_bytes()
    tt = TrainTransform(ImageDataConfig(color_jitter=0.5, resize=72, crop=64))
    a, b, c = tt(data, 1), tt(data, 1), tt(data, 2)
    assert a.shape == (3, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= a.min() and a.max() <= 1


@pytest.mark.parametrize("angle", [0.0, 17.3, -44.9])
@pytest.mark.parametrize(("hflip", "vflip"), [(False, False), (True, False), (False, True), (True, True)])
def test_fused_flip_rotation_equals_pillow_steps(angle, hflip, vflip):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    ref = img
    if hflip:
        ref = ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if vflip:
        ref = ref.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if angle:
        ref = ref.rotate(angle, resample=Image.Resampling.NEAREST, fillcolor=0)
    matrix = flip_rotate_matrix(64, angle, hflip, vflip)
    got = img.transform((64, 64), Image.Transform.AFFINE, matrix, resample=Image.Resampling.NEAREST, fillcolor=0)
    assert np.array_equal(np.asarray(got), np.asarray(ref))


def test_train_full_crop_without_flips_or_rotation_is_a_plain_resize():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)).filter(
        ImageFilter.GaussianBlur(2)
    )
    cfg = ImageDataConfig(scale=[1.0, 1.0], ratio=[1.0, 1.0], rotation=0.0, hflip=False, vflip=False)
    tt = TrainTransform(cfg)
    got = tt(img, 3)
    expected = reference_eval(img, resize=224, crop=224)  # float, antialiased: within rounding of 8-bit
    assert got.shape == (3, 224, 224)
    assert (got - expected).abs().max() < 3 / 255 and (got - expected).abs().mean() < 0.5 / 255
    # pixels() is the same augmentation in uint8
    assert torch.equal(torch.from_numpy(np.ascontiguousarray(tt.pixels(img, 3))).float() / 255, got)


def test_train_flips_are_exact_and_crops_hit_their_box():
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    base = dict(scale=[1.0, 1.0], ratio=[1.0, 1.0], rotation=0.0, resize=256, crop=256)
    plain = TrainTransform(ImageDataConfig(**base, hflip=False, vflip=False))
    seen = set()
    for seed in range(12):
        ref = plain(img, seed)
        assert torch.equal(ref, to_tensor(img))  # full square crop at full size: the image itself
        got = TrainTransform(ImageDataConfig(**base, hflip=True, vflip=True))(img, seed)
        for name, flipped in {
            "none": ref,
            "h": ref.flip(-1),
            "v": ref.flip(-2),
            "hv": ref.flip(-1).flip(-2),
        }.items():
            if torch.equal(got, flipped):
                seen.add(name)
    assert seen == {"none", "h", "v", "hv"}
    # a 512 x 384 ramp: Resize(256) halves it (x/2 -> value); every random crop lands on its own box
    ramp = np.tile(np.linspace(0, 255, 512, dtype=np.float32), (384, 1))
    src = Image.fromarray(np.stack([ramp] * 3, axis=-1).round().astype(np.uint8))
    cfg = ImageDataConfig(scale=[0.1, 0.5], rotation=0.0, hflip=False, vflip=False, draft=False)
    tt = TrainTransform(cfg)
    for seed in range(8):
        u = torch.rand(51, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
        top, left, h, w = tt.crop_box(256, 341, u[:40])
        expected = ramp[:, int(left * 512 / 341) : int((left + w) * 512 / 341)].mean() / 255
        assert abs(tt(src, seed)[0].mean().item() - expected) < 2 / 255


def test_quarter_turn_matrix_is_rot90():
    a = np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)
    img = Image.fromarray(a)
    for angle, k in ((90.0, 1), (-90.0, -1), (180.0, 2)):
        matrix = flip_rotate_matrix(64, angle, False, False)
        got = img.transform((64, 64), Image.Transform.AFFINE, matrix, resample=Image.Resampling.NEAREST, fillcolor=0)
        assert np.array_equal(np.asarray(got), np.rot90(a, k))


def test_jpeg_size_reads_the_frame_header(photos):
    for path in photos["full"] + photos["small"]:
        data = path.read_bytes()
        assert jpeg_size(data) == Image.open(io.BytesIO(data)).size
    progressive = encode(Image.new("RGB", (37, 19), (9, 9, 9)), progressive=True)  # SOF2
    assert jpeg_size(progressive) == (37, 19)
    assert jpeg_size(encode(Image.new("RGB", (5, 5)), "PNG")) is None
    assert jpeg_size(b"\xff\xd8\xff") is None and jpeg_size(b"") is None


def test_decode_array_equals_pillow_and_reduces_large_jpegs(photos):
    for path in photos["small"]:
        data = path.read_bytes()
        got = decode_array(data)
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        assert np.array_equal(got, np.asarray(decode_image(data)))  # libjpeg-turbo both: the same pixels
    data = photos["full"][0].read_bytes()
    for min_side, size in ((256, (360, 270)), (500, (720, 540)), (1500, (2880, 2160))):
        got = decode_array(data, min_side=min_side)
        assert got.shape == (size[1], size[0], 3)  # the DCT scale Pillow's draft picks
        ref = np.asarray(decode_image(data, min_side=min_side), dtype=np.float32)
        assert np.abs(got.astype(np.float32) - ref).mean() < 1.0
    # modes OpenCV reads differently or not at all: grey, RGBA PNG, palette GIF -> RGB, as Pillow's
    rgb = np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for img, fmt in (
        (Image.fromarray(rgb[..., 0]), "PNG"),
        (Image.fromarray(np.dstack([rgb, np.full((20, 30), 128, np.uint8)])), "PNG"),
        (Image.fromarray(rgb).convert("P"), "GIF"),
    ):
        data = encode(img, fmt)
        assert np.array_equal(decode_array(data), np.asarray(img.convert("RGB"))), fmt
    with pytest.raises(OSError):
        decode_array(photos["small"][0].read_bytes()[:2000])  # truncated
    with pytest.raises(OSError):
        decode_array(b"not an image")


@pytest.mark.parametrize("angle", [3.7, 17.3, -44.9, 90.0])
@pytest.mark.parametrize(("hflip", "vflip"), [(False, False), (True, True)])
def test_opencv_affine_reads_the_pixels_pillow_reads(angle, hflip, vflip):
    import cv2

    a = np.random.default_rng(4).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    matrix = flip_rotate_matrix(96, angle, hflip, vflip)
    ref = np.asarray(
        Image.fromarray(a).transform((96, 96), Image.Transform.AFFINE, matrix, Image.Resampling.NEAREST, fillcolor=0)
    )
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    got = cv2.warpAffine(a, opencv_affine(matrix), (96, 96), flags=flags, borderValue=(0, 0, 0))
    # the same source pixel everywhere but where a coordinate falls within OpenCV's 1/1024 fixed point of a
    # pixel edge
    assert (got == ref).all(axis=-1).mean() > 0.995


@pytest.mark.parametrize(("angle", "hflip", "vflip"), [(3.7, False, False), (-44.9, True, False), (30.0, True, True)])
def test_rotation_as_one_float32_channel_is_the_rgb_warp_bit_for_bit(angle, hflip, vflip):
    import cv2

    from bioclip_cli.data.images import _rotate_nearest

    # every byte value in every channel, blue included at 128..255: the RGBX words that read as float32 NaNs
    # (quiet and signalling) and infinities must travel through the warp unchanged
    values = np.arange(256 * 256 * 3, dtype=np.int64)
    a = np.stack([values % 256, (values // 7) % 256, (values // 3) % 256], axis=-1).astype(np.uint8)[: 224 * 224 * 3]
    a = a.reshape(-1, 3)[: 224 * 224].reshape(224, 224, 3)
    assert set(np.unique(a[..., 2])) == set(range(256))
    matrix = opencv_affine(flip_rotate_matrix(224, angle, hflip, vflip))
    expected = cv2.warpAffine(
        a, matrix, (224, 224), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=(0, 0, 0)
    )
    out = np.full_like(a, 7)
    _rotate_nearest(a, matrix, out)
    assert np.array_equal(out, expected)
    assert (out == 0).all(axis=-1).mean() > 0.01  # the black corners are there (not just a copy)


def test_grey_and_cmyk_jpegs_decode_as_pillow_does():
    rgb = np.random.default_rng(6).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    for img in (Image.fromarray(rgb[..., 1]), Image.fromarray(rgb).convert("CMYK")):
        data = encode(img, "JPEG", quality=90)
        got = decode_array(data)
        assert got.shape == (40, 56, 3) and got.dtype == np.uint8, img.mode
        ref = np.asarray(decode_image(data))
        assert np.abs(got.astype(int) - ref).max() <= 1, img.mode  # libjpeg-turbo's grey->RGB; CMYK via Pillow


def test_train_augmentation_is_the_same_from_a_seed_a_generator_and_any_thread(photos):
    from concurrent.futures import ThreadPoolExecutor

    data = photos["small"][0].read_bytes()
    tt = TrainTransform(ImageDataConfig(resize=72, crop=64))
    expected = [tt.augment(data, make_generator(seed)) for seed in range(12)]
    assert all(np.array_equal(tt.augment(data, seed), e) for seed, e in enumerate(expected))
    assert not np.array_equal(expected[0], expected[1])
    with ThreadPoolExecutor(4) as pool:  # each thread reseeds its own generator
        got = list(pool.map(lambda seed: tt.augment(data, seed), list(range(12)) * 4))
    assert all(np.array_equal(g, expected[i % 12]) for i, g in enumerate(got))
    assert np.array_equal(tt.augment(data, np.int64(3)), expected[3])  # numpy seeds too
    clone = pickle.loads(pickle.dumps(tt))  # spawned DataLoader workers get a pickled copy
    assert np.array_equal(clone.augment(data, 5), expected[5])


def test_train_pixels_are_written_into_the_given_slot(photos):
    data = photos["small"][0].read_bytes()
    tt = TrainTransform(ImageDataConfig(resize=72, crop=64))
    batch = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    for seed in range(3):
        assert tt.augment(data, seed, out=batch[seed]) is batch[seed] or np.shares_memory(
            tt.augment(data, seed, out=batch[seed]), batch
        )
        assert np.array_equal(batch[seed], tt.augment(data, seed))
    x = torch.from_numpy(batch).permute(0, 3, 1, 2)  # [B, 3, H, W] view of channels-last memory
    floats = pixels_to_float(x, tt.cfg)
    assert floats.dtype == torch.float32 and floats.is_contiguous() and floats.shape == (3, 3, 64, 64)
    assert torch.equal(floats[1], tt(data, 1))
    assert pixels_to_float(floats, tt.cfg) is floats  # float input: unchanged


def test_a_plan_made_before_the_decode_gives_the_same_pixels(photos):
    """A batch makes its items' plans (draws + geometry from the JPEG header) before any decode: the same pixels
    as augmenting each item alone, for a large JPEG decoded at a reduced scale, a small one and a PNG (whose
    geometry is worked out after decoding); a plan whose size the decode does not match is redone."""
    tt = TrainTransform(ImageDataConfig(resize=72, crop=64))
    big, small = photos["full"][0].read_bytes(), photos["small"][0].read_bytes()
    png = encode(Image.open(io.BytesIO(small)), "PNG")
    for data in (big, small, png):
        expected = [tt.augment(data, seed) for seed in range(5)]
        plans = [tt.plan(data, seed) for seed in range(5)]  # all first, as a batch does
        assert all(np.array_equal(tt.augment(data, 99, plan=p), e) for p, e in zip(plans, expected))
        assert len({e.tobytes() for e in expected}) == 5
    plan = tt.plan(big, 1)
    assert (plan.size, plan.factor) == ((2880, 2160), 8)
    assert plan.geometry[0] == decode_array(big, 72).shape[:2] == (270, 360)
    assert tt.plan(png, 1).geometry is None and tt.plan(png, 1).u == plan.u
    wrong = plan._replace(geometry=tt._geometry(100, 100, plan.u))
    assert np.array_equal(tt.augment(big, plan=wrong), tt.augment(big, 1))
