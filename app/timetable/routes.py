"""Periods, rooms, lessons and the caller's day: parse, call a service, serialise."""

from flask import Blueprint, g, jsonify
from sqlalchemy.exc import IntegrityError

from app.access.rules import MY_TIMETABLE, TIMETABLE, own_student_ids, scope_timetable
from app.core.auth import roles
from app.core.crud import CONFLICTS, Resource, audit_trail, commit_or_conflict
from app.core.errors import Conflict
from app.core.openapi import doc
from app.core.pagination import Filter, ListSpec
from app.core.queryargs import DATE, Param, QueryArgs
from app.core.schemas import parse_body
from app.extensions import db
from app.institutions.calendar import school_today
from app.timetable import services
from app.timetable.models import Lesson, Period, Room
from app.timetable.schemas import (
    LessonCreate,
    LessonOut,
    LessonUpdate,
    MyTimetableOut,
    PeriodCreate,
    PeriodOut,
    PeriodUpdate,
    RoomCreate,
    RoomOut,
    RoomUpdate,
)

bp = Blueprint("timetable", __name__)

CONFLICTS.update(
    {
        "uq_periods_institution_weekday_number": "This weekday already has a period with this number.",
        "uq_rooms_institution_name": "A room with this name already exists.",
    }
)
CLASS_READERS = ("enrolments", "student_guardians", "classes", "students")

periods = Resource(
    "period",
    "/periods",
    Period,
    PeriodOut,
    ListSpec(
        Period.id,
        filters={"weekday": Period.weekday, "number": Period.number},
        sorts={"weekday": Period.weekday, "number": Period.number},
    ),
    serialize=services.period_out,
).register(bp)
rooms = Resource(
    "room",
    "/rooms",
    Room,
    RoomOut,
    ListSpec(Room.id, filters={"name": Room.name}, sorts={"name": Room.name}, search=(Room.name,)),
    create=RoomCreate,
    update=RoomUpdate,
).register(bp)
lessons = Resource(
    "lesson",
    "/lessons",
    Lesson,
    LessonOut,
    ListSpec(
        Lesson.id,
        filters={
            "class_id": Lesson.class_id,
            "teacher_id": Lesson.teacher_id,
            "room_id": Lesson.room_id,
            "period_id": Lesson.period_id,
            "subject_id": Lesson.subject_id,
            "class_subject_id": Lesson.class_subject_id,
            "weekday": Lesson.weekday,
            "on": Filter(DATE, lambda s, day: s.where(services.valid_on(day))),
        },
        sorts={"weekday": Lesson.weekday, "start_date": Lesson.start_date},
    ),
    scope=lambda stmt, p: scope_timetable(stmt, p, Lesson.class_id),
    reach=TIMETABLE,
    cache_tables=("periods", *CLASS_READERS),
).register(bp)


def _delete(resource, ident):
    obj = resource.get_or_404(ident)
    db.session.delete(obj)
    try:
        db.session.flush()  # a period or room that lessons use is refused here, before the audit insert
    except IntegrityError:
        db.session.rollback()
        raise Conflict(f"This {resource.name} is still used by lessons; end or move them first.") from None
    audit_trail().record("delete", resource.name, ident)
    commit_or_conflict()
    return "", 204


# --- the bell schedule -----------------------------------------------------------------------------------


@bp.post("/periods")
@roles("admin", reach=periods.reach)
@doc(
    "Add a period to the bell schedule of a weekday",
    body=PeriodCreate,
    out=PeriodOut,
    status=201,
    tags=["periods"],
)
def create_period():
    body = parse_body(PeriodCreate)
    period = services.create_period(body.times())
    commit_or_conflict()
    return jsonify(services.period_out(period)), 201


@bp.patch("/periods/<int:ident>")
@roles("admin", reach=periods.reach)
@doc(
    "Change a period (its name, number or times; not its weekday)",
    body=PeriodUpdate,
    out=PeriodOut,
    tags=["periods"],
)
def update_period(ident):
    period = periods.get_or_404(ident)
    body = parse_body(PeriodUpdate)
    services.update_period(period, body.times())
    commit_or_conflict()
    return jsonify(services.period_out(period))


@bp.delete("/periods/<int:ident>")
@roles("admin", reach=periods.reach)
@doc("Delete a period no lesson uses", status=204, tags=["periods"])
def delete_period(ident):
    return _delete(periods, ident)


# --- lessons ---------------------------------------------------------------------------------------------

CLASH = (
    "A teacher, room or class already booked in the period for overlapping dates is a 409 naming both "
    "lessons: `detail` in words, `lesson` (this one: id, null for a new one, and description) and "
    "`clashes` (each clashing lesson's id, what it shares: teacher, room or class, and description)."
)


@bp.post("/lessons")
@roles("admin", reach=TIMETABLE)
@doc(
    "Add a lesson to the timetable",
    body=LessonCreate,
    out=LessonOut,
    status=201,
    tags=["lessons"],
    description=CLASH,
)
def create_lesson():
    body = parse_body(LessonCreate)
    lesson = services.create_lesson(body.model_dump())
    commit_or_conflict()
    return jsonify(lessons.serialize(lesson)), 201


@bp.patch("/lessons/<int:ident>")
@roles("admin", reach=TIMETABLE)
@doc(
    "Change a lesson (teacher, room, period or dates)",
    body=LessonUpdate,
    out=LessonOut,
    tags=["lessons"],
    description=CLASH,
)
def update_lesson(ident):
    lesson = lessons.get_or_404(ident)
    body = parse_body(LessonUpdate)
    services.update_lesson(lesson, body.model_dump(exclude_unset=True))
    commit_or_conflict()
    return jsonify(lessons.serialize(lesson))


@bp.delete("/lessons/<int:ident>")
@roles("admin", reach=TIMETABLE)
@doc(
    "Delete a lesson (to keep it in past timetables, end it instead: PATCH end_date)",
    status=204,
    tags=["lessons"],
)
def delete_lesson(ident):
    return _delete(lessons, ident)


# --- the caller's day ------------------------------------------------------------------------------------

DAY_ARGS = QueryArgs(Param("date", DATE, blank_is_absent=True, description="Default: the school's today."))


@bp.get("/me/timetable")
@roles("teacher", "guardian", "student", reach=MY_TIMETABLE)
@doc(
    "The caller's lessons on a date: a teacher's own, a student's class's, a guardian's children's",
    out=MyTimetableOut,
    tags=["lessons"],
    query=DAY_ARGS,
    description="Ordered by the start of the period. A student's class is the one they are enrolled in "
    "on that date.",
)
def my_timetable():
    day = DAY_ARGS.parse()["date"] or school_today()
    p = g.principal
    students = [] if p.role == "teacher" else own_student_ids(p)
    return jsonify(services.my_day(p, day, students))
