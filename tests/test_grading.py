"""Gradebook: assessment types, assessments, bulk grade entry, term results, class ranking, report cards.

Every test works in a term of its own (far in the future, so the seed's grades and attendance never mix
in) with assessment types, assessments and grades it creates, so the expected numbers are known.
"""

import textwrap
from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask import g
from sqlalchemy import event, func, select

from app.attendance.models import AttendanceRecord
from app.audit.models import AuditEntry
from app.extensions import db
from app.grading import services
from app.grading.models import Grade
from app.grading.schemas import GradeOut, RankingOut, ReportCardOut, TermResultsOut
from tests.conftest import assert_problem
from tests.embedded import run_embedded

TERM_START = date.today() + timedelta(days=400)
TERM_END = TERM_START + timedelta(days=60)
DAY = TERM_START + timedelta(days=10)


# --- helpers ---------------------------------------------------------------------------------------


def ok(resp, status=200):
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    return resp.get_json() if resp.data else None


def new_term(admin, demo, name="Gradebook term", start=TERM_START, end=TERM_END):
    return ok(
        admin.post(
            "/terms",
            json={
                "academic_year_id": demo["demo_academic_year_id"],
                "name": name,
                "start_date": start.isoformat(),
                "end_date": end.isoformat(),
            },
        ),
        201,
    )["id"]


def new_type(admin, name, weight):
    return ok(admin.post("/assessment-types", json={"name": name, "weight": weight}), 201)["id"]


def new_assessment(api, class_subject_id, term_id, type_id, max_score="20", title="Quiz", day=DAY):
    return ok(
        api.post(
            "/assessments",
            json={
                "class_subject_id": class_subject_id,
                "term_id": term_id,
                "assessment_type_id": type_id,
                "title": title,
                "max_score": max_score,
                "date": day.isoformat(),
            },
        ),
        201,
    )["id"]


def put_grades(api, assessment_id, rows, **kw):
    return api.put(f"/assessments/{assessment_id}/grades", json={"grades": rows}, **kw)


def rows(*pairs):
    return [{"student_id": s, "score": score} for s, score in pairs]


def roster(admin, class_id):
    return [s["id"] for s in ok(admin.get(f"/classes/{class_id}/students?limit=200&sort=id"))["data"]]


def grade_count(assessment_id):
    return db.session.execute(
        select(func.count()).select_from(Grade).where(Grade.assessment_id == assessment_id),
        execution_options={"skip_tenant": True},
    ).scalar_one()


def grade_audit(demo):
    return (
        db.session.execute(
            select(AuditEntry)
            .where(
                AuditEntry.entity_type == "grade", AuditEntry.institution_id == demo["demo_institution_id"]
            )
            .order_by(AuditEntry.id),
            execution_options={"skip_tenant": True},
        )
        .scalars()
        .all()
    )


@pytest.fixture
def gb(admin, demo):
    """A term, a Quiz (weight 1) and an Exam (weight 3) type, the demo teacher's class subject (Mathematics
    in the demo class), another teacher's class subject in the same class, and one in a class the demo
    teacher has nothing to do with."""
    class_subjects = ok(admin.get(f"/class-subjects?class_id={demo['demo_class_id']}&limit=50"))["data"]
    mine = next(cs["id"] for cs in class_subjects if cs["teacher_id"] == demo["demo_teacher_id"])
    others = [cs["id"] for cs in class_subjects if cs["teacher_id"] != demo["demo_teacher_id"]]
    foreign = ok(admin.get(f"/class-subjects?class_id={demo['other_class_id']}&limit=1"))["data"][0]["id"]
    return {
        "term": new_term(admin, demo),
        "quiz": new_type(admin, "GB Quiz", "1"),
        "exam": new_type(admin, "GB Exam", "3"),
        "mine": mine,
        "others": others,
        "foreign": foreign,
        "students": roster(admin, demo["demo_class_id"]),
    }


# --- assessment types ------------------------------------------------------------------------------


def test_assessment_types_admin_writes_everyone_reads(admin, teacher, guardian, demo):
    created = ok(admin.post("/assessment-types", json={"name": "Project", "weight": "12.5"}), 201)
    assert created["weight"] == "12.50"
    assert "Project" in [t["name"] for t in ok(teacher.get("/assessment-types?limit=200"))["data"]]
    assert ok(guardian.get(f"/assessment-types/{created['id']}"))["name"] == "Project"
    assert_problem(teacher.post("/assessment-types", json={"name": "Mine", "weight": "1"}), 403)
    assert_problem(admin.post("/assessment-types", json={"name": "Project", "weight": "1"}), 409)
    assert_problem(admin.post("/assessment-types", json={"name": "Neg", "weight": "-1"}), 422, "weight")
    assert_problem(admin.post("/assessment-types", json={"name": "Bad", "weight": "heavy"}), 422, "weight")
    assert_problem(admin.post("/assessment-types", json={"name": "Big", "weight": "1000"}), 422, "weight")
    assert_problem(admin.patch(f"/assessment-types/{created['id']}", json={"weight": None}), 422, "weight")
    assert ok(admin.patch(f"/assessment-types/{created['id']}", json={"weight": "0"}))["weight"] == "0.00"
    assert ok(admin.delete(f"/assessment-types/{created['id']}"), 204) is None
    assert_problem(admin.get(f"/assessment-types/{created['id']}"), 404)


def test_an_assessment_type_in_use_cannot_be_deleted(admin, gb):
    new_assessment(admin, gb["mine"], gb["term"], gb["quiz"])
    assert_problem(admin.delete(f"/assessment-types/{gb['quiz']}"), 409)


# --- assessments -----------------------------------------------------------------------------------


def test_teacher_creates_assessments_only_for_their_class_subject(teacher, admin, gb):
    body = {
        "class_subject_id": gb["mine"],
        "term_id": gb["term"],
        "assessment_type_id": gb["quiz"],
        "title": "Fractions quiz",
        "max_score": "20",
        "date": DAY.isoformat(),
    }
    created = ok(teacher.post("/assessments", json=body), 201)
    assert created["max_score"] == "20.00" and created["date"] == DAY.isoformat()
    # a subject of their own class taught by someone else, and a class they do not teach
    assert_problem(
        teacher.post("/assessments", json={**body, "class_subject_id": gb["others"][0]}),
        422,
        "class_subject_id",
    )
    assert_problem(
        teacher.post("/assessments", json={**body, "class_subject_id": gb["foreign"]}),
        422,
        "class_subject_id",
    )
    assert_problem(
        teacher.post("/assessments", json={**body, "class_subject_id": 999999999}), 422, "class_subject_id"
    )
    assert_problem(teacher.post("/assessments", json={**body, "term_id": 999999999}), 422, "term_id")
    late = (TERM_END + timedelta(days=1)).isoformat()
    assert_problem(teacher.post("/assessments", json={**body, "date": late}), 422, "date")
    assert_problem(teacher.post("/assessments", json={**body, "max_score": "0"}), 422, "max_score")
    assert_problem(teacher.post("/assessments", json={**body, "colour": "red"}), 422, "colour")
    assert ok(admin.get(f"/assessments/{created['id']}"))["title"] == "Fractions quiz"


def test_assessment_term_must_belong_to_the_class_year(admin, demo, gb):
    other_year = ok(
        admin.post(
            "/academic-years", json={"name": "GB 2099", "start_date": "2099-01-01", "end_date": "2099-12-31"}
        ),
        201,
    )["id"]
    term = ok(
        admin.post(
            "/terms",
            json={
                "academic_year_id": other_year,
                "name": "T1",
                "start_date": "2099-01-01",
                "end_date": "2099-04-01",
            },
        ),
        201,
    )["id"]
    resp = admin.post(
        "/assessments",
        json={
            "class_subject_id": gb["mine"],
            "term_id": term,
            "assessment_type_id": gb["quiz"],
            "title": "X",
            "max_score": "10",
            "date": "2099-02-01",
        },
    )
    assert_problem(resp, 422, "term_id")


def test_another_teachers_assessment_answers_404(teacher, admin, gb):
    foreign = new_assessment(admin, gb["foreign"], gb["term"], gb["quiz"])
    assert_problem(teacher.get(f"/assessments/{foreign}"), 404)
    assert_problem(teacher.patch(f"/assessments/{foreign}", json={"title": "Mine now"}), 404)
    assert_problem(teacher.delete(f"/assessments/{foreign}"), 404)
    assert_problem(teacher.get(f"/assessments/{foreign}/grades"), 404)
    assert_problem(put_grades(teacher, foreign, []), 404)
    assert foreign not in [a["id"] for a in ok(teacher.get("/assessments?limit=200"))["data"]]


def test_homeroom_teacher_reads_but_cannot_grade_another_subject(teacher, admin, gb):
    english = new_assessment(admin, gb["others"][0], gb["term"], gb["quiz"])
    assert ok(teacher.get(f"/assessments/{english}"))["id"] == english  # they lead the demo class
    assert_problem(put_grades(teacher, english, rows((gb["students"][0], "5"))), 403)
    assert_problem(teacher.patch(f"/assessments/{english}", json={"title": "X"}), 403)
    assert grade_count(english) == 0


def test_assessment_list_filters_and_roles(admin, teacher, guardian, accountant, demo, gb):
    a = new_assessment(teacher, gb["mine"], gb["term"], gb["quiz"])
    b = new_assessment(admin, gb["others"][0], gb["term"], gb["exam"])
    c = new_assessment(admin, gb["foreign"], gb["term"], gb["exam"])
    in_term = {x["id"] for x in ok(admin.get(f"/assessments?term_id={gb['term']}&limit=200"))["data"]}
    assert in_term == {a, b, c}
    in_class = {
        x["id"]
        for x in ok(admin.get(f"/assessments?term_id={gb['term']}&class_id={demo['demo_class_id']}"))["data"]
    }
    assert in_class == {a, b}
    by_type = {
        x["id"]
        for x in ok(admin.get(f"/assessments?term_id={gb['term']}&assessment_type_id={gb['exam']}"))["data"]
    }
    assert by_type == {b, c}
    assert [
        x["id"]
        for x in ok(admin.get(f"/assessments?class_subject_id={gb['mine']}&term_id={gb['term']}"))["data"]
    ] == [a]
    # guardians see the assessments of their children's classes only
    seen = {x["id"] for x in ok(guardian.get(f"/assessments?term_id={gb['term']}&limit=200"))["data"]}
    assert {a, b} <= seen and c not in seen
    assert_problem(guardian.get(f"/assessments/{c}"), 404)
    assert_problem(accountant.get("/assessments"), 403)
    assert_problem(admin.get("/assessments?class_id=abc"), 422, "class_id")


def test_patch_and_delete_assessment(teacher, demo, gb):
    aid = new_assessment(teacher, gb["mine"], gb["term"], gb["quiz"], max_score="20")
    ok(put_grades(teacher, aid, rows((gb["students"][0], "18"))))
    assert_problem(teacher.patch(f"/assessments/{aid}", json={"max_score": "15"}), 422, "max_score")
    assert_problem(
        teacher.patch(f"/assessments/{aid}", json={"date": (TERM_START - timedelta(days=1)).isoformat()}),
        422,
        "date",
    )
    assert_problem(teacher.patch(f"/assessments/{aid}", json={"title": None}), 422, "title")
    assert_problem(
        teacher.patch(f"/assessments/{aid}", json={"class_subject_id": gb["others"][0]}),
        422,
        "class_subject_id",
    )
    changed = ok(teacher.patch(f"/assessments/{aid}", json={"max_score": "25", "title": "Quiz 1 (revised)"}))
    assert changed["max_score"] == "25.00" and changed["title"] == "Quiz 1 (revised)"
    grade = ok(teacher.get(f"/assessments/{aid}/grades"))["data"][0]
    assert grade["percentage"] == "72.0"  # 18 of 25 now
    ok(teacher.delete(f"/assessments/{aid}"), 204)
    assert grade_count(aid) == 0
    deleted = db.session.execute(
        select(AuditEntry).where(
            AuditEntry.entity_type == "assessment",
            AuditEntry.entity_id == str(aid),
            AuditEntry.action == "delete",
        ),
        execution_options={"skip_tenant": True},
    ).scalar_one()
    assert deleted.changes["grades"] == [1, 0]


# --- bulk grade entry ------------------------------------------------------------------------------


def test_bulk_upsert_gives_percentages_letters_and_counts(teacher, admin, demo, gb):
    aid = new_assessment(teacher, gb["mine"], gb["term"], gb["quiz"], max_score="20")
    s1, s2, s3 = gb["students"][:3]
    body = ok(put_grades(teacher, aid, rows((s1, "17.5"), (s2, "13"), (s3, "9"))))
    assert body["counts"] == {"created": 3, "updated": 0, "unchanged": 0}
    got = {gr["student_id"]: gr for gr in body["data"]}
    assert (got[s1]["score"], got[s1]["percentage"], got[s1]["letter"]) == ("17.50", "87.5", "A")
    assert (got[s2]["percentage"], got[s2]["letter"]) == ("65.0", "C")
    assert (got[s3]["percentage"], got[s3]["letter"]) == ("45.0", "E")
    assert all(set(gr) == set(GradeOut.model_fields) for gr in body["data"])
    assert got[s1]["graded_by_id"] == teacher.user["id"]

    # the institution changes its scale: the same scores get the new letters
    ok(
        admin.patch(
            "/institution",
            json={
                "grading_scale": [
                    {"letter": "H", "min": 85},
                    {"letter": "P", "min": 50},
                    {"letter": "F", "min": 0},
                ]
            },
        ),
        200,
    )
    letters = {gr["student_id"]: gr["letter"] for gr in ok(teacher.get(f"/assessments/{aid}/grades"))["data"]}
    assert letters == {s1: "H", s2: "P", s3: "F"}


def test_resending_the_same_grades_writes_nothing_and_changes_update_only_those(teacher, demo, gb):
    aid = new_assessment(teacher, gb["mine"], gb["term"], gb["quiz"], max_score="20")
    s1, s2, s3 = gb["students"][:3]
    first = rows((s1, "17.5"), (s2, "13"), (s3, "9"))
    first[0]["comment"] = "Well done"
    ok(put_grades(teacher, aid, first))
    audit_before = grade_audit(demo)
    assert len([e for e in audit_before if e.action == "create"]) >= 3
    stamps = dict(
        db.session.execute(
            select(Grade.student_id, Grade.updated_at).where(Grade.assessment_id == aid),
            execution_options={"skip_tenant": True},
        ).all()
    )

    again = ok(put_grades(teacher, aid, first))
    assert again["counts"] == {"created": 0, "updated": 0, "unchanged": 3}
    assert len(grade_audit(demo)) == len(audit_before)

    # "17.50" is the same score as "17.5"; the comment left out is kept; one score really changes
    changed = ok(put_grades(teacher, aid, rows((s1, "17.50"), (s2, "15"), (s3, "9"))))
    assert changed["counts"] == {"created": 0, "updated": 1, "unchanged": 2}
    after = grade_audit(demo)
    assert len(after) == len(audit_before) + 1
    assert after[-1].action == "update" and after[-1].changes == {"score": ["13.00", "15.00"]}
    now = dict(
        db.session.execute(
            select(Grade.student_id, Grade.updated_at).where(Grade.assessment_id == aid),
            execution_options={"skip_tenant": True},
        ).all()
    )
    assert now[s1] == stamps[s1] and now[s3] == stamps[s3] and now[s2] > stamps[s2]
    got = {gr["student_id"]: gr for gr in changed["data"]}
    assert got[s1]["comment"] == "Well done" and got[s2]["score"] == "15.00"

    # an explicit null clears a comment, and that is a change
    cleared = ok(put_grades(teacher, aid, [{"student_id": s1, "score": "17.5", "comment": None}]))
    assert cleared["counts"] == {"created": 0, "updated": 1, "unchanged": 0}
    assert grade_audit(demo)[-1].changes == {"comment": ["Well done", None]}


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"score": "20.5"}, "grades[1].score"),
        ({"score": "-1"}, "grades[1].score"),
        ({"score": "ten"}, "grades[1].score"),
        ({"score": "1.234"}, "grades[1].score"),
        ({"student": "outsider"}, "grades[1].student_id"),
        ({"student": "duplicate"}, "grades[1].student_id"),
        ({"student": 999999999}, "grades[1].student_id"),
        ({"colour": "red"}, "grades[1].colour"),
    ],
)
def test_a_bad_row_rejects_the_whole_batch(teacher, admin, demo, gb, bad, field):
    aid = new_assessment(teacher, gb["mine"], gb["term"], gb["quiz"], max_score="20")
    s1, s2 = gb["students"][:2]
    ok(put_grades(teacher, aid, rows((s1, "10"))))
    audit_before = len(grade_audit(demo))
    outsider = roster(admin, demo["other_class_id"])[0]
    second = {"student_id": s2, "score": "12"}
    bad = dict(bad)
    who = bad.pop("student", None)
    if who is not None:
        second["student_id"] = {"outsider": outsider, "duplicate": s1}.get(who, who)
    second.update(bad)
    resp = put_grades(teacher, aid, [{"student_id": s1, "score": "19"}, second])
    problem = assert_problem(resp, 422, field)
    if field == "grades[1].score" and bad["score"] in ("20.5", "-1"):
        assert problem["errors"][field] == "must be between 0 and 20"
    # nothing written: the first row's valid change did not happen either
    assert db.session.execute(
        select(Grade.student_id, Grade.score).where(Grade.assessment_id == aid),
        execution_options={"skip_tenant": True},
    ).all() == [(s1, Decimal("10.00"))]
    assert len(grade_audit(demo)) == audit_before


def test_grade_body_shape_errors(teacher, gb):
    aid = new_assessment(teacher, gb["mine"], gb["term"], gb["quiz"])
    assert_problem(put_grades(teacher, aid, []), 422, "grades")
    assert_problem(teacher.put(f"/assessments/{aid}/grades", json={"grades": [], "x": 1}), 422, "x")
    assert_problem(teacher.put(f"/assessments/{aid}/grades", json=[1]), 422, "body")
    assert_problem(
        teacher.put(f"/assessments/{aid}/grades", json={"grades": [{"score": "1"}]}),
        422,
        "grades[0].student_id",
    )


def test_students_who_left_before_the_assessment_cannot_be_graded(admin, teacher, demo, gb):
    # a student who joined the demo class, then moved to another class: graded only while they were there
    mover = roster(admin, demo["demo_sibling_class_id"])[-1]
    ok(
        admin.post(
            "/enrolments",
            json={
                "student_id": mover,
                "class_id": demo["demo_class_id"],
                "start_date": (TERM_START - timedelta(days=30)).isoformat(),
            },
        ),
        201,
    )
    ok(
        admin.post(
            "/enrolments",
            json={
                "student_id": mover,
                "class_id": demo["demo_sibling_class_id"],
                "start_date": (TERM_START + timedelta(days=5)).isoformat(),
            },
        ),
        201,
    )
    early = new_assessment(teacher, gb["mine"], gb["term"], gb["quiz"], day=TERM_START + timedelta(days=1))
    late = new_assessment(teacher, gb["mine"], gb["term"], gb["quiz"], day=TERM_START + timedelta(days=20))
    ok(put_grades(teacher, early, rows((mover, "10"))))
    assert_problem(put_grades(admin, late, rows((mover, "10"))), 422, "grades[0].student_id")


def test_idempotency_key_replays_the_first_answer(teacher, gb):
    aid = new_assessment(teacher, gb["mine"], gb["term"], gb["quiz"])
    s1 = gb["students"][0]
    key = {"Idempotency-Key": "grades-retry-1"}
    first = ok(put_grades(teacher, aid, rows((s1, "11")), headers=key))
    replay = put_grades(teacher, aid, rows((s1, "11")), headers=key)
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.get_json() == first
    assert_problem(put_grades(teacher, aid, rows((s1, "12")), headers=key), 409)


def test_guardians_and_students_see_only_their_own_grade_rows(
    teacher, guardian, student, accountant, demo, gb
):
    aid = new_assessment(teacher, gb["mine"], gb["term"], gb["quiz"])
    me = demo["demo_student_id"]
    classmate = next(s for s in gb["students"] if s != me)
    ok(put_grades(teacher, aid, rows((me, "15"), (classmate, "12"))))
    assert [r["student_id"] for r in ok(guardian.get(f"/assessments/{aid}/grades"))["data"]] == [me]
    assert [r["student_id"] for r in ok(student.get(f"/assessments/{aid}/grades"))["data"]] == [me]
    assert len(ok(teacher.get(f"/assessments/{aid}/grades"))["data"]) == 2
    assert_problem(put_grades(guardian, aid, rows((me, "20"))), 403)
    assert_problem(put_grades(student, aid, rows((me, "20"))), 403)
    assert_problem(accountant.get(f"/assessments/{aid}/grades"), 403)


# --- term results ----------------------------------------------------------------------------------


def test_term_results_weighted_average_by_hand(admin, teacher, guardian, student, accountant, demo, gb):
    me = demo["demo_student_id"]
    english, science = gb["others"][:2]
    t = gb["term"]
    # Mathematics: quiz (weight 1) 8/10 = 80 %, exam (weight 3) 35/50 = 70 %  ->  (80 + 3*70) / 4 = 72.5
    ok(put_grades(teacher, new_assessment(teacher, gb["mine"], t, gb["quiz"], "10"), rows((me, "8"))))
    ok(put_grades(teacher, new_assessment(teacher, gb["mine"], t, gb["exam"], "50"), rows((me, "35"))))
    # English: exam 36/40 = 90 %; a quiz nobody has marked yet does not count
    ok(put_grades(admin, new_assessment(admin, english, t, gb["exam"], "40"), rows((me, "36"))))
    new_assessment(admin, english, t, gb["quiz"], "10")
    # Science: an assessment without grades: the subject is left out
    new_assessment(admin, science, t, gb["exam"], "100")
    # another term's grades never count
    other_term = new_term(
        admin, demo, "Other GB term", TERM_END + timedelta(days=10), TERM_END + timedelta(days=40)
    )
    ok(
        put_grades(
            admin,
            new_assessment(
                admin, gb["mine"], other_term, gb["exam"], "10", day=TERM_END + timedelta(days=12)
            ),
            rows((me, "1")),
        )
    )

    body = ok(guardian.get(f"/students/{me}/results?term_id={t}"))
    TermResultsOut.model_validate(body)
    subjects = {s["subject_id"]: s for s in body["subjects"]}
    cs = {
        c["id"]: c
        for c in ok(admin.get(f"/class-subjects?class_id={demo['demo_class_id']}&limit=50"))["data"]
    }
    math, eng = subjects[cs[gb["mine"]]["subject_id"]], subjects[cs[english]["subject_id"]]
    assert len(subjects) == 2
    assert (math["average"], math["letter"], math["assessments"]) == ("72.5", "B", 2)
    assert (eng["average"], eng["letter"], eng["assessments"]) == ("90.0", "A", 1)
    # overall: (72.5 + 90) / 2 = 81.25, shown to one place (half up)
    assert body["overall"] == {"average": "81.3", "letter": "A"}

    assert ok(student.get(f"/students/{me}/results?term_id={t}"))["overall"]["average"] == "81.3"
    assert ok(teacher.get(f"/students/{me}/results?term_id={t}"))["overall"]["average"] == "81.3"
    nobody = ok(admin.get(f"/students/{gb['students'][-1]}/results?term_id={t}"))
    assert nobody["subjects"] == [] and nobody["overall"] == {"average": None, "letter": None}
    assert_problem(accountant.get(f"/students/{me}/results?term_id={t}"), 403)


def test_guardian_sees_own_child_results_not_others(guardian, demo, gb):
    ok(guardian.get(f"/students/{demo['demo_sibling_student_id']}/results?term_id={gb['term']}"))
    other = next(s for s in gb["students"] if s != demo["demo_student_id"])
    assert_problem(guardian.get(f"/students/{other}/results?term_id={gb['term']}"), 404)
    assert_problem(guardian.get(f"/students/{other}/report-card?term_id={gb['term']}"), 404)


def test_results_query_parameters(admin, demo, gb):
    me = demo["demo_student_id"]
    assert_problem(admin.get(f"/students/{me}/results"), 422, "term_id")
    assert_problem(admin.get(f"/students/{me}/results?term_id=abc"), 422, "term_id")
    assert_problem(admin.get(f"/students/{me}/results?term_id=999999999"), 422, "term_id")
    assert_problem(admin.get(f"/students/{me}/results?term_id={gb['term']}&colour=red"), 422, "colour")
    assert_problem(admin.get(f"/students/999999999/results?term_id={gb['term']}"), 404)


def test_all_zero_weights_fall_back_to_a_plain_mean(admin, demo, gb):
    zero = new_type(admin, "GB Practice", "0")
    me = demo["demo_student_id"]
    ok(put_grades(admin, new_assessment(admin, gb["mine"], gb["term"], zero, "10"), rows((me, "5"))))
    ok(put_grades(admin, new_assessment(admin, gb["mine"], gb["term"], zero, "10"), rows((me, "8"))))
    body = ok(admin.get(f"/students/{me}/results?term_id={gb['term']}"))
    assert body["subjects"][0]["average"] == "65.0"


# --- ranking ---------------------------------------------------------------------------------------


def test_class_ranking_shares_positions_on_ties(admin, teacher, guardian, demo, gb):
    a, b, c, d, e = gb["students"][:5]
    aid = new_assessment(teacher, gb["mine"], gb["term"], gb["exam"], "100")
    # c's 80.04 is shown as 80.0, like b's: they share second place, and d is fourth
    ok(put_grades(teacher, aid, rows((a, "90"), (b, "80"), (c, "80.04"), (d, "70"), (e, "70"))))
    body = ok(teacher.get(f"/classes/{demo['demo_class_id']}/ranking?term_id={gb['term']}"))
    RankingOut.model_validate(body)
    ranked = [(r["student_id"], r["position"], r["average"], r["letter"]) for r in body["data"][:5]]
    assert ranked[0] == (a, 1, "90.0", "A")
    assert {x[0] for x in ranked[1:3]} == {b, c} and [x[1:] for x in ranked[1:3]] == [(2, "80.0", "A")] * 2
    assert {x[0] for x in ranked[3:5]} == {d, e} and [x[1:] for x in ranked[3:5]] == [(4, "70.0", "B")] * 2
    # the rest of the class has no grades this term: listed last, without a position
    assert body["class_size"] == len(gb["students"]) == len(body["data"])
    assert all(r["position"] is None and r["average"] is None for r in body["data"][5:])

    assert_problem(teacher.get(f"/classes/{demo['other_class_id']}/ranking?term_id={gb['term']}"), 404)
    assert_problem(guardian.get(f"/classes/{demo['demo_class_id']}/ranking?term_id={gb['term']}"), 403)
    assert_problem(admin.get(f"/classes/{demo['demo_class_id']}/ranking"), 422, "term_id")


# --- report cards ----------------------------------------------------------------------------------


def _mark_attendance(demo, student_id, marks):
    for day, status in marks:
        db.session.add(
            AttendanceRecord(
                institution_id=demo["demo_institution_id"],
                student_id=student_id,
                class_id=demo["demo_class_id"],
                period=0,
                date=day,
                status=status,
            )
        )
    db.session.flush()


def test_report_card_fields(admin, teacher, guardian, accountant, demo, gb):
    me = demo["demo_student_id"]
    other = next(s for s in gb["students"] if s != me)
    t = gb["term"]
    maths = new_assessment(teacher, gb["mine"], t, gb["exam"], "50")
    ok(put_grades(teacher, maths, rows((me, "40"), (other, "45"))))  # 80 % and 90 %: second of two graded
    _mark_attendance(
        demo,
        me,
        [
            (TERM_START, "present"),
            (TERM_START + timedelta(days=1), "present"),
            (TERM_START + timedelta(days=2), "present"),
            (TERM_START + timedelta(days=3), "absent"),
            (TERM_START + timedelta(days=4), "late"),
            (TERM_END + timedelta(days=1), "absent"),
        ],
    )  # after the term: not counted

    card = ok(guardian.get(f"/students/{me}/report-card?term_id={t}"))
    ReportCardOut.model_validate(card)
    profile = ok(admin.get(f"/students/{me}"))
    assert card["student"] == {
        "id": me,
        "first_name": profile["first_name"],
        "last_name": profile["last_name"],
        "admission_number": profile["admission_number"],
    }
    klass = ok(admin.get(f"/classes/{demo['demo_class_id']}"))
    assert card["class"] == {"id": klass["id"], "name": klass["name"]}
    assert card["term"] == {
        "id": t,
        "name": "Gradebook term",
        "start_date": TERM_START.isoformat(),
        "end_date": TERM_END.isoformat(),
    }
    tutor = ok(admin.get(f"/teachers/{demo['demo_teacher_id']}"))
    assert [(s["average"], s["letter"], s["teacher_name"]) for s in card["subjects"]] == [
        ("80.0", "A", f"{tutor['first_name']} {tutor['last_name']}")
    ]
    assert card["overall"] == {"average": "80.0", "letter": "A"}
    assert card["position"] == 2 and card["class_size"] == len(gb["students"])
    assert card["attendance"] == {"present": 3, "absent": 1, "late": 1, "excused": 0, "total": 5}

    assert ok(teacher.get(f"/students/{me}/report-card?term_id={t}"))["position"] == 2
    assert_problem(accountant.get(f"/students/{me}/report-card?term_id={t}"), 403)


def test_class_report_cards_take_a_constant_number_of_queries(app, admin, teacher, demo, gb):
    aid = new_assessment(teacher, gb["mine"], gb["term"], gb["exam"], "20")
    ok(
        put_grades(
            teacher, aid, [{"student_id": s, "score": str(10 + i % 10)} for i, s in enumerate(gb["students"])]
        )
    )
    statements = []

    def count(_conn, _cursor, statement, *_args):
        if not statement.startswith("SAVEPOINT"):  # the test harness's, not the service's
            statements.append(statement)

    engine = db.session.get_bind().engine
    g.institution_id = demo["demo_institution_id"]
    event.listen(engine, "before_cursor_execute", count)
    try:
        cards = services.report_cards_for_class(demo["demo_class_id"], gb["term"])
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # term, class, institution, roster, grades, attendance (open days only), remarks
    assert len(cards) == len(gb["students"]) and len(statements) <= 7, statements
    assert [c["position"] for c in cards] == sorted(c["position"] for c in cards)
    one = services.report_card(demo["demo_student_id"], gb["term"])
    assert one == next(c for c in cards if c["student"]["id"] == demo["demo_student_id"])


# --- the embedded default (SQLite) -----------------------------------------------------------------

SQLITE_SCRIPT = textwrap.dedent("""
    import json
    from flask_migrate import upgrade
    from app import create_app
    from app.seed import seed_demo

    app = create_app()
    with app.app_context():
        upgrade()
        demo = seed_demo("embedded-pass-1")
    c = app.test_client()
    token = c.post("/api/v1/auth/login", json={"email": "teacher@demo-academy.test",
                                               "password": "embedded-pass-1"}).get_json()["access_token"]
    h = {"Authorization": "Bearer " + token}
    cs = next(x["id"] for x in c.get("/api/v1/class-subjects?class_id=%d" % demo["demo_class_id"], headers=h)
              .get_json()["data"] if x["teacher_id"] == demo["demo_teacher_id"])
    term = c.get("/api/v1/terms/%d" % demo["demo_current_term_id"], headers=h).get_json()
    kind = c.get("/api/v1/assessment-types", headers=h).get_json()["data"][0]["id"]
    aid = c.post("/api/v1/assessments", headers=h, json={
        "class_subject_id": cs, "term_id": term["id"], "assessment_type_id": kind, "title": "T",
        "max_score": "20", "date": term["start_date"]}).get_json()["id"]
    kids = [s["id"] for s in c.get("/api/v1/classes/%d/students?limit=3" % demo["demo_class_id"], headers=h)
            .get_json()["data"]]
    rows = [{"student_id": s, "score": str(10 + i)} for i, s in enumerate(kids)]
    out = []
    for body in (rows, rows, [dict(rows[0], score="19.5")] + rows[1:]):
        out.append(c.put("/api/v1/assessments/%d/grades" % aid, headers=h, json={"grades": body}).get_json()["counts"])
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow  # starts a subprocess
def test_bulk_upsert_works_on_the_embedded_sqlite_default(tmp_path):
    assert run_embedded(SQLITE_SCRIPT, tmp_path) == [
        {"created": 3, "updated": 0, "unchanged": 0},
        {"created": 0, "updated": 0, "unchanged": 3},
        {"created": 0, "updated": 1, "unchanged": 2},
    ]
