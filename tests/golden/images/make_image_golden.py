#!/usr/bin/env python3
"""Expected CLIP crops for tests/test_image.c, computed by PIL the way transformers'
CLIPImageProcessor does it (convert RGB, shortest edge -> size with PIL BICUBIC, center crop).

Needs only python3 + PIL + numpy (Debian: python3-pil python3-numpy; with pyenv in the way run
/usr/bin/python3). Run from anywhere:

    /usr/bin/python3 tests/golden/images/make_image_golden.py [--shared ../shared]

It writes, next to itself: the synthetic sources (*.png, *.jpg), expected/<name>.png (lossless
uint8 crops) and golden.json (name -> source, image_size, intermediate resized size, expected).
The Flickr8k sources stay in the shared folder; their entries name a path relative to it and
carry only a hash of the expected crop (no derived image data is committed).
"""
import argparse
import json
import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))

# Real photos: different aspect ratios, two downsampled and three upsampled (short side < 224).
FLICKR = [
    ("flickr_500x375", "1798215547_ef7ad95be8.jpg"),  # landscape, downsample
    ("flickr_333x500", "1785138090_76a56aaabc.jpg"),  # portrait, downsample
    ("flickr_200x150", "1269470943_ba7fc49b4d.jpg"),  # both sides < 224: upsample
    ("flickr_80x200", "1295671216_cde1b9c9d1.jpg"),  # 80 -> 224: strong upsample, tall crop
    ("flickr_200x66", "1240297429_c36ae0c58f.jpg"),  # 66 -> 224, width 678: wide crop
]
# (source name, image_size) crops beyond the 224 crop of every source.
EXTRA_SIZES = [
    ("flickr_500x375", 32),  # tiny-model size: strong antialiased downsample
    ("synth_palette", 32),
    ("synth_gray", 37),  # short side already 37: PIL returns a copy, only the crop acts
    ("synth_gray", 50),
    ("synth_rgb", 32),
    ("synth_jpeg_gray", 32),
    ("synth_jpeg_cmyk", 32),
]


def clip_size(w, h, size):
    # transformers get_resize_output_image_size(default_to_square=False), literally.
    short, long_ = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long_ / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def clip_crop(path, size):
    img = Image.open(path).convert("RGB")
    w, h = clip_size(img.width, img.height, size)
    img = img.resize((w, h), resample=Image.BICUBIC)
    arr = np.array(img)
    top, left = (h - size) // 2, (w - size) // 2  # transformers center_crop
    assert top >= 0 and left >= 0, "shortest-edge resize never needs padding"
    return (w, h), arr[top:top + size, left:left + size]


def pattern(w, h):
    """Smooth ramps, a hard diagonal edge and a checker patch: exercises ringing and clipping."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * 255) // (w - 1)
    g = (y * 255) // (h - 1)
    b = np.where(x * h > y * w, 230, 20)
    chk = ((x // 3 + y // 3) % 2 == 0) & (x > w // 2) & (y > h // 2)
    r = np.where(chk, 255, r)
    g = np.where(chk, 0, g)
    return np.stack([r, g, b], -1).astype(np.uint8)


def make_synthetic():
    w, h = 50, 37
    rgb = pattern(w, h)
    out = {}
    # Palette: 16 colours, indices from the pattern; P mode must map through the palette.
    pal_img = Image.fromarray(rgb).quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=0)
    out["synth_palette"] = ("synth_palette.png", pal_img)
    # RGBA: alpha varies, and PIL's convert("RGB") must drop it, not composite it.
    y, x = np.mgrid[0:h, 0:w]
    alpha = ((x + y) * 255 // (w + h - 2)).astype(np.uint8)
    out["synth_rgba"] = ("synth_rgba.png", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))
    out["synth_gray"] = ("synth_gray.png", Image.fromarray(rgb).convert("L"))
    out["synth_rgb"] = ("synth_rgb.png", Image.fromarray(rgb))
    for name, (fname, img) in out.items():
        img.save(os.path.join(HERE, fname), optimize=True)
    # JPEGs: RGB 4:2:0 (also the source of the truncated-file tests), grayscale, Adobe CMYK.
    jpgs = {
        "synth_jpeg_rgb": ("synth_jpeg_rgb.jpg", Image.fromarray(rgb), {"quality": 85}),
        "synth_jpeg_gray": ("synth_jpeg_gray.jpg", Image.fromarray(rgb).convert("L"), {}),
        "synth_jpeg_cmyk": ("synth_jpeg_cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), {}),
    }
    for name, (fname, img, kw) in jpgs.items():
        img.save(os.path.join(HERE, fname), **kw)
        out[name] = (fname, img)
    return {name: fname for name, (fname, _) in out.items()}


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "..", "..", "shared"),
                    help="the shared folder holding data/flickr8k_1k (default: ../shared)")
    args = ap.parse_args()
    os.makedirs(os.path.join(HERE, "expected"), exist_ok=True)

    sources = {}  # name -> (root, relative path)
    for name, fname in make_synthetic().items():
        sources[name] = ("repo", os.path.join("tests", "golden", "images", fname))
    for name, fname in FLICKR:
        sources[name] = ("shared", os.path.join("data", "flickr8k_1k", "images", fname))

    roots = {"repo": os.path.join(HERE, "..", "..", ".."), "shared": args.shared}
    jobs = [(name, 224) for name in sources] + EXTRA_SIZES
    entries = []
    for name, size in jobs:
        root, rel = sources[name]
        src = os.path.join(roots[root], rel)
        resized, crop = clip_crop(src, size)
        with Image.open(src) as im:
            orig = [im.width, im.height]
        entry = {"name": name, "root": root, "source": rel, "size": orig,
                 "image_size": size, "resized": list(resized)}
        if root == "shared":
            # Crops of the shared Flickr8k photos are derived data and stay out of the repo:
            # only a 64-bit FNV-1a hash of their RGB bytes is kept.
            entry["fnv1a64"] = fnv1a64(np.ascontiguousarray(crop, dtype=np.uint8).tobytes())
        else:
            exp = f"{name}.png" if size == 224 else f"{name}_s{size}.png"
            Image.fromarray(crop, "RGB").save(os.path.join(HERE, "expected", exp), optimize=True)
            entry["expected"] = f"expected/{exp}"
        entries.append(entry)
    doc = {"generator": "tests/golden/images/make_image_golden.py",
           "pil_version": Image.__version__, "numpy_version": np.__version__,
           "entries": entries}
    with open(os.path.join(HERE, "golden.json"), "w") as f:  # one entry per line, diffable
        head = json.dumps({k: v for k, v in doc.items() if k != "entries"})[:-1]
        rows = ",\n  ".join(json.dumps(e) for e in entries)
        f.write(f'{head}, "entries": [\n  {rows}\n]}}\n')
    print(f"wrote {len(entries)} expected crops")


if __name__ == "__main__":
    main()
