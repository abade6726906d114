"""Report cards a school hands out: teachers' comments and remarks (who may write which), attendance
totals, the school's name; names and comments in Latin, Greek and Cyrillic scripts printed in the PDF."""

import io

import pytest
from pypdf import PdfReader

from app.grading.schemas import RemarksSavedOut, ReportCardOut
from tests.conftest import assert_problem

NAME = ("Zoë", "Łukasiewicz-Þórsdóttir")
CYRILLIC = "Отличная работа в этом семестре, Зоя! Продолжай в том же духе: ещё чуть-чуть, и будет «пять»."
GREEK = "Εξαιρετική πρόοδος φέτος· συνέχισε έτσι, Ζωή!"
HEAD = "Brava Zoë — ótima aluna; žádné problémy, čestitke, ğüşıöç."


@pytest.fixture(autouse=True)
def in_process(app, tmp_path):
    celery = app.extensions["celery"]
    saved = celery.conf.task_always_eager, app.config["EXPORT_DIR"]
    celery.conf.task_always_eager = True
    app.config["EXPORT_DIR"] = str(tmp_path / "exports")
    yield
    celery.conf.task_always_eager, app.config["EXPORT_DIR"] = saved


def ok(resp, status=200):
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()


def remark(api, sid, term, kind, text, subject_id=None):
    body = {"term_id": term, "kind": kind, "text": text}
    if subject_id is not None:
        body["subject_id"] = subject_id
    return api.put(f"/students/{sid}/report-card/remarks", json=body)


def test_a_report_card_pdf_prints_every_character(admin, teacher, client, demo):
    term = demo["demo_current_term_id"]
    klass = ok(
        admin.post(
            "/classes",
            json={
                "academic_year_id": demo["demo_academic_year_id"],
                "name": "Ωμέγα 9",
                "grade_level": 9,
                "section": "Ω",
                "homeroom_teacher_id": demo["demo_teacher_id"],
            },
        ),
        201,
    )
    ok(
        admin.post(
            "/class-subjects",
            json={
                "class_id": klass["id"],
                "subject_id": demo["demo_subject_id"],
                "teacher_id": demo["demo_teacher_id"],
            },
        ),
        201,
    )
    sid = ok(
        admin.post(
            "/students", json={"admission_number": "UNI-1", "first_name": NAME[0], "last_name": NAME[1]}
        ),
        201,
    )["id"]
    start = demo["current_term"]["start"].isoformat()
    ok(admin.post("/enrolments", json={"student_id": sid, "class_id": klass["id"], "start_date": start}), 201)

    saved = ok(remark(teacher, sid, term, "subject", CYRILLIC, demo["demo_subject_id"]))
    RemarksSavedOut.model_validate(saved)
    ok(remark(teacher, sid, term, "class_teacher", GREEK))
    ok(remark(admin, sid, term, "head", HEAD))

    resp = admin.post(
        "/exports",
        json={"kind": "report_cards", "format": "pdf", "params": {"class_id": klass["id"], "term_id": term}},
    )
    job = ok(admin.get(ok(resp, 202) and resp.headers["Location"]))
    assert job["status"] == "done", job
    pdf = client.get(job["download_url"])
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert b"DejaVuSans" in pdf.data  # the shipped font, embedded
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.data)).pages)
    assert f"{NAME[0]} {NAME[1]}" in text
    assert "Ωμέγα 9" in text and "Mathematics" in text
    for written in (CYRILLIC, GREEK, HEAD):
        for word in written.split():
            assert word in text, (word, text)
    missing = {ch for ch in "".join((*NAME, CYRILLIC, GREEK, HEAD)) if not ch.isspace() and ch not in text}
    assert not missing, missing


def test_report_card_data_carries_remarks_school_and_attendance(admin, teacher, guardian, demo):
    sid, term = demo["demo_student_id"], demo["demo_current_term_id"]
    ok(remark(teacher, sid, term, "subject", "Steady work.", demo["demo_subject_id"]))
    ok(remark(teacher, sid, term, "class_teacher", "A kind classmate."))
    ok(remark(admin, sid, term, "head", "Well done."))
    card = ok(guardian.get(f"/students/{sid}/report-card?term_id={term}"))
    ReportCardOut.model_validate(card)
    assert card["school"] == ok(admin.get("/institution"))["name"] and card["logo"] is None
    assert card["remarks"]["class_teacher"] == "A kind classmate." and card["remarks"]["head"] == "Well done."
    [subject] = card["remarks"]["subjects"]
    assert subject["subject_id"] == demo["demo_subject_id"] and subject["text"] == "Steady work."
    assert subject["author"]  # the teacher who wrote it
    assert card["attendance"]["total"] > 0
    # writing it again changes it; null removes it
    ok(remark(teacher, sid, term, "class_teacher", "Kind and helpful."))
    assert ok(admin.get(f"/students/{sid}/report-card?term_id={term}"))["remarks"]["class_teacher"] == (
        "Kind and helpful."
    )
    gone = ok(remark(admin, sid, term, "head", None))
    assert gone["remarks"]["head"] is None


def test_who_may_write_which_remark(admin, teacher, guardian, hillside_admin, demo):
    sid, term, cid = demo["demo_student_id"], demo["demo_current_term_id"], demo["demo_class_id"]
    others = [
        cs["subject_id"]
        for cs in ok(admin.get(f"/class-subjects?class_id={cid}&limit=100"))["data"]
        if cs["teacher_id"] != demo["demo_teacher_id"]
    ]
    assert others
    assert_problem(remark(teacher, sid, term, "head", "Head's words"), 403)
    assert_problem(remark(teacher, sid, term, "subject", "Not my subject", others[0]), 403)
    ok(remark(admin, sid, term, "subject", "The admin may", others[0]))
    assert_problem(remark(guardian, sid, term, "class_teacher", "A parent's view"), 403)
    # a teacher with nothing to do with the student's class does not even see the student
    assert_problem(remark(teacher, demo["hillside_student_id"], term, "class_teacher", "x"), 404)
    assert_problem(remark(hillside_admin, sid, demo["hillside_current_term_id"], "head", "x"), 404)
    assert_problem(remark(admin, sid, term, "subject", "no subject"), 422)
    assert_problem(remark(admin, sid, term, "head", "with subject", demo["demo_subject_id"]), 422)
    assert_problem(remark(admin, sid, 999999, "head", "no term"), 422, "term_id")
    assert_problem(remark(admin, sid, term, "head", "x" * 2001), 422, "text")
    assert_problem(remark(admin, sid, term, "subject", "unknown", 999999), 422, "subject_id")
