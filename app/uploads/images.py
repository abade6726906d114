"""What an uploaded file is, by its content, and images made safe to keep: decoded by Pillow,
orientation applied, downscaled, re-encoded, every piece of metadata (EXIF with GPS, XMP, comments)
left behind. Pure functions of bytes: the rules about who and where are in app/uploads/services.py.
"""

import io
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.errors import ValidationFailed

# Pillow decodes only these (and only the one the signature names), however the file is named.
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
PDF = "application/pdf"
# The first bytes of each accepted type (the formats' own signatures).
SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
)
MAX_PIXELS = 60_000_000  # 60 megapixels: more than any phone camera; a decompression bomb is refused
CLAIMS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jfif": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".pdf": "PDF",
    "image/jpeg": "JPEG",
    "image/pjpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "application/pdf": "PDF",
}
NAMES = {"JPEG": "a JPEG image", "PNG": "a PNG image", "WEBP": "a WebP image", "PDF": "a PDF document"}


@dataclass
class Stored:
    """A file ready to keep: its bytes, type and, for an image, its size in pixels."""

    data: bytes
    content_type: str
    extension: str
    width: int | None = None
    height: int | None = None

    @property
    def is_image(self) -> bool:
        return self.width is not None


def sniff(head: bytes) -> str | None:
    """The type the content's signature names: JPEG, PNG, WEBP, PDF, or None."""
    for signature, kind in SIGNATURES:
        if head.startswith(signature):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"%PDF-"):
        return "PDF"
    return None


def claimed(filename: str | None, mimetype: str | None) -> str | None:
    """What the upload says it is, by its part's Content-Type, else its file name's extension."""
    by_type = CLAIMS.get((mimetype or "").lower())
    if by_type:
        return by_type
    name = (filename or "").lower()
    dot = name.rfind(".")
    return CLAIMS.get(name[dot:]) if dot >= 0 else None


def identify(stream: BinaryIO, filename, mimetype, accepted: tuple) -> str:
    """The accepted type the content is, or a 422 that says what is wrong with it."""
    head = stream.read(16)
    stream.seek(0)
    found = sniff(head)
    said = claimed(filename, mimetype)
    if found in accepted:
        return found
    allowed = ", ".join(NAMES[a] for a in accepted)
    if said is not None and said != found:
        problem = f"claims to be {NAMES[said]} ({mimetype or filename}) but its content is not one"
        if found is not None:
            problem += f" (it is {NAMES[found]})"
        raise ValidationFailed({"file": f"{problem}; send {allowed}"})
    what = f"is {NAMES[found]}" if found else "is not a file type kept here"
    raise ValidationFailed({"file": f"{what}; send {allowed}"})


def _damaged(kind):
    return ValidationFailed({"file": f"could not be read as {NAMES[kind]}: it is damaged or incomplete"})


def clean_image(stream: BinaryIO, kind: str, max_side: int, keep_alpha: bool = False) -> Stored:
    """Decode, apply the EXIF orientation, downscale to at most max_side pixels a side, and re-encode
    as JPEG (or PNG when keep_alpha and the image has transparency: a logo), with no metadata at all."""
    try:
        img = Image.open(stream, formats=[kind])
        if img.width * img.height > MAX_PIXELS:
            raise ValidationFailed(
                {"file": f"has {img.width}x{img.height} pixels; at most {MAX_PIXELS // 1_000_000} megapixels"}
            )
        if kind == "JPEG":
            # Decode at the smallest scale (1/2, 1/4, 1/8) still at least max_side: a 12-megapixel
            # photo is decoded at a quarter of the work, and downscaled from there.
            img.draft("RGB", (max_side, max_side))
        img.load()
        img = ImageOps.exif_transpose(img)
    except ValidationFailed:
        raise
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        raise _damaged(kind) from None
    alpha = keep_alpha and (img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info)
    if alpha:
        img = img.convert("RGBA")
    elif img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, "white")
        img.paste(rgba, mask=rgba.getchannel("A"))
    elif img.mode != "RGB":
        img = img.convert("RGB")
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    img.info = {}  # EXIF (GPS, camera, times), XMP, comments, ICC: none is carried into the new file
    out = io.BytesIO()
    if alpha:
        img.save(out, "PNG", optimize=True)
        return Stored(out.getvalue(), "image/png", "png", img.width, img.height)
    img.save(out, "JPEG", quality=85, optimize=True, progressive=True)
    return Stored(out.getvalue(), "image/jpeg", "jpg", img.width, img.height)


def check_pdf(stream: BinaryIO, size: int) -> Stored:
    """A PDF is kept as sent once its structure looks whole: the header, and an end-of-file marker
    near the end (a truncated upload has none)."""
    data = stream.read()
    if not data.startswith(b"%PDF-") or b"%%EOF" not in data[-2048:]:
        raise _damaged("PDF")
    return Stored(data, PDF, "pdf")


def thumbnail(data: bytes, side: int) -> bytes:
    """A small WebP of a kept image (already clean: no metadata to carry)."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (side, side))
        small = img.copy()
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    small.info = {}
    out = io.BytesIO()
    small.save(out, "WEBP", quality=80, method=4)
    return out.getvalue()
