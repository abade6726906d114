"""What each export kind contains, and how a table is written as CSV, XLSX or PDF.

A kind builds a *source*: headers, a type per column, a row estimate and the rows. SQL tables stream
(memory stays flat however many rows): on PostgreSQL through `COPY (query) TO STDOUT` — for CSV the
rows go straight into the file, for XLSX PostgreSQL renders each row as worksheet XML and Python only
zips it (bench/export_bench.py: about 6x XlsxWriter's constant_memory mode); elsewhere (SQLite) from a
server-side cursor, written in Python. Grids (the attendance register, the gradebook) are pivoted in
Python from a constant number of queries.

Column types: text, int, number, decimal (Decimal or decimal string), money (integer minor units),
date, datetime (written in UTC). CSV text is guarded against formula injection (the rule is at
app/core/csvtext.py); XLSX text is written exactly; imports store text as given.

Every query here names the institution explicitly: COPY runs SQL text that the ORM's tenant scoping
never sees, so the filter must be in the statement itself.
"""

import calendar
import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from decimal import Decimal

from sqlalchemy import Numeric, Text, and_, case, cast, func, literal, or_, select
from sqlalchemy.orm import aliased

from app.academics.models import ClassSubject, Enrolment, SchoolClass, Subject, Term
from app.attendance.models import STATUSES, AttendanceRecord
from app.attendance.services import rate
from app.audit.models import AuditEntry
from app.core.csvtext import FORMULA_START, PLAIN_NUMBER, csv_text
from app.core.tenancy import current_institution_id
from app.extensions import db
from app.finance.models import Invoice, Payment
from app.finance.services import statement
from app.grading import services as grading
from app.grading.models import Assessment, Grade
from app.institutions.calendar import day_start, school_today
from app.jobs import schemas as params
from app.jobs.xlsx import DATE, DATETIME, MAX_CHARS, MONEY, XlsxStream
from app.oneroster import csvexport
from app.people.models import Guardian, Student, StudentGuardian, Teacher, User
from app.timetable.models import WEEKDAYS
from app.timetable.services import week_grid

BOM = "\ufeff".encode()  # Excel opens UTF-8 CSV correctly only with it
FETCH = 5000  # rows per server-side cursor fetch

# Formula injection: the rule (csv_text) is in app/core/csvtext.py, shared with the OneRoster CSV
# binding; its SQL twin for COPY is _csv_text_sql below. XLSX needs none of it: its text cells are inline
# strings, never evaluated, written exactly as stored (app/jobs/xlsx.py).
QUOTED_KINDS = frozenset({"text", "date", "datetime"})


def _csv_text_sql(e):
    risky = and_(func.left(e, 1).in_(FORMULA_START), e.op("!~", is_comparison=True)(f"^({PLAIN_NUMBER})$"))
    return case((risky, literal("'") + e), else_=e)


@dataclass
class Col:
    header: str
    expr: object = None
    kind: str = "text"


@dataclass
class Table:
    """A SQL export: columns over a base statement (joins, filters, order)."""

    title: str
    cols: list
    base: object  # a Select with FROMs/WHERE/ORDER BY; columns come from `cols`
    count_base: object = None

    @property
    def headers(self):
        return [c.header for c in self.cols]

    @property
    def kinds(self):
        return [c.kind for c in self.cols]

    def statement(self):
        return self.base.with_only_columns(
            *[c.expr.label(f"c{i}") for i, c in enumerate(self.cols)], maintain_column_froms=True
        )

    def estimate(self):
        base = self.count_base if self.count_base is not None else self.base.order_by(None)
        return db.session.execute(
            select(func.count()).select_from(
                base.with_only_columns(literal(1), maintain_column_froms=True).subquery()
            )
        ).scalar_one()

    def rows(self):
        result = db.session.execute(self.statement(), execution_options={"yield_per": FETCH})
        for partition in result.partitions():
            yield from partition

    def copy_sql(self, dialect):
        """The same query for COPY: text neutralised, money and times formatted, all in SQL."""
        exprs = []
        for _i, c in enumerate(self.cols):
            e = c.expr
            if c.kind == "text":
                e = _csv_text_sql(e)
            elif c.kind == "money":
                e = func.round(cast(e, Numeric()) / 100, 2)
            elif c.kind == "datetime":
                e = func.to_char(func.timezone("UTC", e), 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            exprs.append(e.label(c.header))
        stmt = self.base.with_only_columns(*exprs, maintain_column_froms=True)
        return stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})

    def xlsx_copy_sql(self, dialect):
        """The same query, each row already a worksheet <row> (cells in column order, no references):
        PostgreSQL formats and escapes, Python only zips (see write_xlsx)."""
        row = (
            literal("<row>")
            + func.concat(*[_xml_cell(c.expr, c.kind) for c in self.cols])
            + literal("</row>")
        )
        stmt = self.base.with_only_columns(row.label("x"), maintain_column_froms=True)
        return stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})


# XML 1.0 forbids these; Excel writes them as _xHHHH_ (app/jobs/xlsx.py does the same in Python)
_CONTROL = [c for c in range(1, 32) if c not in (9, 10, 13)]


def _xml_text(v):
    """Text as XML character data that COPY's text format passes through untouched. Built so each
    input is evaluated at most twice (PostgreSQL does not share repeated subexpressions): _x escaped
    for Excel, control characters as _xHHHH_, & < > escaped, and the characters COPY would
    backslash-escape (\\, tab, LF, CR) written as character references."""
    u = func.replace(v, "_x", "_x005F_x")
    slow = u
    for c in _CONTROL:
        slow = func.replace(slow, chr(c), f"_x{c:04X}_")
    e = case((u.op("~")("[\x01-\x08\x0b\x0c\x0e-\x1f]"), slow), else_=u)
    for char, ref in (
        ("&", "&amp;"),
        ("<", "&lt;"),
        (">", "&gt;"),
        ("\\", "&#92;"),
        ("\t", "&#9;"),
        ("\n", "&#10;"),
        ("\r", "&#13;"),
    ):
        e = func.replace(e, char, ref)
    # most text needs none of it: one regex test, and the plain value
    return case((v.op("~")("[&<>" + "\\\\" + "\x01-\x1f]|_x"), e), else_=v)


def _xml_cell(e, kind):
    """One <c> of the sheet for a SQL value; NULL is an empty <c/> (cells are positional)."""
    if kind == "text":
        v = func.left(e, MAX_CHARS)
        # always xml:space="preserve": cheaper than testing for edge whitespace, and equally valid
        body = (
            literal('<c t="inlineStr"><is><t xml:space="preserve">') + _xml_text(v) + literal("</t></is></c>")
        )
    elif kind == "money":
        body = (
            literal(f'<c s="{MONEY}"><v>')
            + cast(func.round(cast(e, Numeric()) / 100, 2), Text)
            + literal("</v></c>")
        )
    elif kind == "date":
        body = (
            literal(f'<c s="{DATE}"><v>') + cast(e - literal(date(1899, 12, 30)), Text) + literal("</v></c>")
        )
    elif kind == "datetime":
        serial = func.round(cast(func.date_part("epoch", e) / 86400 + 25569, Numeric()), 8)
        body = literal(f'<c s="{DATETIME}"><v>') + cast(serial, Text) + literal("</v></c>")
    else:  # int, number, decimal
        body = literal("<c><v>") + cast(e, Text) + literal("</v></c>")
    return func.coalesce(body, literal("<c/>"))


@dataclass
class Grid:
    """Rows computed in Python (pivots); small by nature (a class)."""

    title: str
    headers: list
    kinds: list
    make_rows: Callable[[], Iterable[tuple]]
    estimate_value: int = 0

    def estimate(self):
        return self.estimate_value

    def rows(self):
        return self.make_rows()


# --- writers -------------------------------------------------------------------------------------------


def _csv_converters(kinds):
    def text(v):
        if v is None:
            return ""
        return csv_text(v if v.__class__ is str else str(v))

    def money(v):  # a number, so the writer does not quote it (as COPY's numeric)
        return "" if v is None else Decimal(int(v)).scaleb(-2)

    def moment(v):
        if v is None:
            return ""
        if v.tzinfo is not None:
            v = v.astimezone(UTC)
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")

    def plain(v):
        return "" if v is None else v

    def decimal(v):
        return "" if v is None else (Decimal(v) if isinstance(v, str) else v)

    def day(v):
        return "" if v is None else (v if isinstance(v, str) else v.isoformat())

    table = {
        "text": text,
        "money": money,
        "datetime": moment,
        "date": day,
        "int": plain,
        "number": plain,
        "decimal": decimal,
    }
    return [table[k] for k in kinds]


class _CopySink:
    """psycopg2's copy_expert calls write() once per row: count them for progress on the way to disk."""

    def __init__(self, fh, progress):
        self.fh, self.progress, self.rows = fh, progress, -1  # the header line is not a row
        self._write = fh.write

    def write(self, data):
        self._write(data)
        self.rows += 1
        if self.progress is not None and not self.rows % 1000:
            self.progress(self.rows)


def write_csv(source, path, progress=None):
    conn = db.session.connection()
    if isinstance(source, Table) and conn.dialect.name == "postgresql":
        compiled = source.copy_sql(conn.dialect)
        raw = conn.connection.driver_connection
        with open(path, "wb") as fh, raw.cursor() as cur:
            sql = cur.mogrify(str(compiled), compiled.params).decode()
            fh.write(BOM)
            sink = _CopySink(fh, progress)
            quote = conn.dialect.identifier_preparer.quote
            quoted = ", ".join(quote(c.header) for c in source.cols if c.kind in QUOTED_KINDS)
            force = f", FORCE_QUOTE ({quoted})" if quoted else ""
            cur.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true{force})", sink)
            return cur.rowcount if cur.rowcount >= 0 else sink.rows
    convs = _csv_converters(source.kinds)
    n = 0
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        # CRLF (RFC 4180): Python 3.11's writer quotes a field holding \r only when \r is in the terminator.
        # Every field that is not a number is quoted (see FORMULA_START), as COPY's FORCE_QUOTE does.
        writer = csv.writer(fh, lineterminator="\r\n", quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(source.headers)
        batch = []
        for row in source.rows():
            batch.append([c(v) for c, v in zip(convs, row)])
            if len(batch) >= FETCH:
                writer.writerows(batch)
                n += len(batch)
                batch.clear()
                if progress:
                    progress(n)
        writer.writerows(batch)
        n += len(batch)
    return n


class _XlsxCopySink:
    """COPY hands over one finished <row> per write(): buffer, count, and move to a new sheet when one
    is full (Excel: 1,048,576 rows)."""

    def __init__(self, book, progress):
        self.book, self.progress, self.rows, self.buf = book, progress, 0, []
        self.room = book.room()

    def write(self, data):
        if not self.room:  # the sheet is full: this row starts the next one
            self.flush()
            self.room = self.book.new_sheet()
        self.buf.append(data)
        self.rows += 1
        self.room -= 1
        if len(self.buf) >= 2000:
            self.flush()
            if self.progress is not None:
                self.progress(self.rows)

    def flush(self):
        if self.buf:
            self.book.write_raw(b"".join(self.buf), len(self.buf))
            self.buf.clear()


def write_xlsx(source, path, progress=None):
    conn = db.session.connection()
    with XlsxStream(path, source.title, source.headers, source.kinds) as book:
        if isinstance(source, Table) and conn.dialect.name == "postgresql":
            compiled = source.xlsx_copy_sql(conn.dialect)
            raw = conn.connection.driver_connection
            with raw.cursor() as cur:
                sql = cur.mogrify(str(compiled), compiled.params).decode()
                sink = _XlsxCopySink(book, progress)
                cur.copy_expert(f"COPY ({sql}) TO STDOUT", sink)
                sink.flush()
        else:
            book.write_rows(source.rows(), on_rows=progress)
        return book.rows_written


# --- the kinds -----------------------------------------------------------------------------------------


def _iid():
    return current_institution_id()


def _name(model):
    return (model.last_name, model.first_name)


def attendance_records(p, scope=None):
    """Every mark in a date range (optionally one class): the raw register, one row per mark."""
    a, s, c, subj = AttendanceRecord, Student, SchoolClass, Subject
    base = (
        select(a.id)
        .select_from(a)
        .join(s, s.id == a.student_id)
        .join(c, c.id == a.class_id)
        .outerjoin(subj, subj.id == a.subject_id)
        .where(a.institution_id == _iid(), a.date >= p.from_, a.date <= p.to)
        .order_by(a.date, a.class_id, a.student_id, a.period)
    )
    base = _class_filter(base, a.class_id, p, scope)
    count = select(a.id).where(a.institution_id == _iid(), a.date >= p.from_, a.date <= p.to)
    count = _class_filter(count, a.class_id, p, scope)
    return Table(
        "Attendance",
        [
            Col("Date", a.date, "date"),
            Col("Admission no.", s.admission_number),
            Col("Last name", s.last_name),
            Col("First name", s.first_name),
            Col("Class", c.name),
            Col("Period", a.period, "int"),
            Col("Subject", subj.name),
            Col("Status", a.status),
            Col("Note", a.note),
            Col("Source", a.source),
        ],
        base,
        count,
    )


def _class_filter(stmt, column, p, scope):
    """One class, or for a teacher without one: the classes they teach (resolved when requested)."""
    if p.class_id is not None:
        return stmt.where(column == p.class_id)
    if scope is not None:
        return stmt.where(column.in_(scope or [-1]))
    return stmt


def attendance_summary(p, scope=None):
    """Per student and class over a date range: counts by status and the attendance rate."""
    a, s, c = AttendanceRecord, Student, SchoolClass
    sums = [func.sum(case((a.status == st, 1), else_=0)) for st in STATUSES]
    attended = func.sum(case((a.status.in_(("present", "late")), 1), else_=0))
    marked = func.count(a.id)
    base = (
        select(a.student_id)
        .select_from(a)
        .join(s, s.id == a.student_id)
        .join(c, c.id == a.class_id)
        .where(a.institution_id == _iid(), a.date >= p.from_, a.date <= p.to)
        .group_by(a.student_id, a.class_id, s.admission_number, s.last_name, s.first_name, c.name)
        .order_by(c.name, s.last_name, s.first_name, a.student_id)
    )
    base = _class_filter(base, a.class_id, p, scope)
    return Table(
        "Attendance summary",
        [
            Col("Admission no.", s.admission_number),
            Col("Last name", s.last_name),
            Col("First name", s.first_name),
            Col("Class", c.name),
            *[Col(st.capitalize(), x, "int") for st, x in zip(STATUSES, sums)],
            Col("Marked", marked, "int"),
            Col("Rate %", func.round(100.0 * attended / func.nullif(marked, 0), 1), "decimal"),
        ],
        base,
    )


def class_roster(p, scope=None):
    s, g, e = Student, Guardian, Enrolment
    primary = (
        select(func.min(StudentGuardian.guardian_id))
        .where(StudentGuardian.student_id == s.id, StudentGuardian.is_primary.is_(True))
        .scalar_subquery()
    )
    base = (
        select(s.id)
        .select_from(s)
        .join(e, and_(e.student_id == s.id, e.end_date.is_(None)))
        .outerjoin(g, and_(g.id == primary, g.deleted_at.is_(None)))
        .where(s.institution_id == _iid(), e.class_id == p.class_id, s.deleted_at.is_(None))
        .order_by(s.last_name, s.first_name, s.id)
    )
    return Table(
        "Class roster",
        [
            Col("Admission no.", s.admission_number),
            Col("Last name", s.last_name),
            Col("First name", s.first_name),
            Col("Gender", s.gender),
            Col("Date of birth", s.date_of_birth, "date"),
            Col("Status", s.status),
            Col("Email", s.email),
            Col(
                "Primary guardian",
                func.trim(func.coalesce(g.first_name, "") + " " + func.coalesce(g.last_name, "")),
            ),
            Col("Guardian phone", g.phone),
            Col("Guardian email", g.email),
        ],
        base,
    )


def fee_collection(p, scope=None):
    pay, s, inv = Payment, Student, Invoice
    base = (
        select(pay.id)
        .select_from(pay)
        .join(s, s.id == pay.student_id)
        .outerjoin(inv, inv.id == pay.invoice_id)
        .where(
            pay.institution_id == _iid(),
            pay.received_at >= day_start(p.from_),
            pay.received_at < day_start(p.to + timedelta(days=1)),
        )
        .order_by(pay.received_at, pay.id)
    )
    return Table(
        "Fee collection",
        [
            Col("Received (UTC)", pay.received_at, "datetime"),
            Col("Reference", pay.reference),
            Col("Method", pay.method),
            Col("Kind", pay.kind),
            Col("Amount", pay.amount_minor, "money"),
            Col("Admission no.", s.admission_number),
            Col("Last name", s.last_name),
            Col("First name", s.first_name),
            Col("Invoice", inv.number),
            Col("Note", pay.note),
        ],
        base,
    )


def audit_log(p, scope=None):
    a, u = AuditEntry, aliased(User)
    base = (
        select(a.id)
        .select_from(a)
        .outerjoin(u, u.id == a.actor_id)
        .where(
            a.institution_id == _iid(),
            a.created_at >= day_start(p.from_),
            a.created_at < day_start(p.to + timedelta(days=1)),
        )
        .order_by(a.created_at, a.id)
    )
    return Table(
        "Audit log",
        [
            Col("Time (UTC)", a.created_at, "datetime"),
            Col("Actor", u.email),
            Col("Action", a.action),
            Col("Entity type", a.entity_type),
            Col("Entity id", a.entity_id),
            Col("Changes", cast(a.changes, Text)),
            Col("Request id", a.request_id),
            Col("IP", a.ip),
        ],
        base,
    )


def attendance_register(p, scope=None):
    """Class x month: one row per student enrolled during the month, one column per day (P/L/A/E)."""
    first = p.first_day()
    days = calendar.monthrange(first.year, first.month)[1]
    last = first.replace(day=days)
    iid = _iid()
    students = db.session.execute(
        select(Student.id, Student.admission_number, Student.last_name, Student.first_name)
        .join(Enrolment, Enrolment.student_id == Student.id)
        .where(
            Student.institution_id == iid,
            Enrolment.class_id == p.class_id,
            Enrolment.start_date <= last,
            or_(Enrolment.end_date.is_(None), Enrolment.end_date >= first),
            Student.deleted_at.is_(None),
        )
        .group_by(Student.id, Student.admission_number, Student.last_name, Student.first_name)
        .order_by(Student.last_name, Student.first_name, Student.id)
    ).all()
    letters = {"present": "P", "late": "L", "absent": "A", "excused": "E"}
    headers = ["Admission no.", "Last name", "First name"]
    headers += [
        f"{d:02d} {calendar.day_abbr[date(first.year, first.month, d).weekday()]}" for d in range(1, days + 1)
    ]
    headers += ["Present", "Late", "Absent", "Excused", "Rate %"]
    kinds = ["text"] * (3 + days) + ["int"] * 4 + ["decimal"]

    def rows():
        marks = {}
        for sid, day, status in db.session.execute(
            select(AttendanceRecord.student_id, AttendanceRecord.date, AttendanceRecord.status).where(
                AttendanceRecord.institution_id == iid,
                AttendanceRecord.class_id == p.class_id,
                AttendanceRecord.date >= first,
                AttendanceRecord.date <= last,
                AttendanceRecord.period == 0,
                AttendanceRecord.subject_id.is_(None),
            )
        ):
            marks[(sid, day.day)] = status

        for sid, adm, last_name, first_name in students:
            cells = [marks.get((sid, d)) for d in range(1, days + 1)]
            counts = {st: sum(1 for x in cells if x == st) for st in STATUSES}
            marked = sum(counts.values())
            yield (
                adm,
                last_name,
                first_name,
                *[letters.get(x) for x in cells],
                counts["present"],
                counts["late"],
                counts["absent"],
                counts["excused"],
                rate(counts["present"] + counts["late"], marked),
            )

    return Grid(f"Register {p.month}", headers, kinds, rows, len(students))


def gradebook(p, scope=None):
    """One row per student on the term's roster: every assessment's score, subject averages, overall."""

    term = db.session.execute(select(Term).where(Term.id == p.term_id)).scalar_one()
    inst = grading.institution()
    letters = grading.Scale(inst.grading_scale)
    students = (
        db.session.execute(
            grading.roster_on(p.class_id, grading.class_day(term, school_today(inst))).order_by(
                Student.last_name, Student.first_name, Student.id
            )
        )
        .scalars()
        .all()
    )
    assessments = db.session.execute(
        select(Assessment.id, Assessment.title, Assessment.max_score, Subject.id, Subject.name)
        .join(ClassSubject, ClassSubject.id == Assessment.class_subject_id)
        .join(Subject, Subject.id == ClassSubject.subject_id)
        .where(ClassSubject.class_id == p.class_id, Assessment.term_id == p.term_id)
        .order_by(Subject.name, Assessment.date, Assessment.id)
    ).all()
    subjects = list(dict.fromkeys((a[3], a[4]) for a in assessments))
    headers = ["Admission no.", "Last name", "First name"]
    headers += [f"{a.name}: {a.title} (/{grading.plain(a.max_score)})" for a in assessments]
    headers += [f"{name} %" for _, name in subjects] + ["Overall %", "Letter"]
    kinds = ["text"] * 3 + ["decimal"] * (len(assessments) + len(subjects) + 1) + ["text"]

    def rows():

        ids = [s.id for s in students]
        scores = dict(
            (
                ((sid, aid), score)
                for sid, aid, score in db.session.execute(
                    select(Grade.student_id, Grade.assessment_id, Grade.score).where(
                        Grade.assessment_id.in_([a[0] for a in assessments] or [-1]),
                        Grade.student_id.in_(ids or [-1]),
                    )
                )
            )
        )
        results = grading.term_results_for(ids, p.term_id)
        for s in students:
            result = results.get(s.id)
            by_subject = {acc.subject_id: acc for acc in result.subjects} if result else {}
            yield (
                s.admission_number,
                s.last_name,
                s.first_name,
                *[scores.get((s.id, a[0])) for a in assessments],
                *[
                    grading.round1(by_subject[sid].average()) if sid in by_subject else None
                    for sid, _ in subjects
                ],
                grading.round1(result.overall) if result else None,
                letters.letter(result.overall) if result else None,
            )

    return Grid("Gradebook", headers, kinds, rows, len(students))


def fee_statement(p, scope=None):

    data = statement(p.student_id, None, None)
    headers = ["Date (UTC)", "Type", "Reference", "Description", "Debit", "Credit", "Balance"]
    kinds = ["datetime", "text", "text", "text", "decimal", "decimal", "decimal"]

    def rows():
        for e in data["entries"]:
            yield (
                e["date"],
                e["type"],
                e["reference"],
                e["description"],
                e["debit"],
                e["credit"],
                e["balance"],
            )

    grid = Grid("Fee statement", headers, kinds, rows, len(data["entries"]))
    grid.statement = data
    return grid


def oneroster_bulk(p, scope=None):
    """The OneRoster 1.2 CSV binding's zip, bulk: the school's active roster and gradebook (and with
    p.history, the ended enrollments its grades need: app/oneroster/csvexport.py)."""
    return csvexport.package(csvexport.Mode(delta=False, history=p.history))


def oneroster_delta(p, scope=None):
    """The same zip, delta: what changed after `since` (tobedeleted records too)."""
    return csvexport.package(csvexport.Mode(delta=True, since=p.since_utc()))


def _timetable(p, who: str, heading: str, cell):
    """A week's timetable (the week holding p.week_of, default today): one row per period, one column
    per weekday of the bell schedule, each cell the lesson of that day (`cell` writes it)."""
    day = p.week_of or school_today()
    weekdays, rows = week_grid(day, **{who: getattr(p, who)})
    headers = ["Period", "Time", *[WEEKDAYS[w] for w in weekdays]]

    def make_rows():
        for number, times, cells in rows:
            yield (str(number), times, *[cell(cells[w]) if cells[w] else None for w in weekdays])

    grid = Grid(heading, headers, ["text"] * len(headers), make_rows, len(rows))
    grid.week = day - timedelta(days=day.weekday())
    return grid


def timetable_class(p, scope=None):
    name = db.session.execute(select(SchoolClass.name).where(SchoolClass.id == p.class_id)).scalar_one()
    return _timetable(
        p,
        "class_id",
        f"Timetable {name}",
        lambda s: f"{s.subject_name}, {s.teacher_name}" + (f", {s.room_name}" if s.room_name else ""),
    )


def timetable_teacher(p, scope=None):
    first, last = db.session.execute(
        select(Teacher.first_name, Teacher.last_name).where(Teacher.id == p.teacher_id)
    ).one()
    return _timetable(
        p,
        "teacher_id",
        f"Timetable {first} {last}",
        lambda s: f"{s.class_name} {s.subject_name}" + (f", {s.room_name}" if s.room_name else ""),
    )


@dataclass(frozen=True)
class Kind:
    name: str
    formats: tuple
    roles: tuple
    params: type
    build: Callable | None  # -> Table or Grid (csv/xlsx, and the data of some PDFs)
    pdf: str | None = None  # name of the renderer in app/jobs/pdf.py
    class_scoped: bool = False  # teachers: only classes they teach or lead (404 for others)


def _kinds():

    staff, fees = ("admin", "teacher"), ("admin", "accountant")
    return {
        k.name: k
        for k in (
            Kind(
                "attendance_register",
                ("csv", "xlsx"),
                staff,
                params.RegisterParams,
                attendance_register,
                class_scoped=True,
            ),
            Kind(
                "attendance_summary",
                ("csv", "xlsx"),
                staff,
                params.RangeClassParams,
                attendance_summary,
                class_scoped=True,
            ),
            Kind(
                "attendance_records",
                ("csv", "xlsx"),
                staff,
                params.RangeClassParams,
                attendance_records,
                class_scoped=True,
            ),
            Kind(
                "class_roster",
                ("csv", "xlsx", "pdf"),
                ("admin", "accountant", "teacher"),
                params.ClassParams,
                class_roster,
                pdf="class_roster",
                class_scoped=True,
            ),
            Kind("gradebook", ("csv", "xlsx"), staff, params.ClassTermParams, gradebook, class_scoped=True),
            Kind(
                "report_cards",
                ("pdf",),
                staff,
                params.ClassTermParams,
                None,
                pdf="report_cards",
                class_scoped=True,
            ),
            Kind(
                "fee_statement",
                ("pdf", "csv"),
                fees,
                params.StudentParams,
                fee_statement,
                pdf="fee_statement",
            ),
            Kind("fee_collection", ("csv", "xlsx"), fees, params.RangeParams, fee_collection),
            Kind("audit_log", ("csv", "xlsx"), ("admin",), params.RangeParams, audit_log),
            # Personal data of the whole school (demographics included): admins only.
            Kind("oneroster_bulk", ("zip",), ("admin",), params.OneRosterBulkParams, oneroster_bulk),
            Kind("oneroster_delta", ("zip",), ("admin",), params.OneRosterDeltaParams, oneroster_delta),
            Kind(
                "timetable_class",
                ("xlsx", "pdf"),
                staff,
                params.TimetableClassParams,
                timetable_class,
                pdf="timetable",
                class_scoped=True,
            ),
            Kind(
                "timetable_teacher",
                ("xlsx", "pdf"),
                staff,
                params.TimetableTeacherParams,
                timetable_teacher,
                pdf="timetable",
            ),
        )
    }


KINDS = _kinds()
