"""Upload forms (documented here; the services read the multipart form themselves) and answers."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.core.schemas import Out, rule
from app.uploads.models import DOCUMENT_KINDS, THUMBNAIL_STATUSES

IMAGE_RULE = "a JPEG, PNG or WebP image by its content (not its name), within the size limit"
DOCUMENT_RULE = "a PDF document or a JPEG, PNG or WebP image by its content, within UPLOAD_MAX_BYTES"


class PhotoForm(BaseModel):
    """A photo or logo: the multipart/form-data field `file`."""

    file: bytes = Field(
        description="The image: JPEG, PNG or WebP. Kept re-encoded (JPEG; a logo with transparency as "
        "PNG), at most UPLOAD_IMAGE_MAX_SIDE pixels a side, without EXIF, GPS or any other metadata",
        json_schema_extra={"contentMediaType": "image/jpeg", **rule(IMAGE_RULE)},
    )


class DocumentForm(BaseModel):
    """A student's document: the file, its kind and an optional title."""

    file: bytes = Field(
        description="The document: a PDF (kept as sent), or a scan as a JPEG, PNG or WebP image (kept "
        "re-encoded, without metadata)",
        json_schema_extra={"contentMediaType": "application/pdf", **rule(DOCUMENT_RULE)},
    )
    kind: Literal[DOCUMENT_KINDS] = Field(description="What the document is")  # type: ignore[valid-type]
    title: str = Field("", max_length=200, description="A title shown in lists (optional)")


class UploadOut(Out):
    id: int
    owner_type: str = Field(description="student, teacher or institution")
    owner_id: int
    kind: str = Field(description="photo, logo, birth_certificate, transfer_letter, medical_form, other")
    title: str | None
    filename: str
    content_type: str
    size_bytes: int
    sha256: str = Field(description="of the kept bytes (also the download's ETag)")
    width: int | None = Field(description="pixels, for an image")
    height: int | None
    thumbnail_status: Literal[THUMBNAIL_STATUSES]  # type: ignore[valid-type]
    url: str = Field(description="signed link to the file, valid UPLOAD_LINK_TTL seconds")
    thumbnail_url: str | None = Field(description="signed link to a WebP thumbnail, once made")
    links_expire_at: datetime
    created_at: datetime


# What the signed link serves.
FILE_TYPES = {
    media: {"type": "string", "format": "binary"}
    for media in ("image/jpeg", "image/png", "image/webp", "application/pdf")
}
