"""Photos, logos and documents (app/uploads): type by content, size limits, images re-encoded without
metadata, thumbnails by a task (in process here, through a real worker below), signed links with cache
headers, reach (another school, another family), the logo on report cards, and deleting a person."""

import io
import time
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import ExifTags, Image
from sqlalchemy import select

from app.core.tenancy import set_current_institution
from app.extensions import db
from app.uploads import services
from app.uploads.models import Upload
from tests.conftest import assert_problem
from tests.embedded import run_embedded
from tests.worker_support import Worker, poll

GPS = {1: "S", 2: (1.0, 17.0, 30.0), 3: "E", 4: (36.0, 49.0, 0.0)}  # Nairobi, to the second


@pytest.fixture(autouse=True)
def upload_dir(app, tmp_path, monkeypatch):
    monkeypatch.setitem(app.config, "UPLOAD_DIR", str(tmp_path / "uploads"))
    return tmp_path / "uploads"


def jpeg(size=(4000, 3000), orientation=6, gps=True, quality=90) -> bytes:
    """A 12-megapixel camera photo: EXIF with the camera, an orientation (6: shown turned 90 degrees
    clockwise) and where it was taken."""
    img = Image.radial_gradient("L").resize(size).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0112] = orientation
    if gps:
        exif[ExifTags.IFD.GPSInfo] = GPS
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif, quality=quality)
    return out.getvalue()


def png(size=(300, 120), alpha=True) -> bytes:
    img = Image.new("RGBA" if alpha else "RGB", size, (200, 30, 30, 128) if alpha else (200, 30, 30))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def send(api, path, data, filename="photo.jpg", content_type="image/jpeg", method="put", **form):
    fields = {"file": (io.BytesIO(data), filename, content_type), **form}
    return getattr(api, method)(path, data=fields, content_type="multipart/form-data")


def path_of(url):
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def fetch(client, url, **kw):
    return client.get(path_of(url), **kw)


def opened(resp) -> Image.Image:
    img = Image.open(io.BytesIO(resp.get_data()))
    img.load()
    return img


# --- photos ----------------------------------------------------------------------------------------------


def test_a_12_megapixel_photo_is_kept_upright_smaller_and_without_exif(admin, client, demo):
    sid = demo["demo_student_id"]
    original = jpeg()
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # it has GPS
    resp = send(admin, f"/students/{sid}/photo", original)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["content_type"] == "image/jpeg" and body["kind"] == "photo"
    # 4000x3000 turned upright (orientation 6) is 3000x4000, downscaled to 2048 on the long side
    assert (body["width"], body["height"]) == (1536, 2048)
    assert body["thumbnail_status"] == "pending" and body["thumbnail_url"] is None
    assert body["size_bytes"] < len(original)

    got = fetch(client, body["url"])
    assert got.status_code == 200 and got.mimetype == "image/jpeg"
    assert got.headers["Cache-Control"] == f"private, max-age={client.application.config['UPLOAD_LINK_TTL']}"
    assert got.headers["ETag"] and got.headers["X-Content-Type-Options"] == "nosniff"
    img = opened(got)
    assert img.size == (1536, 2048)
    assert not img.getexif()  # no EXIF at all: no camera, no orientation, no GPS
    assert not img.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert "exif" not in img.info and "xmp" not in img.info and "comment" not in img.info
    assert b"TestCam" not in got.get_data()
    # the browser's copy is still good: 304
    again = fetch(client, body["url"], headers={"If-None-Match": got.headers["ETag"]})
    assert again.status_code == 304

    # the thumbnail task, in process (the worker test below runs it through the broker)
    assert services.make_thumbnail(body["id"]) == "done"
    assert services.make_thumbnail(body["id"]) == "done"  # a second run changes nothing
    shown = admin.get(f"/students/{sid}/photo").get_json()
    assert shown["thumbnail_status"] == "done"
    thumb = fetch(client, shown["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.mimetype == "image/webp"
    small = opened(thumb)
    assert max(small.size) == 256 and small.size == (192, 256) and not small.getexif()


def test_a_new_photo_replaces_the_old_one_and_its_files(admin, demo, upload_dir):
    sid = demo["demo_student_id"]
    first = send(admin, f"/students/{sid}/photo", jpeg((800, 600), gps=False)).get_json()
    services.make_thumbnail(first["id"])
    kept = {p.name for p in upload_dir.rglob("*") if p.is_file()}
    assert len(kept) == 2  # the photo and its thumbnail
    second = send(admin, f"/students/{sid}/photo", png(alpha=False), "p.png", "image/png").get_json()
    assert second["id"] != first["id"] and second["content_type"] == "image/jpeg"
    assert admin.get(f"/students/{sid}/photo").get_json()["id"] == second["id"]
    now = {p.name for p in upload_dir.rglob("*") if p.is_file()}
    assert not kept & now and len(now) == 1
    assert admin.delete(f"/students/{sid}/photo").status_code == 204
    assert_problem(admin.get(f"/students/{sid}/photo"), 404)
    assert not [p for p in upload_dir.rglob("*") if p.is_file()]


def test_a_file_claiming_to_be_a_jpeg_that_is_not_is_422(admin, demo, upload_dir):
    sid = demo["demo_student_id"]
    resp = send(admin, f"/students/{sid}/photo", b"MZ\x90\x00 this is a program, not a photo" * 10)
    assert_problem(resp, 422, "file")
    assert "claims to be a JPEG image" in resp.get_json()["errors"]["file"]
    # a PDF named photo.jpg: the content is named in the answer
    resp = send(admin, f"/students/{sid}/photo", PDF)
    assert_problem(resp, 422, "file")
    assert "it is a PDF document" in resp.get_json()["errors"]["file"]
    # a JPEG cut short (an interrupted upload) cannot be decoded
    resp = send(admin, f"/students/{sid}/photo", jpeg((800, 600))[:5000])
    assert_problem(resp, 422, "file")
    assert "damaged or incomplete" in resp.get_json()["errors"]["file"]
    assert_problem(
        admin.put(f"/students/{sid}/photo", data={}, content_type="multipart/form-data"), 422, "file"
    )
    assert not [p for p in upload_dir.rglob("*") if p.is_file()]  # nothing half-written
    assert db.session.execute(select(Upload)).first() is None


def test_an_upload_over_the_limit_is_413_before_it_is_read(admin, demo, app, monkeypatch):
    sid = demo["demo_student_id"]
    monkeypatch.setitem(app.config, "PHOTO_MAX_BYTES", 200_000)
    resp = send(admin, f"/students/{sid}/photo", jpeg((4000, 3000), quality=100))
    assert_problem(resp, 413, "file")
    assert "200,000 bytes" in resp.get_json()["detail"]
    # within its own limit an upload may exceed MAX_CONTENT_LENGTH, which bounds JSON bodies
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 100_000)
    monkeypatch.setitem(app.config, "PHOTO_MAX_BYTES", 15 * 1024 * 1024)
    big = jpeg((3000, 2000), quality=95)
    assert len(big) > 100_000
    assert send(admin, f"/students/{sid}/photo", big).status_code == 200
    # a document over UPLOAD_MAX_BYTES
    monkeypatch.setitem(app.config, "UPLOAD_MAX_BYTES", 1000)
    resp = send(
        admin,
        f"/students/{sid}/documents",
        PDF + b"%" * 2000 + b"\n%%EOF",
        "b.pdf",
        "application/pdf",
        method="post",
        kind="birth_certificate",
    )
    assert_problem(resp, 413, "file")


# --- documents -------------------------------------------------------------------------------------------


def test_pdf_documents_are_kept_and_other_types_refused(admin, client, demo):
    sid = demo["demo_student_id"]
    resp = send(
        admin,
        f"/students/{sid}/documents",
        PDF,
        "birth.pdf",
        "application/pdf",
        method="post",
        kind="birth_certificate",
        title="Birth certificate",
    )
    assert resp.status_code == 201, resp.get_json()
    doc = resp.get_json()
    assert doc["content_type"] == "application/pdf" and doc["thumbnail_status"] == "none"
    assert doc["title"] == "Birth certificate" and doc["filename"] == "birth.pdf"
    got = fetch(client, doc["url"])
    assert got.status_code == 200 and got.get_data() == PDF
    assert got.headers["Content-Disposition"].startswith("attachment")
    # a scan as a photo is a document too (re-encoded, thumbnail to come)
    scan = send(
        admin, f"/students/{sid}/documents", jpeg((1200, 900)), "scan.jpg", method="post", kind="medical_form"
    ).get_json()
    assert scan["content_type"] == "image/jpeg" and scan["thumbnail_status"] == "pending"
    listed = admin.get(f"/students/{sid}/documents").get_json()["data"]
    assert [d["id"] for d in listed] == [scan["id"], doc["id"]]
    assert [
        d["id"] for d in admin.get(f"/students/{sid}/documents?kind=medical_form").get_json()["data"]
    ] == [scan["id"]]

    word = b"PK\x03\x04" + b"\x00" * 200  # a .docx is a zip
    resp = send(
        admin,
        f"/students/{sid}/documents",
        word,
        "letter.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        method="post",
        kind="transfer_letter",
    )
    assert_problem(resp, 422, "file")
    fake_pdf = send(
        admin,
        f"/students/{sid}/documents",
        b"just text",
        "t.pdf",
        "application/pdf",
        method="post",
        kind="other",
    )
    assert_problem(fake_pdf, 422, "file")
    cut_pdf = send(
        admin, f"/students/{sid}/documents", PDF[:60], "t.pdf", "application/pdf", method="post", kind="other"
    )
    assert_problem(cut_pdf, 422, "file")
    bad_kind = send(
        admin, f"/students/{sid}/documents", PDF, "t.pdf", "application/pdf", method="post", kind="passport"
    )
    assert_problem(bad_kind, 422, "kind")
    assert admin.delete(f"/documents/{doc['id']}").status_code == 204
    assert_problem(admin.get(f"/documents/{doc['id']}"), 404)
    assert fetch(client, doc["url"]).status_code == 404  # an erased file's link finds nothing


def test_who_sees_a_students_photo_and_documents(
    admin, teacher, guardian, student, accountant, as_user, demo
):
    sid, stranger = demo["demo_student_id"], demo["apostrophe_student_id"]
    send(admin, f"/students/{sid}/photo", jpeg((400, 300)))
    send(admin, f"/students/{stranger}/photo", jpeg((400, 300)))
    mine = send(
        admin,
        f"/students/{sid}/documents",
        PDF,
        "b.pdf",
        "application/pdf",
        method="post",
        kind="birth_certificate",
    ).get_json()
    theirs = send(
        admin,
        f"/students/{stranger}/documents",
        PDF,
        "b.pdf",
        "application/pdf",
        method="post",
        kind="medical_form",
    ).get_json()
    # the teacher of the class sees both children's; the guardian only their own child's
    for who in (teacher, guardian):
        assert who.get(f"/students/{sid}/photo").status_code == 200
        assert who.get(f"/documents/{mine['id']}").status_code == 200
    assert teacher.get(f"/documents/{theirs['id']}").status_code == 200
    assert_problem(guardian.get(f"/students/{stranger}/photo"), 404)
    assert_problem(guardian.get(f"/documents/{theirs['id']}"), 404)
    assert_problem(guardian.get(f"/students/{stranger}/documents"), 404)
    # a student sees their own photo, not their documents; an accountant neither
    assert student.get(f"/students/{sid}/photo").status_code == 200
    assert_problem(student.get(f"/documents/{mine['id']}"), 403)
    assert_problem(accountant.get(f"/students/{sid}/photo"), 403)
    # only admins upload
    assert_problem(send(teacher, f"/students/{sid}/photo", jpeg((400, 300))), 403)
    assert_problem(send(guardian, f"/students/{sid}/photo", jpeg((400, 300))), 403)


def test_another_schools_files_are_not_found(admin, hillside_admin, client, demo):
    sid = demo["demo_student_id"]
    photo = send(admin, f"/students/{sid}/photo", jpeg((400, 300))).get_json()
    doc = send(
        admin, f"/students/{sid}/documents", PDF, "b.pdf", "application/pdf", method="post", kind="other"
    ).get_json()
    assert_problem(hillside_admin.get(f"/students/{sid}/photo"), 404)
    assert_problem(hillside_admin.get(f"/documents/{doc['id']}"), 404)
    assert_problem(hillside_admin.delete(f"/documents/{doc['id']}"), 404)
    assert_problem(send(hillside_admin, f"/students/{sid}/photo", jpeg((400, 300))), 404)
    assert_problem(hillside_admin.get(f"/students/{demo['hillside_student_id']}/photo"), 404)  # has none
    # a link for this school's file, sent to the path of a file id it was not signed for: 403
    token = photo["url"].split("token=", 1)[1]
    assert_problem(client.get(f"/api/v1/files/{doc['id']}?token={token}"), 403)


def test_signed_links_expire_and_refuse_tampering(admin, client, demo, app, monkeypatch):
    sid = demo["demo_student_id"]
    photo = send(admin, f"/students/{sid}/photo", jpeg((400, 300))).get_json()
    url = photo["url"]
    assert fetch(client, url).status_code == 200
    path = path_of(url)
    assert_problem(client.get(path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")), 403)
    assert_problem(client.get(path.split("?")[0]), 404)  # no token: not found
    assert_problem(client.get(path.split("?")[0] + "?token=not-a-token"), 403)
    monkeypatch.setitem(app.config, "UPLOAD_LINK_TTL", 1)
    time.sleep(2.1)  # itsdangerous counts whole seconds
    resp = client.get(path)
    assert_problem(resp, 410)
    assert resp.get_json()["type"].endswith("link-expired")
    # a link made with another key (or by hand) is refused
    monkeypatch.setitem(app.config, "UPLOAD_LINK_TTL", 3600)
    monkeypatch.setitem(app.config, "SECRET_KEY", "another-key-entirely-0123456789abcdef")
    assert_problem(client.get(path), 403)


def test_thumbnails_whose_message_was_lost_are_sent_again(admin, demo):
    photo = send(admin, f"/students/{demo['demo_student_id']}/photo", jpeg((800, 600))).get_json()
    assert services.resend_pending_thumbnails() == 0  # just uploaded: its message is on its way
    row = db.session.get(Upload, photo["id"])
    row.created_at = row.created_at - timedelta(minutes=10)
    db.session.commit()
    assert services.resend_pending_thumbnails() == 1
    services.make_thumbnail(photo["id"])
    assert services.resend_pending_thumbnails() == 0


# --- teachers, the logo --------------------------------------------------------------------------------


def test_teacher_photos(admin, guardian, demo):
    tid = demo["demo_teacher_id"]
    resp = send(admin, f"/teachers/{tid}/photo", png((500, 500), alpha=False), "t.png", "image/png")
    assert resp.status_code == 200 and resp.get_json()["owner_type"] == "teacher"
    assert guardian.get(f"/teachers/{tid}/photo").status_code == 200  # their child's teacher
    assert_problem(admin.get(f"/teachers/{demo['hillside_teacher_id']}/photo"), 404)


def test_the_logo_is_kept_with_its_transparency_and_printed_on_report_cards(
    admin, teacher, client, demo, app
):
    resp = send(admin, "/institution/logo", png(), "logo.png", "image/png")
    assert resp.status_code == 200, resp.get_json()
    logo = resp.get_json()
    assert logo["content_type"] == "image/png" and logo["thumbnail_status"] == "none"
    assert teacher.get("/institution/logo").get_json()["id"] == logo["id"]
    assert opened(fetch(client, logo["url"])).mode == "RGBA"
    assert services.logo_bytes(demo["demo_institution_id"]) is not None

    from app.jobs import pdf  # noqa: PLC0415 - reportlab is loaded only where a PDF is written
    from app.jobs.schemas import ClassTermParams  # noqa: PLC0415

    set_current_institution(demo["demo_institution_id"])  # as the export job runs it
    params = ClassTermParams(class_id=demo["demo_class_id"], term_id=demo["demo_current_term_id"])
    out = Path(app.config["UPLOAD_DIR"]) / "cards.pdf"
    pdf.report_cards(params, out)
    assert b"/Subtype /Image" in out.read_bytes()
    assert admin.delete("/institution/logo").status_code == 204
    pdf.report_cards(params, out)
    assert b"/Subtype /Image" not in out.read_bytes()


# --- deleting a person ---------------------------------------------------------------------------------


def test_a_deleted_students_thumbnails_are_erased_and_files_no_longer_served(
    admin, client, demo, upload_dir, app
):
    sid, tid = demo["demo_student_id"], demo["demo_teacher_id"]
    photo = send(admin, f"/students/{sid}/photo", jpeg((800, 600))).get_json()
    services.make_thumbnail(photo["id"])
    photo = admin.get(f"/students/{sid}/photo").get_json()
    assert admin.delete(f"/students/{sid}").status_code == 204
    # the links handed out before are dead at once; the originals are kept (until erased)
    assert fetch(client, photo["url"]).status_code == 404
    assert fetch(client, photo["thumbnail_url"]).status_code == 404
    assert services.erase_thumbnails("student", sid) == 1  # the task the delete sent, in process
    row = db.session.get(Upload, photo["id"])
    assert row.thumbnail_status == "erased" and row.thumbnail_key is None
    assert len([p for p in upload_dir.rglob("*") if p.is_file()]) == 1
    # the explicit erase removes the rest (refused for a person not deleted)
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["uploads", "erase", "--school", "demo-academy", "--teacher", str(tid)])
    assert refused.exit_code != 0 and "not deleted" in refused.output
    done = runner.invoke(args=["uploads", "erase", "--school", "demo-academy", "--student", str(sid)])
    assert done.exit_code == 0, done.output
    assert '"erased": 1' in done.output
    assert not [p for p in upload_dir.rglob("*") if p.is_file()]
    assert db.session.get(Upload, photo["id"]) is None


# --- through a real worker, and on the embedded default ------------------------------------------------


def test_the_thumbnail_is_made_by_a_real_worker(committed_school, worker_app, committing, broker, tmp_path):
    """API -> Redis -> a `celery worker` process -> the thumbnail on the shared upload directory."""
    app2, client = worker_app
    api = committed_school["login"](client)
    sid = committed_school["students"][0]
    try:
        with Worker(broker, app2.config["EXPORT_DIR"], tmp_path) as worker:
            resp = send(api, f"/students/{sid}/photo", jpeg())
            assert resp.status_code == 200, resp.get_json()
            assert resp.get_json()["thumbnail_status"] == "pending"
            done = poll(
                lambda: api.get(f"/students/{sid}/photo").get_json(),
                lambda p: p["thumbnail_status"] == "done",
                timeout=30,
                what="the worker to make the thumbnail",
                worker=worker,
            )
        small = opened(fetch(client, done["thumbnail_url"]))
        assert small.format == "WEBP" and max(small.size) == 256
        assert not opened(fetch(client, done["url"])).getexif()
    finally:
        with app2.app_context():
            db.session.execute(
                Upload.__table__.delete().where(
                    Upload.__table__.c.institution_id == committed_school["institution_id"]
                )
            )
            db.session.commit()


EMBEDDED = """
import io, json
from PIL import Image
from flask_migrate import upgrade
from app import create_app
from app.seed import seed_demo
app = create_app()
with app.app_context():
    upgrade()
    ids = seed_demo("embedded-pass-1")
c = app.test_client()
h = {"Authorization": "Bearer " + c.post("/api/v1/auth/login", json={"email": "admin@demo-academy.test",
                                                                     "password": "embedded-pass-1"}).get_json()["access_token"]}
buf = io.BytesIO(); Image.new("RGB", (3000, 2000), "teal").save(buf, "JPEG")
sid = ids["demo_student_id"]
r = c.put(f"/api/v1/students/{sid}/photo", headers=h, content_type="multipart/form-data",
          data={"file": (io.BytesIO(buf.getvalue()), "p.jpg")})
again = c.put(f"/api/v1/students/{sid}/photo", headers=h, content_type="multipart/form-data",
              data={"file": (io.BytesIO(buf.getvalue()), "p.jpg")})
shown = c.get(f"/api/v1/students/{sid}/photo", headers=h).get_json()
thumb = c.get(shown["thumbnail_url"]) if shown.get("thumbnail_url") else None
print("RESULT " + json.dumps({"status": [r.status_code, again.status_code], "thumbnail": shown["thumbnail_status"],
                              "thumb_type": thumb.mimetype if thumb else None, "width": shown["width"]}))
"""


@pytest.mark.slow
def test_uploads_on_the_embedded_default(tmp_path):
    """SQLite and in-process tasks: the thumbnail is made in the request's process after the commit."""
    out = run_embedded(EMBEDDED, tmp_path)
    assert out["status"] == [200, 200]  # a second photo replaces the first (one per student)
    assert out["thumbnail"] == "done" and out["thumb_type"] == "image/webp" and out["width"] == 2048
