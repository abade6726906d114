"""Timetable rules: a bell schedule without overlaps, lessons without double bookings, a person's day,
a week's grid (exports), and the check a period roll makes (app/attendance/services.py save_roll).

A double booking is the same teacher, room or class in two lessons of one period (a period is one
weekday's slot) whose date ranges overlap. Every database runs the check here; on PostgreSQL the
exclusion constraints of migration 0011_timetable also hold it when two writers race (the second one
waits for the first and then fails; its error is turned into the same 409). SQLite has no exclusion
constraints, so a lesson write there first takes SQLite's write lock (`_serialise_writes`): a second
writer waits until the first has committed, and its check then sees the first one's lesson.
"""

from dataclasses import dataclass
from datetime import date, time, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from app.academics.models import AcademicYear, ClassSubject, Enrolment, SchoolClass, Subject
from app.audit import services as audit
from app.core.conflicts import clash_message
from app.core.errors import Conflict, ValidationFailed
from app.extensions import db
from app.people.models import Student, Teacher
from app.timetable.models import WEEKDAYS, Lesson, Period, Room

# The exclusion constraints of migration 0011_timetable, by what they keep apart.
EXCLUSIONS = {
    "ex_lessons_teacher_slot": "teacher",
    "ex_lessons_room_slot": "room",
    "ex_lessons_class_slot": "class",
}
EXCLUSION_VIOLATION = "23P01"  # PostgreSQL's SQLSTATE


def clock(value: time) -> str:
    return value.strftime("%H:%M")


def period_out(p: Period) -> dict:
    return {
        "id": p.id,
        "weekday": p.weekday,
        "number": p.number,
        "name": p.name,
        "starts_at": clock(p.starts_at),
        "ends_at": clock(p.ends_at),
    }


def _period_label(weekday, number, name, starts, ends) -> str:
    return f"{WEEKDAYS[weekday]} period {number} ({name}, {clock(starts)}-{clock(ends)})"


# --- the bell schedule -----------------------------------------------------------------------------------


def _check_period_times(weekday, starts, ends, exclude_id=None):
    """Periods of one weekday do not overlap in time (a lesson's slot is its period)."""
    if ends <= starts:
        raise ValidationFailed({"ends_at": "must be after starts_at"})
    stmt = select(Period).where(Period.weekday == weekday, Period.starts_at < ends, Period.ends_at > starts)
    if exclude_id is not None:
        stmt = stmt.where(Period.id != exclude_id)
    other = db.session.execute(stmt.order_by(Period.starts_at).limit(1)).scalar()
    if other is not None:
        raise Conflict(
            f"{clock(starts)}-{clock(ends)} overlaps {_period_label(other.weekday, other.number, other.name, other.starts_at, other.ends_at)} "
            f"(period {other.id}).",
            errors={"starts_at": f"overlaps period {other.id} ({other.name})"},
        )


def create_period(values: dict) -> Period:
    _check_period_times(values["weekday"], values["starts_at"], values["ends_at"])
    period = Period(**values)
    db.session.add(period)
    db.session.flush()
    audit.record("create", "period", period.id, audit.snapshot(period, tuple(values)))
    return period


def update_period(period: Period, values: dict):
    starts = values.get("starts_at", period.starts_at)
    ends = values.get("ends_at", period.ends_at)
    _check_period_times(period.weekday, starts, ends, exclude_id=period.id)
    audit.apply_update(period, values, "period")


# --- lessons ---------------------------------------------------------------------------------------------


@dataclass
class Slot:
    """A lesson with the names a timetable shows (one row of `_slots`)."""

    lesson_id: int
    period_id: int
    weekday: int
    period_number: int
    period_name: str
    starts: time
    ends: time
    class_id: int
    class_name: str
    subject_id: int
    subject_name: str
    teacher_id: int
    teacher_name: str
    room_id: int | None
    room_name: str | None
    start_date: date
    end_date: date

    def out(self) -> dict:
        return {
            "lesson_id": self.lesson_id,
            "period_id": self.period_id,
            "period_number": self.period_number,
            "period_name": self.period_name,
            "starts_at": clock(self.starts),
            "ends_at": clock(self.ends),
            "class_id": self.class_id,
            "class_name": self.class_name,
            "subject_id": self.subject_id,
            "subject_name": self.subject_name,
            "teacher_id": self.teacher_id,
            "teacher_name": self.teacher_name,
            "room_id": self.room_id,
            "room_name": self.room_name,
        }

    def describe(self) -> str:
        room = f" in {self.room_name}" if self.room_name else ""
        label = _period_label(self.weekday, self.period_number, self.period_name, self.starts, self.ends)
        return (
            f"{self.class_name} {self.subject_name} with {self.teacher_name}{room}, {label}, "
            f"{self.start_date.isoformat()} to {self.end_date.isoformat()}"
        )


def _slots(*where, live_only=True):
    """Lessons with their names, ordered by the start of their period (one statement)."""
    stmt = (
        select(
            Lesson.id,
            Lesson.period_id,
            Period.weekday,
            Period.number,
            Period.name,
            Period.starts_at,
            Period.ends_at,
            Lesson.class_id,
            SchoolClass.name,
            Lesson.subject_id,
            Subject.name,
            Lesson.teacher_id,
            (Teacher.first_name + " " + Teacher.last_name),
            Lesson.room_id,
            Room.name,
            Lesson.start_date,
            Lesson.end_date,
        )
        .join(Period, Period.id == Lesson.period_id)
        .join(SchoolClass, SchoolClass.id == Lesson.class_id)
        .join(Subject, Subject.id == Lesson.subject_id)
        .join(Teacher, Teacher.id == Lesson.teacher_id)
        .outerjoin(Room, Room.id == Lesson.room_id)
        .where(*where)
        .order_by(Period.weekday, Period.starts_at, SchoolClass.name, Lesson.id)
    )
    if live_only:
        stmt = stmt.where(SchoolClass.deleted_at.is_(None), Teacher.deleted_at.is_(None))
    return [Slot(*row) for row in db.session.execute(stmt)]


def valid_on(day: date):
    return and_(Lesson.start_date <= day, Lesson.end_date >= day)


def _serialise_writes():
    """SQLite: take the database's write lock now, before the clash check reads (see the module's
    docstring). PostgreSQL needs nothing here: its exclusion constraints settle a race."""
    if db.session.connection().dialect.name == "sqlite":
        db.session.execute(update(Lesson).where(Lesson.id == -1).values(weekday=Lesson.weekday))


def _clashing(values: dict, exclude_id=None) -> list[tuple[Slot, list[str]]]:
    """The lessons that would share a teacher, room or class with `values` in its slot and dates."""
    same = [Lesson.teacher_id == values["teacher_id"], Lesson.class_id == values["class_id"]]
    if values.get("room_id") is not None:
        same.append(Lesson.room_id == values["room_id"])
    where = [
        Lesson.period_id == values["period_id"],
        Lesson.start_date <= values["end_date"],
        Lesson.end_date >= values["start_date"],
        or_(*same),
    ]
    if exclude_id is not None:
        where.append(Lesson.id != exclude_id)
    found = []
    for slot in _slots(*where, live_only=False):
        on = [
            what
            for what, mine, theirs in (
                ("teacher", values["teacher_id"], slot.teacher_id),
                ("room", values.get("room_id"), slot.room_id),
                ("class", values["class_id"], slot.class_id),
            )
            if mine is not None and mine == theirs
        ]
        found.append((slot, on))
    return found


def _describe_values(values: dict) -> str:
    names = db.session.execute(
        select(SchoolClass.name, Subject.name, Teacher.first_name + " " + Teacher.last_name)
        .select_from(SchoolClass)
        .join(Subject, Subject.id == values["subject_id"])
        .join(Teacher, Teacher.id == values["teacher_id"])
        .where(SchoolClass.id == values["class_id"])
    ).one()
    period = db.session.get(Period, values["period_id"])
    room = db.session.get(Room, values["room_id"]) if values.get("room_id") else None
    where = f" in {room.name}" if room else ""
    label = _period_label(period.weekday, period.number, period.name, period.starts_at, period.ends_at)
    return (
        f"{names[0]} {names[1]} with {names[2]}{where}, {label}, "
        f"{values['start_date'].isoformat()} to {values['end_date'].isoformat()}"
    )


FIELD_OF = {"teacher": "teacher_id", "room": "room_id", "class": "class_subject_id"}


def _clash_problem(values: dict, lesson_id, clashes) -> Conflict:
    """A 409 naming both lessons: the one being written (its id when it exists) and each it clashes with."""
    mine = _describe_values(values)
    name = f"lesson {lesson_id}" if lesson_id is not None else "the new lesson"
    parts, errors = [], {}
    for slot, on in clashes:
        what = " and ".join(on)
        parts.append(f"lesson {slot.lesson_id} ({slot.describe()}) has the same {what}")
        for item in on:
            errors.setdefault(
                FIELD_OF[item], f"{item} already booked by lesson {slot.lesson_id} in this period"
            )
    detail = f"Double booking: {name} ({mine}) clashes in its period: " + "; ".join(parts) + "."
    return Conflict(
        detail,
        errors=errors,
        extra={
            "lesson": {"id": lesson_id, "description": mine},
            "clashes": [
                {"lesson_id": slot.lesson_id, "on": on, "description": slot.describe()}
                for slot, on in clashes
            ],
        },
    )


def _refs(values: dict, class_subject: ClassSubject | None = None) -> dict:
    """Checks the referenced records (the caller's school's, live) and completes the values: class and
    subject from the class subject, weekday from the period, dates defaulting to the class's year."""
    errors = {}
    if class_subject is None:
        class_subject = db.session.execute(
            select(ClassSubject)
            .join(SchoolClass, SchoolClass.id == ClassSubject.class_id)
            .where(ClassSubject.id == values["class_subject_id"], SchoolClass.deleted_at.is_(None))
        ).scalar_one_or_none()
        if class_subject is None:
            raise ValidationFailed(
                {"class_subject_id": f"no such class subject ({values['class_subject_id']})"}
            )
    values["class_id"], values["subject_id"] = class_subject.class_id, class_subject.subject_id
    if values.get("teacher_id") is None:
        values["teacher_id"] = class_subject.teacher_id
        if values["teacher_id"] is None:
            errors["teacher_id"] = "the class subject has no teacher: name one"
    elif (
        db.session.execute(
            select(Teacher.id).where(Teacher.id == values["teacher_id"], Teacher.deleted_at.is_(None))
        ).scalar()
        is None
    ):
        errors["teacher_id"] = f"no such teacher ({values['teacher_id']})"
    if values.get("room_id") is not None and db.session.get(Room, values["room_id"]) is None:
        errors["room_id"] = f"no such room ({values['room_id']})"
    period = db.session.execute(select(Period).where(Period.id == values["period_id"])).scalar_one_or_none()
    if period is None:
        errors["period_id"] = f"no such period ({values['period_id']})"
    else:
        values["weekday"] = period.weekday
    year = db.session.execute(
        select(AcademicYear.start_date, AcademicYear.end_date)
        .join(SchoolClass, SchoolClass.academic_year_id == AcademicYear.id)
        .where(SchoolClass.id == values["class_id"])
    ).one()
    values["start_date"] = values.get("start_date") or year.start_date
    values["end_date"] = values.get("end_date") or year.end_date
    for name in ("start_date", "end_date"):
        if not year.start_date <= values[name] <= year.end_date:
            errors[name] = (
                f"must be in the class's year ({year.start_date.isoformat()} to {year.end_date.isoformat()})"
            )
    if values["end_date"] < values["start_date"]:
        errors.setdefault("end_date", "must not be before start_date")
    if errors:
        raise ValidationFailed(errors)
    return values


def _write(values: dict, lesson: Lesson | None, apply):
    """The clash check, then the write; a race lost on PostgreSQL's constraint is the same 409."""
    _serialise_writes()
    exclude = lesson.id if lesson is not None else None
    clashes = _clashing(values, exclude)
    if clashes:
        raise _clash_problem(values, exclude, clashes)
    try:
        with db.session.begin_nested():
            result = apply()
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
        if getattr(exc.orig, "pgcode", None) != EXCLUSION_VIOLATION or constraint not in EXCLUSIONS:
            message = clash_message(exc)
            if message is None:
                raise
            raise Conflict(message) from None
        # Another writer committed a clashing lesson after our check: name it (it is visible now).
        clashes = _clashing(values, exclude)
        if clashes:
            raise _clash_problem(values, exclude, clashes) from None
        raise Conflict(
            f"The lesson clashes with another in its period (same {EXCLUSIONS[constraint]})."
        ) from None
    return result


LESSON_FIELDS = (
    "class_subject_id",
    "class_id",
    "subject_id",
    "teacher_id",
    "room_id",
    "period_id",
    "weekday",
    "start_date",
    "end_date",
)


def create_lesson(body: dict) -> Lesson:
    values = _refs(dict(body))

    def insert():
        lesson = Lesson(**{k: values.get(k) for k in LESSON_FIELDS})
        db.session.add(lesson)
        db.session.flush()
        return lesson

    lesson = _write(values, None, insert)
    audit.record("create", "lesson", lesson.id, audit.snapshot(lesson, LESSON_FIELDS))
    return lesson


def update_lesson(lesson: Lesson, changes: dict):
    class_subject = db.session.get(ClassSubject, lesson.class_subject_id)
    values = {k: getattr(lesson, k) for k in LESSON_FIELDS}
    values.update(changes)
    if "teacher_id" not in changes:  # keep the lesson's own teacher (not the class subject's default)
        values["teacher_id"] = lesson.teacher_id
    values = _refs(values, class_subject)
    new = {k: values[k] for k in LESSON_FIELDS if values[k] != getattr(lesson, k)}

    def apply():
        audit.apply_update(lesson, new, "lesson")
        db.session.flush()

    _write(values, lesson, apply)


# --- a person's day, a week's grid -----------------------------------------------------------------------


def teacher_day(teacher_id, day: date) -> list[Slot]:
    return _slots(Lesson.teacher_id == teacher_id, Lesson.weekday == day.weekday(), valid_on(day))


def class_day(class_id, day: date) -> list[Slot]:
    return _slots(Lesson.class_id == class_id, Lesson.weekday == day.weekday(), valid_on(day))


def class_of(student_id, day: date) -> int | None:
    """The live class a student is enrolled in on `day`."""
    return db.session.execute(
        select(Enrolment.class_id)
        .join(SchoolClass, SchoolClass.id == Enrolment.class_id)
        .where(
            Enrolment.student_id == student_id,
            Enrolment.start_date <= day,
            or_(Enrolment.end_date.is_(None), Enrolment.end_date >= day),
            SchoolClass.deleted_at.is_(None),
        )
        .order_by(Enrolment.start_date.desc())
        .limit(1)
    ).scalar()


def my_day(principal, day: date, student_ids: list[int]) -> dict:
    """The caller's day: a teacher's lessons, or each student's (a student themself, a guardian's
    children, in name order) class lessons, ordered by the start of the period."""
    timetables = []
    if principal.role == "teacher":
        teacher = db.session.execute(
            select(Teacher).where(Teacher.id == (principal.teacher_id or -1), Teacher.deleted_at.is_(None))
        ).scalar_one_or_none()
        if teacher is not None:
            timetables.append(
                {
                    "role": "teacher",
                    "person_id": teacher.id,
                    "name": f"{teacher.first_name} {teacher.last_name}",
                    "class_id": None,
                    "lessons": [s.out() for s in teacher_day(teacher.id, day)],
                }
            )
    else:
        students = db.session.execute(
            select(Student.id, Student.first_name, Student.last_name)
            .where(Student.id.in_(student_ids or [-1]), Student.deleted_at.is_(None))
            .order_by(Student.first_name, Student.last_name, Student.id)
        ).all()
        for sid, first, last in students:
            class_id = class_of(sid, day)
            timetables.append(
                {
                    "role": "student",
                    "person_id": sid,
                    "name": f"{first} {last}",
                    "class_id": class_id,
                    "lessons": [s.out() for s in class_day(class_id, day)] if class_id else [],
                }
            )
    return {
        "date": day,
        "weekday": day.weekday(),
        "weekday_name": WEEKDAYS[day.weekday()],
        "timetables": timetables,
    }


def week_of(day: date) -> list[date]:
    monday = day - timedelta(days=day.weekday())
    return [monday + timedelta(days=n) for n in range(7)]


def week_grid(day: date, *, class_id=None, teacher_id=None):
    """The week holding `day` as a grid: one row per period number, one column per weekday that has
    periods; each cell the lesson valid on that weekday's date. Returns (weekdays, rows) where a row is
    (number, times, {weekday: Slot})."""
    dates = week_of(day)
    periods = db.session.execute(
        select(Period.weekday, Period.number, Period.starts_at, Period.ends_at).order_by(
            Period.number, Period.weekday
        )
    ).all()
    weekdays = sorted({p.weekday for p in periods})
    who = Lesson.class_id == class_id if class_id is not None else Lesson.teacher_id == teacher_id
    cells: dict[tuple, Slot] = {}
    for slot in _slots(who, Lesson.start_date <= dates[-1], Lesson.end_date >= dates[0]):
        if slot.start_date <= dates[slot.weekday] <= slot.end_date:
            cells[(slot.period_number, slot.weekday)] = slot
    rows = []
    for number in sorted({p.number for p in periods}):
        times = sorted({f"{clock(p.starts_at)}-{clock(p.ends_at)}" for p in periods if p.number == number})
        rows.append((number, " / ".join(times), {w: cells.get((number, w)) for w in weekdays}))
    return weekdays, rows


# --- the check a period roll makes -----------------------------------------------------------------------


def check_roll_period(class_id: int, day: date, number: int, subject_id, errors: dict):
    """A roll for period N (N > 0) on `day` is for the class's lesson in period N of that weekday.

    When the school's bell schedule has periods on that weekday, period N must be one of them and the
    class must have a lesson in it on that date (and a roll naming a subject must name that lesson's);
    otherwise the roll is refused with a 422 naming `period` (or `subject_id`). A weekday without any
    period (a school that keeps no timetable, or a day its schedule does not cover) takes the number as
    given, as rolls always have."""
    if not number:
        return
    weekday = day.weekday()
    numbers = sorted(db.session.execute(select(Period.number).where(Period.weekday == weekday)).scalars())
    if not numbers:
        return
    name = WEEKDAYS[weekday]
    if number not in numbers:
        errors["period"] = (
            f"there is no period {number} on {name}s (the bell schedule has periods "
            f"{', '.join(str(n) for n in numbers)})"
        )
        return
    lessons = _slots(
        Lesson.class_id == class_id,
        Period.weekday == weekday,
        Period.number == number,
        valid_on(day),
        live_only=False,
    )
    if not lessons:
        errors["period"] = f"the class has no lesson in period {number} on {name} {day.isoformat()}"
        return
    if subject_id is not None and all(s.subject_id != subject_id for s in lessons):
        errors["subject_id"] = (
            f"period {number} on {name} {day.isoformat()} is the class's "
            f"{lessons[0].subject_name} lesson (subject {lessons[0].subject_id}), not subject {subject_id}"
        )
