"""Image decoding and the train/eval transforms (docs/method.md, Training recipes), with Pillow, OpenCV and
torch (no torchvision).

- :func:`decode_image`: JPEG/PNG bytes -> RGB PIL image. Large JPEGs are decoded at a reduced DCT scale
  (Pillow draft mode) when the target is at least 2x smaller; any mode (L, LA, P, RGBA, CMYK, I;16...)
  becomes RGB. :func:`decode_array` is the same to a uint8 array with simplejpeg (libjpeg-turbo, the same
  pixels, less overhead; OpenCV, then Pillow, for what it does not decode).
- :class:`EvalTransform` (compat, bit-exact with the published evaluation): float tensor in [0, 1]
  first, then resize of the shorter side with torch's antialiased bilinear interpolation, then the
  centre crop; optional mean/std.
- :class:`TrainTransform`: Resize -> RandomResizedCrop -> horizontal flip -> vertical flip -> rotation
  (nearest, black fill) -> optional colour jitter, on 8-bit pixels in OpenCV's C++ code in two resamples
  (the class says how). All randomness comes from one draw of a seeded torch generator, so an item's
  augmentation depends only on its seed. It yields uint8 pixels; :func:`pixels_to_float` makes the model's
  float input from them, on the accelerator.
"""

from __future__ import annotations

import io
import math
import threading
from typing import NamedTuple

import cv2
import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance

from bioclip_cli.config.schema import ImageDataConfig

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")

# OpenCV runs single-threaded in this process: one image is too small work for its thread pool (DataLoader
# workers are the parallelism), and a pool started before a DataLoader forks its workers deadlocks them.
cv2.setNumThreads(1)


MAX_IMAGE_PIXELS = 89_478_485  # Pillow's decompression-bomb threshold (a 2.7 GB RGB image at most 0.27 GB)


def declared_size_problem(size: tuple[int, int] | None) -> str | None:
    """Why an image whose header declares `size` (width, height) must not be decoded, or None."""
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        return (
            f"the image declares {size[0]}x{size[1]} pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
            "(a decompression bomb, or not a specimen photograph)"
        )
    return None


def decode_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode image bytes to an RGB PIL image whose shorter side stays >= `min_side` (when given).

    With `min_side`, a JPEG at least twice as large is decoded at 1/2, 1/4 or 1/8 scale (Pillow draft),
    which is several times faster; the caller still resizes to the exact target afterwards.
    """
    problem = declared_size_problem(jpeg_size(data))
    if problem:  # refused before Pillow even opens it
        raise ValueError(problem)
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # another format that declares too many pixels
        raise ValueError("the image declares more pixels than the decompression-bomb limit") from None
    problem = declared_size_problem(img.size)
    if problem:
        raise ValueError(problem)
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


def _draft_side(cfg: ImageDataConfig) -> int | None:
    """The shorter side a reduced-scale (draft) decode must keep: the Resize size, or None with draft off."""
    return cfg.resize if cfg.draft else None


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
            image = decode_image(bytes(image), min_side=_draft_side(cfg))
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
# OpenCV decode flags (for what simplejpeg does not decode): RGB channel order, EXIF orientation ignored (as
# Pillow), and the DCT reductions
_CV_RGB = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
_CV_REDUCED = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
_NEAREST_INVERSE = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
_SHRINK_AREA = 1.5  # a crop box this many times larger than the output is shrunk with area averaging


class AugmentPlan(NamedTuple):
    """One item's :meth:`TrainTransform.plan`: its draws `u`, the JPEG's (width, height) from its header and DCT
    reduction (None and 1 when unknown) and the geometry for the decoded size (None: worked out after decoding)."""

    u: list[float]
    size: tuple[int, int] | None
    factor: int
    geometry: tuple | None


def make_generator(seed: int | torch.Generator | None, into: torch.Generator | None = None) -> torch.Generator | None:
    """A generator seeded with the integer `seed` (`into`, reseeded, when given); a generator or None as is."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return (into if into is not None else torch.Generator()).manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's headers (libjpeg-turbo's header reader, via simplejpeg), or None when `data`
    is not a JPEG it can read. Much cheaper than decoding."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (width, height) if width and height else None


def _reduction(size: tuple[int, int], min_side: int | None) -> int:
    """The DCT reduction (1, 2, 4 or 8) for an image of `size` whose shorter side must stay >= `min_side`."""
    if min_side:
        for factor in (8, 4, 2):
            if -(-min(size) // factor) >= min_side:
                return factor
    return 1


def decode_array(data: bytes, min_side: int | None = None) -> np.ndarray:
    """Decode image bytes to a uint8 RGB array [H, W, 3]: JPEGs with simplejpeg (libjpeg-turbo: the same pixels
    as Pillow's decode, less overhead per image). With `min_side`, a JPEG at least twice as large is decoded at
    1/2, 1/4 or 1/8 scale, its shorter side staying >= `min_side` (as :func:`decode_image`'s draft). EXIF
    orientation is ignored, as Pillow does. What simplejpeg does not decode (other formats, damaged files)
    goes to OpenCV, then Pillow (:func:`decode_image`), which raises on unreadable bytes."""
    size = jpeg_size(data)
    return _decode(data, size, _reduction(size, min_side) if size else 1, min_side)


def _decode(data: bytes, size: tuple[int, int] | None, factor: int, min_side: int | None) -> np.ndarray:
    """:func:`decode_array` given the JPEG's (width, height) from its header (None: not a JPEG simplejpeg reads)
    and the DCT reduction. An image declaring more than MAX_IMAGE_PIXELS is refused before any pixel memory
    is allocated (ValueError)."""
    problem = declared_size_problem(size)
    if problem:
        raise ValueError(problem)
    if size:
        width, height = size
        try:
            return simplejpeg.decode_jpeg(data, min_height=-(-height // factor), min_width=-(-width // factor))
        except ValueError:  # not decodable to RGB, or a recoverable error: the fallbacks decide
            pass
    flags = _CV_RGB | _CV_REDUCED[factor] if factor > 1 else _CV_RGB
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags) if data else None
    if arr is None or arr.ndim != 3 or arr.shape[2] != 3:
        arr = np.asarray(decode_image(data, min_side))
    return arr


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


def opencv_affine(matrix: list[float]) -> np.ndarray:
    """A Pillow AFFINE matrix (pixel centres at +0.5, nearest = floor) as OpenCV's inverse map (centres at
    integers, nearest = round): the same source pixel for every output pixel, up to OpenCV's 1/1024 fixed point."""
    a, b, c, d, e, f = matrix
    return np.array([[a, b, c + (a + b - 1) / 2], [d, e, f + (d + e - 1) / 2]], dtype=np.float64)


def pixels_to_float(images: torch.Tensor, cfg: ImageDataConfig) -> torch.Tensor:
    """uint8 pixels [..., 3, H, W] (any memory layout, any device) -> contiguous float32 ``x / 255``, then
    ``(x - mean) / std`` when configured: bit-identical to the float pipeline of the transforms. Float input is
    returned unchanged (evaluation batches are float already). Training batches stay uint8 until they are on
    the accelerator: a quarter of the bytes through worker shared memory and host-to-device copies."""
    if images.dtype != torch.uint8:
        return images
    x = images.to(torch.float32, memory_format=torch.contiguous_format).div_(255)
    if cfg.mean is not None:
        mean = torch.tensor(cfg.mean, dtype=torch.float32, device=x.device).view(3, 1, 1)
        std = torch.tensor(cfg.std, dtype=torch.float32, device=x.device).view(3, 1, 1)
        x.sub_(mean).div_(std)
    return x


def _rotate_nearest(image: np.ndarray, matrix: np.ndarray, out: np.ndarray) -> None:
    """Nearest-neighbour affine resample (OpenCV inverse map) of an RGB uint8 image into `out`, black outside.

    Nearest-neighbour copies whole pixels, so it runs on each RGBX pixel viewed as one float32: OpenCV's
    one-channel warp is about twice as fast as its three-channel one, which pays for the two channel
    conversions (the same pixels as warping the RGB image, bit for bit)."""
    height, width = out.shape[:2]
    rgbx = cv2.cvtColor(image, cv2.COLOR_RGB2RGBA)
    warped = cv2.warpAffine(
        rgbx.view(np.float32)[..., 0], matrix, (width, height), flags=_NEAREST_INVERSE, borderValue=0
    )
    cv2.cvtColor(warped.view(np.uint8).reshape(height, width, 4), cv2.COLOR_RGBA2RGB, dst=out)


class TrainTransform:
    """The training augmentation (docs/method.md, Training recipes): bytes or PIL image (+ seed or generator)
    -> [3, crop, crop].

    :meth:`augment` gives the uint8 pixels [crop, crop, 3] (into a given slot of a batch, when asked): what the
    training dataset stores; ``transform(image, seed)`` the float32 [3, crop, crop] of :func:`pixels_to_float`.

    Resize(resize) and RandomResizedCrop are one resample of the crop box mapped to source pixels (bilinear;
    area averaging when the box is >= 1.5x the output), then the flips and the rotation one nearest-neighbour
    affine resample with black fill (the same pixels as Pillow's ``transpose`` + ``rotate(angle, NEAREST)``),
    all in OpenCV's 8-bit SIMD code; JPEGs are decoded with OpenCV, at a reduced DCT scale when large. All
    randomness comes from one draw of a seeded torch generator: an item's augmentation depends only on its seed.
    """

    def __init__(self, cfg: ImageDataConfig | None = None):
        self.cfg = cfg or ImageDataConfig()
        self._log_ratio = (math.log(self.cfg.ratio[0]), math.log(self.cfg.ratio[1]))
        self._local = threading.local()  # one reseeded generator per thread (cheaper than a new one per item)

    def _uniforms(self, generator: torch.Generator | int | None) -> list[float]:
        """The item's uniforms: the first draws of `generator`, or of a generator seeded with the int `generator`
        (the same numbers as ``make_generator(seed)``)."""
        local = self._local
        if not hasattr(local, "generator"):
            local.generator = torch.Generator()
        return torch.rand(_N_DRAWS, generator=make_generator(generator, local.generator), dtype=torch.float64).tolist()

    def __getstate__(self) -> dict:  # pickles (spawned DataLoader workers) without the per-thread generators
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _local=threading.local())

    def __call__(self, image: bytes | Image.Image, generator: torch.Generator | int | None = None) -> torch.Tensor:
        """float32 [3, crop, crop]: pixels / 255, then ``(x - mean) / std`` when configured."""
        return pixels_to_float(torch.from_numpy(self.augment(image, generator)).permute(2, 0, 1), self.cfg)

    def pixels(self, image: bytes | Image.Image, generator: torch.Generator | int | None = None) -> np.ndarray:
        """The augmented image as uint8 [3, crop, crop] (float pixels = this / 255): a writable view of
        channels-last memory (``np.ascontiguousarray`` makes it planar)."""
        return self.augment(image, generator).transpose(2, 0, 1)

    def plan(self, image: bytes, generator: torch.Generator | int | None = None) -> AugmentPlan:
        """The item's random draws and, for a JPEG, the geometry they give (from its header): the Python half
        of :meth:`augment`, which a batch makes for all its items first so that this arithmetic runs in one
        stretch, with warm caches, instead of after each decode (5-7% faster per batch)."""
        u = self._uniforms(generator)
        size = jpeg_size(image)
        if not size:
            return AugmentPlan(u, None, 1, None)
        factor = _reduction(size, _draft_side(self.cfg))
        width, height = -(-size[0] // factor), -(-size[1] // factor)
        return AugmentPlan(u, size, factor, self._geometry(height, width, u))

    def augment(
        self,
        image: bytes | Image.Image,
        generator: torch.Generator | int | None = None,
        out: np.ndarray | None = None,
        plan: AugmentPlan | None = None,
    ) -> np.ndarray:
        """The augmented image as uint8 [crop, crop, 3] (H, W, RGB), written into `out` (a C-contiguous uint8
        array of that shape, e.g. a slot of a batch) when given. Returns the array written. `plan`: the
        image's :meth:`plan` made beforehand (then `generator` is not used)."""
        cfg = self.cfg
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            plan = plan or self.plan(data, generator)
            src = _decode(data, plan.size, plan.factor, _draft_side(cfg))
        else:
            src = np.asarray(to_rgb(image) if image.mode != "RGB" else image)
            plan = plan or AugmentPlan(self._uniforms(generator), None, 1, None)
        geometry = plan.geometry
        if geometry is None or geometry[0] != src.shape[:2]:  # not known from a header, or decoded otherwise
            geometry = self._geometry(*src.shape[:2], plan.u)
        _, (y0, y1, x0, x1), interpolation, matrix, flip = geometry
        size = cfg.crop
        if out is None:
            out = np.empty((size, size, 3), dtype=np.uint8)
        box = src[y0:y1, x0:x1]
        if matrix is None and flip is None:
            cv2.resize(box, (size, size), dst=out, interpolation=interpolation)
        else:
            resized = cv2.resize(box, (size, size), interpolation=interpolation)
            if matrix is not None:
                _rotate_nearest(resized, matrix, out)
            else:
                cv2.flip(resized, flip, dst=out)
        if cfg.color_jitter > 0:
            out[...] = np.asarray(self._jitter(Image.fromarray(out), plan.u[43:]))
        return out

    def _geometry(self, h: int, w: int, u: list[float]) -> tuple:
        """What the draws `u` do to an h x w image: ``((h, w), (y0, y1, x0, x1), interpolation, matrix, flip)``:
        the crop box of the Resize(resize)d image in source pixels (one resample does both steps), the
        resample's interpolation, the flips + rotation as OpenCV's inverse map (None without a rotation) and
        as a ``cv2.flip`` code (flips only; None without)."""
        cfg = self.cfg
        rh, rw = resized_size(h, w, cfg.resize)
        top, left, ch, cw = self.crop_box(rh, rw, u[:40])
        sx, sy = w / rw, h / rh
        y0, x0 = min(h - 1, round(top * sy)), min(w - 1, round(left * sx))
        y1, x1 = max(y0 + 1, min(h, round((top + ch) * sy))), max(x0 + 1, min(w, round((left + cw) * sx)))
        shrink = max(y1 - y0, x1 - x0) / cfg.crop
        interpolation = cv2.INTER_AREA if shrink >= _SHRINK_AREA else cv2.INTER_LINEAR
        hflip = cfg.hflip and u[40] < 0.5
        vflip = cfg.vflip and u[41] < 0.5
        angle = (2 * u[42] - 1) * cfg.rotation if cfg.rotation > 0 else 0.0
        matrix = opencv_affine(flip_rotate_matrix(cfg.crop, angle, hflip, vflip)) if angle else None
        flip = (-1 if hflip and vflip else (1 if hflip else 0)) if (hflip or vflip) and not angle else None
        return (h, w), (y0, y1, x0, x1), interpolation, matrix, flip

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
