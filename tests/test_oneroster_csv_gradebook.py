"""The gradebook files of a OneRoster CSV import (app/oneroster/csvimport.py): categories, lineItems,
results and the school's scoreScale, upserted by sourcedId through the grading services (their checks,
audit rows and cache invalidation); per-row errors, all or nothing, dry run. The round trip of a demo
school's whole bulk zip, gradebook included, is in tests/test_oneroster_csv.py."""

from datetime import date

from sqlalchemy import func, select

from app.audit.models import AuditEntry
from app.extensions import db
from app.grading.models import Assessment, AssessmentType, Grade
from app.institutions.models import Institution
from app.people.models import Student, User
from tests.test_oneroster_csv import _zip, empty_school, import_zip, in_process  # noqa: F401 - fixtures

YEAR = date.today().year
START, END = f"{YEAR}-01-01", f"{YEAR}-12-31"
DUE = date.today().isoformat()

ROSTER = {
    "academicSessions.csv": "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,"
    f"schoolYear\ny1,,,{YEAR},schoolYear,{START},{END},,{YEAR}\nt1,,,Term 1,term,{START},{END},y1,{YEAR}\n",
    "courses.csv": "sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,orgSourcedId,"
    "subjects,subjectCodes\nc1,,,,Mathematics,MATH,,o,,\n",
    "classes.csv": "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,"
    "schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods,metadata.schoolhouse.homeroomSourcedId\n"
    "h1,,,Grade 7A,07,,7A,homeroom,,o,t1,,,,\n"
    "s1,,,Mathematics 7A,07,c1,MATH-7A,scheduled,,o,t1,,,,h1\n",
    "users.csv": "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,"
    "middleName,identifier,email,sms,phone,agentSourcedIds,grades,password\n"
    "u1,,,true,u1,,Amina,Otieno,,A-1,,,,,07,\nu2,,,true,u2,,Baraka,Mwangi,,A-2,,,,,07,\n"
    "u3,,,true,u3,,Chebet,Kamau,,T-1,,,,,,\n",
    "roles.csv": "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,"
    "userProfileSourcedId\nr1,,,u1,primary,student,,,o,\nr2,,,u2,primary,student,,,o,\n"
    "r3,,,u3,primary,teacher,,,o,\n",
    "enrollments.csv": "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,"
    "primary,beginDate,endDate\ne1,,,h1,o,u1,student,false,,\ne2,,,h1,o,u2,student,false,,\n"
    "e3,,,s1,o,u3,teacher,true,,\n",
}
CATEGORIES = "sourcedId,status,dateLastModified,title,weight\ncat1,,,Exam,0.60000\ncat2,,,Quiz,0.4\n"
LINE_ITEMS = (
    "sourcedId,status,dateLastModified,title,description,assignDate,dueDate,classSourcedId,categorySourcedId,"
    "gradingPeriodSourcedId,academicSessionSourcedId,scoreScaleSourcedId,resultValueMin,resultValueMax\n"
    f"li1,,,Algebra test,,{DUE},{DUE},s1,cat1,t1,t1,,0,50\n"
    f"li2,,,Fractions quiz,,{DUE},{DUE},s1,cat2,t1,t1,,0.0,10\n"
)
RESULTS = (
    "sourcedId,status,dateLastModified,lineItemSourcedId,studentSourcedId,scoreStatus,score,textScore,"
    "scoreDate,comment\nres1,,,li1,u1,fully graded,42.5,,,good\nres2,,,li1,u2,fully graded,30,,,\n"
    "res3,,,li2,u1,fully graded,9,,,\n"
)
SCALES = (
    "sourcedId,status,dateLastModified,title,type,orgSourcedId,courseSourcedId,classSourcedId,scoreScaleValue\n"
    'sc1,,,Percentage to letter,percentage,o,,,"{75:A},{60:B},{0:C}"\n'
)


def _gradebook(**overrides):
    files = {**ROSTER, "categories.csv": CATEGORIES, "lineItems.csv": LINE_ITEMS, "results.csv": RESULTS,
             "scoreScales.csv": SCALES}  # fmt: skip
    files.update({f"{k}.csv": v for k, v in overrides.items()})
    return _zip(files)


def _count(model, iid):
    return db.session.scalar(select(func.count()).select_from(model).where(model.institution_id == iid))


def test_gradebook_rows_are_imported_through_the_grading_services(empty_school):
    iid, api = empty_school
    result = import_zip(api, _gradebook())
    assert result["errors"] == [] and result["written"] is True, result
    assert result["created"]["category"] == 2 and result["created"]["lineitem"] == 2
    assert result["created"]["result"] == 3 and result["updated"]["scoreScale"] == 1
    types = dict(db.session.execute(select(AssessmentType.name, AssessmentType.weight)
                                    .where(AssessmentType.institution_id == iid)).all())  # fmt: skip
    assert {k: float(v) for k, v in types.items()} == {"Exam": 0.6, "Quiz": 0.4}
    test = db.session.execute(select(Assessment).where(Assessment.institution_id == iid,
                                                       Assessment.title == "Algebra test")).scalar_one()  # fmt: skip
    assert float(test.max_score) == 50 and test.date.isoformat() == DUE
    grades = db.session.execute(
        select(Student.admission_number, Grade.score, Grade.comment)
        .join(Student, Student.id == Grade.student_id)
        .where(Grade.assessment_id == test.id)
    ).all()
    assert sorted((a, float(s), c) for a, s, c in grades) == [("A-1", 42.5, "good"), ("A-2", 30.0, None)]
    # the letter bands are the school's scale now; the native API reads them
    assert [b["letter"] for b in db.session.get(Institution, iid).grading_scale] == ["A", "B", "C"]
    grades_api = api.get(f"/assessments/{test.id}/grades").get_json()["data"]
    assert {g["admission_number"]: g["letter"] for g in grades_api} == {"A-1": "A", "A-2": "B"}
    # the grading services' audit rows, naming the importing admin
    admin_id = db.session.scalar(select(User.id).where(User.institution_id == iid))
    audited = db.session.execute(
        select(AuditEntry.action, AuditEntry.entity_type, AuditEntry.actor_id).where(
            AuditEntry.institution_id == iid, AuditEntry.entity_type.in_(("assessment", "grade"))
        )
    ).all()
    assert {(a, e) for a, e, _ in audited} == {("create", "assessment"), ("create", "grade")}
    assert {actor for *_, actor in audited} == {admin_id}

    # again, with a changed score: upsert by sourcedId (the same records, one grade updated)
    again = import_zip(
        api,
        _gradebook(results=RESULTS.replace("res2,,,li1,u2,fully graded,30", "res2,,,li1,u2,fully graded,35")),
    )
    assert again["errors"] == [] and again["created"] == {}, again
    assert again["updated"] == {"result": 1}, again
    assert _count(Assessment, iid) == 2 and _count(Grade, iid) == 3
    # a delta row deletes its lineItem (and its grades) through the grading service
    deleted = LINE_ITEMS.splitlines()[0] + f"\nli2,tobedeleted,{DUE}T00:00:00.000Z,,,,,,,,,,,\n"
    gone = import_zip(api, _gradebook(lineItems=deleted, results=RESULTS.splitlines()[0] + "\n"))
    assert gone["errors"] == [] and gone["deleted"] == {"lineitem": 1}, gone
    assert _count(Assessment, iid) == 1 and _count(Grade, iid) == 2


def test_bad_gradebook_rows_are_reported_each_and_nothing_is_written(empty_school):
    iid, api = empty_school
    bad = import_zip(api, _gradebook(
        categories=CATEGORIES + "cat3,,,Exam,1\ncat4,,,Homework,-1\n",
        lineItems=LINE_ITEMS + f"li3,,,No class,,{DUE},{DUE},s9,cat1,t1,t1,,0,10\n"
                               f"li4,,,No max,,{DUE},{DUE},s1,cat1,t1,t1,,5,\n",
        results=RESULTS + "res4,,,li9,u1,fully graded,3,,,\nres5,,,li1,u9,fully graded,,,,\n",
    ))  # fmt: skip
    assert bad["written"] is False and bad["created"] == {}
    got = {(e["file"], e["line"], e["field"]) for e in bad["errors"]}
    assert got == {
        ("categories.csv", 4, "title"),  # a second "Exam"
        ("categories.csv", 5, "weight"),
        ("lineItems.csv", 4, "classSourcedId"),
        ("lineItems.csv", 5, "resultValueMin"),
        ("lineItems.csv", 5, "resultValueMax"),
        ("results.csv", 5, "lineItemSourcedId"),
        ("results.csv", 6, "studentSourcedId"),
        ("results.csv", 6, "score"),
    }, bad["errors"]
    assert _count(Student, iid) == 0 and _count(AssessmentType, iid) == 0


def test_what_the_grading_services_refuse_is_a_row_error_and_nothing_is_kept(empty_school):
    iid, api = empty_school
    over = RESULTS.replace("res3,,,li2,u1,fully graded,9", "res3,,,li2,u1,fully graded,11")
    outside = LINE_ITEMS.replace(
        f"Fractions quiz,,{DUE},{DUE}", f"Fractions quiz,,{YEAR + 1}-02-01,{YEAR + 1}-02-01"
    )
    result = import_zip(api, _gradebook(results=over))
    assert result["written"] is False
    assert [(e["file"], e["line"], e["field"]) for e in result["errors"]] == [("results.csv", 4, "score")]
    assert "between 0 and 10" in result["errors"][0]["error"]
    result = import_zip(api, _gradebook(lineItems=outside))
    assert [(e["file"], e["line"], e["field"]) for e in result["errors"]][0] == (
        "lineItems.csv",
        3,
        "dueDate",
    )
    # all or nothing: not even the roster rows of the file
    assert _count(Student, iid) == 0 and _count(Assessment, iid) == 0 and _count(AssessmentType, iid) == 0


def test_a_gradebook_dry_run_writes_nothing(empty_school):
    iid, api = empty_school
    scale_before = db.session.get(Institution, iid).grading_scale
    dry = import_zip(api, _gradebook(), dry_run=True)
    assert dry["errors"] == [] and dry["written"] is False
    assert dry["created"]["lineitem"] == 2 and dry["created"]["result"] == 3
    db.session.expire_all()
    assert _count(Assessment, iid) == 0 and _count(Grade, iid) == 0 and _count(AssessmentType, iid) == 0
    assert db.session.get(Institution, iid).grading_scale == scale_before
