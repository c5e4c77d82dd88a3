"""protected: the grayscale converter behind an API key (the course's bw-api-protected).

fwatchdog checks the key (api_key_secret=bw-api-key in fn.env) before this code runs, so the
handler only converts: POST an image, get a grayscale PNG back. GET answers a short text.
"""

import io

from PIL import Image, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = 50_000_000


def handle(event, context):
    if event.method == "GET":
        return {"statusCode": 200, "body": "authorized: POST an image to convert it to grayscale\n"}
    if not isinstance(event.body, bytes):
        return {"statusCode": 500, "body": "protected needs RAW_BODY=true\n"}
    try:
        with Image.open(io.BytesIO(event.body)) as im:
            gray = im.convert("L")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        return {
            "statusCode": 400,
            "body": "cannot read the body as an image: %s\n" % e,
            "headers": {"Content-Type": "text/plain; charset=utf-8"},
        }
    out = io.BytesIO()
    gray.save(out, format="PNG")
    return {"statusCode": 200, "body": out.getvalue(), "headers": {"Content-Type": "image/png"}}
