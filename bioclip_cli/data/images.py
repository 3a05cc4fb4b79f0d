"""Image decoding and the train/eval transforms of SPEC §3, with Pillow and torch only (no torchvision).

- :func:`decode_image`: JPEG/PNG bytes -> RGB PIL image. Large JPEGs are decoded at a reduced DCT scale
  (Pillow draft mode) when the target is at least 2x smaller; any mode (L, LA, P, RGBA, CMYK, I;16...)
  becomes RGB.
- :class:`EvalTransform` (compat, bit-exact with the published evaluation): float tensor in [0, 1]
  first, then resize of the shorter side with torch's antialiased bilinear interpolation, then the
  centre crop; optional mean/std.
- :class:`TrainTransform`: Resize -> RandomResizedCrop -> horizontal flip -> vertical flip -> rotation
  (nearest, black fill) -> optional colour jitter. The geometric steps run on 8-bit pixels in Pillow's C
  code in two resamples: Resize and the crop in one antialiased bilinear resize of the crop box, then
  the flips and the rotation in one nearest-neighbour affine. All randomness comes from one draw of a
  seeded torch generator, so an item's augmentation depends only on its seed. :meth:`TrainTransform.into`
  writes the float result straight into a slot of a batch.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance

from bioclip_cli.config.schema import ImageDataConfig

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def decode_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode image bytes to an RGB PIL image whose shorter side stays >= `min_side` (when given).

    With `min_side`, a JPEG at least twice as large is decoded at 1/2, 1/4 or 1/8 scale (Pillow draft),
    which is several times faster; the caller still resizes to the exact target afterwards.
    """
    img = Image.open(io.BytesIO(data))
    if min_side and img.format == "JPEG":
        w, h = img.size
        if min(w, h) >= 2 * min_side:
            scale = min_side / min(w, h)
            img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. 16-bit and 32-bit grey images are scaled to 8 bits (not clipped)."""
    if img.mode == "RGB":
        img.load()
        return img
    if img.mode in _HIGH_BIT_MODES:
        arr = np.asarray(img)
        if img.mode == "F":
            grey = np.clip(arr, 0, 255).astype(np.uint8)
        else:
            arr = arr.astype(np.int64)
            grey = (arr >> 8).astype(np.uint8) if arr.max(initial=0) > 255 else arr.astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return img.convert("RGB")


def to_float_array(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> float32 array [3, H, W] in [0, 1]: float32(x) / float32(255), as torchvision's ToTensor.

    Done in numpy: torch's multi-threaded element-wise kernels stall on small images when the CPU is
    shared (data loading in the main process), numpy's do not.
    """
    chw = np.stack([np.asarray(band) for band in img.split()]).astype(np.float32)
    chw /= np.float32(255)
    return chw


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor [3, H, W] in [0, 1]."""
    return torch.from_numpy(to_float_array(img))


def resized_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(H, W) after resizing the shorter side to `shorter` (torchvision's rule: the longer side is truncated)."""
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter


class _Normalize:
    def __init__(self, cfg: ImageDataConfig):
        self.mean = None if cfg.mean is None else np.asarray(cfg.mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = None if cfg.std is None else np.asarray(cfg.std, dtype=np.float32).reshape(3, 1, 1)

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """float32 [3, H, W] array -> tensor, normalised when mean/std are configured."""
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


class EvalTransform:
    """The evaluation transform (compat): bytes or PIL image -> float tensor [3, crop, crop]."""

    def __init__(self, cfg: ImageDataConfig | None = None):
        self.cfg = cfg or ImageDataConfig()
        self._normalize = _Normalize(self.cfg)

    def __call__(self, image: bytes | Image.Image) -> torch.Tensor:
        cfg = self.cfg
        if isinstance(image, (bytes, bytearray, memoryview)):
            image = decode_image(bytes(image), min_side=cfg.resize if cfg.draft else None)
        elif image.mode != "RGB":
            image = to_rgb(image)
        x = to_float_array(image)
        h, w = x.shape[1:]
        new_h, new_w = resized_size(h, w, cfg.resize)
        if (new_h, new_w) != (h, w):
            t = torch.from_numpy(x)[None]
            x = F.interpolate(t, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)[0].numpy()
        top = int(round((new_h - cfg.crop) / 2.0))
        left = int(round((new_w - cfg.crop) / 2.0))
        return self._normalize(x[:, top : top + cfg.crop, left : left + cfg.crop])


# how many uniforms one call draws: RandomResizedCrop (10 tries x 4), flips (2), angle (1), jitter (4 + order 4)
_N_DRAWS = 40 + 2 + 1 + 8


def make_generator(seed: int | torch.Generator | None) -> torch.Generator | None:
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)


def flip_rotate_matrix(size: int, degrees: float, hflip: bool, vflip: bool) -> list[float]:
    """Pillow AFFINE coefficients (output -> input) of: flips, then a counter-clockwise rotation by `degrees`
    about the centre of a `size` x `size` image (Pillow's own ``rotate`` matrix; torchvision's
    RandomRotation turns the same way)."""
    a = -math.radians(degrees)
    m = [round(math.cos(a), 15), round(math.sin(a), 15), 0.0, round(-math.sin(a), 15), round(math.cos(a), 15), 0.0]
    c = size / 2
    m[2] = m[0] * -c + m[1] * -c + c
    m[5] = m[3] * -c + m[4] * -c + c
    if hflip:  # the rotation reads the flipped image: x -> size - x
        m[0], m[1], m[2] = -m[0], -m[1], size - m[2]
    if vflip:
        m[3], m[4], m[5] = -m[3], -m[4], size - m[5]
    return m


class TrainTransform:
    """The training augmentation of SPEC §3: bytes or PIL image (+ seed or generator) -> [3, crop, crop].

    ``transform(image, seed)`` gives float32 pixels (normalised when configured); :meth:`into` writes them
    into a given array (a slot of a batch: no per-item tensor); :meth:`pixels` is the same augmentation in
    uint8, before the float conversion.
    """

    def __init__(self, cfg: ImageDataConfig | None = None):
        self.cfg = cfg or ImageDataConfig()
        self._normalize = _Normalize(self.cfg)
        self._log_ratio = (math.log(self.cfg.ratio[0]), math.log(self.cfg.ratio[1]))

    def __call__(self, image: bytes | Image.Image, generator: torch.Generator | int | None = None) -> torch.Tensor:
        size = self.cfg.crop
        return torch.from_numpy(self.into(np.empty((3, size, size), dtype=np.float32), image, generator))

    def into(
        self, out: np.ndarray, image: bytes | Image.Image, generator: torch.Generator | int | None = None
    ) -> np.ndarray:
        """Write the augmented image into `out`, a float32 array [3, crop, crop]: pixels / 255, then
        ``(x - mean) / std`` when configured (the same float32 operations as the eval transform). Returns `out`."""
        out[...] = self._augment(image, generator, np.asarray).transpose(2, 0, 1)  # uint8 -> float32: exact
        np.divide(out, np.float32(255), out=out)
        norm = self._normalize
        if norm.mean is not None:
            np.subtract(out, norm.mean, out=out)
            np.divide(out, norm.std, out=out)
        return out

    def pixels(self, image: bytes | Image.Image, generator: torch.Generator | int | None = None) -> np.ndarray:
        """The augmented image as uint8 [3, crop, crop] (float pixels = this / 255): a writable view of
        channels-last memory (``np.ascontiguousarray`` makes it planar)."""
        return self.augment(image, generator).transpose(2, 0, 1)

    def augment(self, image: bytes | Image.Image, generator: torch.Generator | int | None = None) -> np.ndarray:
        """The augmented image as a writable uint8 array [crop, crop, 3] (H, W, RGB)."""
        return self._augment(image, generator, np.array)

    def _augment(self, image, generator, to_array) -> np.ndarray:
        cfg = self.cfg
        if isinstance(image, (bytes, bytearray, memoryview)):
            image = decode_image(bytes(image), min_side=cfg.resize if cfg.draft else None)
        elif image.mode != "RGB":
            image = to_rgb(image)
        u = torch.rand(_N_DRAWS, generator=make_generator(generator), dtype=torch.float64).tolist()
        w, h = image.size
        rh, rw = resized_size(h, w, cfg.resize)
        top, left, ch, cw = self.crop_box(rh, rw, u[:40])
        # Resize(resize) and RandomResizedCrop in one antialiased bilinear resample of the (drafted) decode:
        # the crop box is mapped to source pixels exactly (no rounding), in Pillow's 8-bit C code
        sx, sy = w / rw, h / rh
        box = (left * sx, top * sy, min(w, (left + cw) * sx), min(h, (top + ch) * sy))
        size = (cfg.crop, cfg.crop)
        out = image.resize(size, Image.Resampling.BILINEAR, box=box, reducing_gap=None)
        hflip = cfg.hflip and u[40] < 0.5
        vflip = cfg.vflip and u[41] < 0.5
        angle = (2 * u[42] - 1) * cfg.rotation if cfg.rotation > 0 else 0.0
        if angle:
            # flips and rotation as one nearest-neighbour affine resample: the same pixels as Pillow's
            # transpose(...) then rotate(angle, NEAREST), black fill
            matrix = flip_rotate_matrix(cfg.crop, angle, hflip, vflip)
            out = out.transform(size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.NEAREST, fillcolor=0)
        elif hflip and vflip:
            out = out.transpose(Image.Transpose.ROTATE_180)
        elif hflip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif vflip:
            out = out.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        if cfg.color_jitter > 0:
            out = self._jitter(out, u[43:])
        return to_array(out)  # np.asarray: read-only, one copy less

    def crop_box(self, height: int, width: int, u: list[float]) -> tuple[int, int, int, int]:
        """RandomResizedCrop's (top, left, h, w) from 40 uniforms: 10 tries, then the central fallback."""
        area = height * width
        lo_s, hi_s = self.cfg.scale
        for t in range(10):
            target = area * (lo_s + (hi_s - lo_s) * u[4 * t])
            aspect = math.exp(self._log_ratio[0] + (self._log_ratio[1] - self._log_ratio[0]) * u[4 * t + 1])
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= width and 0 < ch <= height:
                top = min(int(u[4 * t + 2] * (height - ch + 1)), height - ch)
                left = min(int(u[4 * t + 3] * (width - cw + 1)), width - cw)
                return top, left, ch, cw
        in_ratio = width / height
        lo_r, hi_r = self.cfg.ratio
        if in_ratio < lo_r:
            cw, ch = width, int(round(width / lo_r))
        elif in_ratio > hi_r:
            ch, cw = height, int(round(height * hi_r))
        else:
            cw, ch = width, height
        return (height - ch) // 2, (width - cw) // 2, ch, cw

    def _jitter(self, img: Image.Image, u: list[float]) -> Image.Image:
        """ColorJitter(s, s, s, min(s, 0.5)) in a random order: brightness, contrast, saturation, hue."""
        s = self.cfg.color_jitter
        factors = [1 - s + 2 * s * u[0], 1 - s + 2 * s * u[1], 1 - s + 2 * s * u[2]]
        hue = (2 * u[3] - 1) * min(s, 0.5)
        for op in sorted(range(4), key=lambda i: u[4 + i]):
            if op == 0:
                img = ImageEnhance.Brightness(img).enhance(factors[0])
            elif op == 1:
                img = ImageEnhance.Contrast(img).enhance(factors[1])
            elif op == 2:
                img = ImageEnhance.Color(img).enhance(factors[2])
            elif hue != 0:
                hsv = np.array(img.convert("HSV"))
                hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(hue * 255))) % 256
                img = Image.fromarray(hsv, mode="HSV").convert("RGB")
        return img
