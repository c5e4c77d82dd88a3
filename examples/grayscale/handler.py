"""grayscale: POST an image (PNG, JPEG, GIF, WebP, ...), get it back in grayscale.

Runs with RAW_BODY=true, so req is bytes. The answer is a PNG, or a JPEG with ?format=jpeg.
"""

import io
import os

from PIL import Image, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = 50_000_000  # refuse decompression bombs

FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "jpg": ("JPEG", "image/jpeg")}


def _error(status, message):
    return message + "\n", status, {"Content-Type": "text/plain; charset=utf-8"}


def handle(req):
    if isinstance(req, str):
        return _error(500, "grayscale needs RAW_BODY=true (the image must arrive as bytes)")
    if not req:
        return _error(400, "POST an image (PNG, JPEG, GIF, ...) to get it back in grayscale")
    query = dict(p.partition("=")[::2] for p in os.environ.get("Http_Query", "").split("&") if p)
    fmt = FORMATS.get(query.get("format", "png").lower())
    if fmt is None:
        return _error(400, "format must be png or jpeg")
    try:
        with Image.open(io.BytesIO(req)) as im:
            gray = im.convert("L")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        return _error(400, "cannot read the body as an image: %s" % e)
    out = io.BytesIO()
    gray.save(out, format=fmt[0])
    return out.getvalue(), 200, {"Content-Type": fmt[1]}
