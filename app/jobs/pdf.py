"""PDF exports with reportlab's canvas (no HTML renderer, so nothing is ever fetched from a URL).

Report cards: one page per student, the whole class in one file, from grading's report_cards_for_class
(a constant number of queries for the class), with the teachers' comments and remarks. Class roster: a
paginated table. Fee statement: the ledger from finance's statement() with its totals.

Text is set in DejaVu Sans, shipped with the project (app/jobs/fonts, with its licence) and embedded in
each PDF (subset): names and comments in Latin, Greek and Cyrillic scripts print as written, where the
PDF's built-in Helvetica covers Latin-1 only.
"""

import gc
import io
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader, simpleSplit
from reportlab.pdfbase.pdfmetrics import registerFont, stringWidth
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from sqlalchemy import select

from app.academics.models import SchoolClass
from app.core.tenancy import current_institution_id
from app.extensions import db
from app.finance.services import statement
from app.grading.services import report_cards_for_class
from app.institutions.models import Institution
from app.jobs.exporters import KINDS
from app.jobs.exporters import class_roster as roster_table
from app.people.models import Student
from app.uploads.services import logo_bytes

FONT, BOLD = "DejaVuSans", "DejaVuSans-Bold"
FONT_DIR = Path(__file__).parent / "fonts"


@cache
def register_fonts():
    """Register the shipped TTFs with reportlab once per process (at the first PDF, not at import)."""
    registerFont(TTFont(FONT, str(FONT_DIR / "DejaVuSans.ttf")))
    registerFont(TTFont(BOLD, str(FONT_DIR / "DejaVuSans-Bold.ttf")))


def _fit(text, width, font=FONT, size=9):
    """Cut text to fit a column (a character the font lacks prints as its "missing" box, never fatal)."""
    text = "" if text is None else str(text)
    if stringWidth(text, font, size) <= width:
        return text
    while text and stringWidth(text + "...", font, size) > width:
        text = text[:-1]
    return text + "..."


def _school():
    return db.session.execute(
        select(Institution.name, Institution.currency).where(Institution.id == current_institution_id())
    ).one()


LOGO_HEIGHT, LOGO_MAX_WIDTH = 18 * mm, 45 * mm


def _logo():
    """The school's logo (uploaded by an admin: app/uploads), read once per document; None without one."""
    data = logo_bytes(current_institution_id())
    if data is None:
        return None
    reader = ImageReader(io.BytesIO(data))
    w, h = reader.getSize()
    scale = min(LOGO_HEIGHT / h, LOGO_MAX_WIDTH / w)
    return reader, w * scale, h * scale


def _draw_logo(c, logo, right, top):
    """The logo in the header's top right corner; returns the width it takes (0 without one)."""
    if logo is None:
        return 0
    reader, w, h = logo
    c.drawImage(reader, right - w, top - h, width=w, height=h, mask="auto")
    return w + 5 * mm


def _canvas(path, title, pagesize=A4):
    register_fonts()
    c = Canvas(str(path), pagesize=pagesize, pageCompression=1)
    c.setTitle(title)
    c.setAuthor("Schoolhouse")
    c.setCreator("Schoolhouse")
    return c


def _footer(c, width, text):
    c.setFont(FONT, 7)
    c.setFillGray(0.4)
    c.drawString(15 * mm, 10 * mm, _fit(text, width - 30 * mm, FONT, 7))
    c.setFillGray(0)


def _table(c, x, y, columns, rows, bottom, on_new_page, size=9, leading=None):
    """columns: [(header, width, align)]. Draws rows from y downwards, starting new pages as needed."""
    leading = leading or size + 4

    def header(y):
        c.setFont(BOLD, size)
        cx = x
        for title, width, align in columns:
            _cell(c, cx, y, width, title, align, BOLD, size)
            cx += width
        c.line(x, y - 3, x + sum(w for _, w, _ in columns), y - 3)
        return y - leading

    y = header(y)
    c.setFont(FONT, size)
    for row in rows:
        if y < bottom:
            y = header(on_new_page())
            c.setFont(FONT, size)
        cx = x
        for value, (_, width, align) in zip(row, columns):
            _cell(c, cx, y, width, value, align, FONT, size)
            cx += width
        y -= leading
    return y


def _cell(c, x, y, width, value, align, font, size):
    text = _fit(value, width - 4, font, size)
    if align == "right":
        c.drawRightString(x + width - 2, y, text)
    else:
        c.drawString(x + 2, y, text)


def _generated():
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def report_cards(p, path, progress=None):

    cards = report_cards_for_class(p.class_id, p.term_id)
    # alphabetical (how cards are handed out); reversed so each card is dropped once its page is drawn:
    # memory stays at one class's data however long the PDF gets
    cards.sort(
        key=lambda card: (card["student"]["last_name"], card["student"]["first_name"], card["student"]["id"]),
        reverse=True,
    )
    gc.collect()  # the grade rows behind the cards are garbage now; let the pages reuse that memory
    total = len(cards)
    school, _ = _school()
    width, height = A4
    c = _canvas(path, "Report cards")
    generated = _generated()
    logo = _logo()
    for n in range(1, total + 1):
        _report_card_page(c, cards.pop(), school, width, height, logo)
        _footer(c, width, f"{school} - report card {n} of {total} - generated {generated}")
        c.showPage()
        if progress:
            progress(n, total)
    if not total:  # an empty class still gets a valid document that says so
        c.setFont(BOLD, 14)
        c.drawString(20 * mm, height - 30 * mm, "No students in this class for the term.")
        c.showPage()
    c.save()
    return total


def report_card_document(cards, path):
    """Given report cards (grading's report_card), one page each: a student's own cards, for the
    subject-access export (app/privacy/services.py)."""
    school, _ = _school()
    width, height = A4
    c = _canvas(path, "Report card")
    generated = _generated()
    logo = _logo()
    for n, card in enumerate(cards, 1):
        _report_card_page(c, card, school, width, height, logo)
        _footer(c, width, f"{school} - report card {n} of {len(cards)} - generated {generated}")
        c.showPage()
    c.save()
    return len(cards)


def _paragraph(c, x, y, text, width, new_page, size=10, leading=None):
    """Wrapped text from y down (words kept whole, long words split); a new page when it runs out."""
    leading = leading or size * 1.35
    c.setFont(FONT, size)
    for line in simpleSplit(text, FONT, size, width):
        if y < 20 * mm:
            y = new_page()
            c.setFont(FONT, size)
        c.drawString(x, y, line)
        y -= leading
    return y


def _report_card_page(c, card, school, width, height, logo=None):
    left, y = 20 * mm, height - 25 * mm
    student, term, klass = card["student"], card["term"], card["class"]
    beside_logo = _draw_logo(c, logo, width - 20 * mm, height - 12 * mm)
    c.setFont(BOLD, 16)
    c.drawString(left, y, _fit(school, width - 40 * mm - beside_logo, BOLD, 16))
    y -= 9 * mm
    c.setFont(BOLD, 12)
    c.drawString(
        left,
        y,
        _fit(
            f"Report card - {term['name']} ({term['start_date']} to {term['end_date']})",
            width - 40 * mm,
            BOLD,
            12,
        ),
    )
    y -= 10 * mm
    c.setFont(FONT, 10)
    lines = [
        ("Student", f"{student['first_name']} {student['last_name']}"),
        ("Admission no.", student["admission_number"]),
        ("Class", klass["name"] if klass else "-"),
        ("Position", f"{card['position']} of {card['class_size']}" if card.get("position") else "-"),
    ]
    for label, value in lines:
        c.setFont(BOLD, 10)
        c.drawString(left, y, label)
        c.setFont(FONT, 10)
        c.drawString(left + 35 * mm, y, _fit(value, width - 75 * mm, FONT, 10))
        y -= 6 * mm
    y -= 4 * mm
    columns = [
        ("Subject", 60 * mm, "left"),
        ("Teacher", 55 * mm, "left"),
        ("Assessments", 22 * mm, "right"),
        ("Average %", 20 * mm, "right"),
        ("Grade", 13 * mm, "right"),
    ]
    rows = [
        (s["subject_name"], s.get("teacher_name") or "", s["assessments"], s["average"], s["letter"])
        for s in card["subjects"]
    ]
    if not rows:
        rows = [("No grades recorded this term", "", "", "", "")]
    y = _table(
        c,
        left,
        y,
        columns,
        rows,
        bottom=70 * mm,
        on_new_page=lambda: height - 25 * mm,
        size=9,
        leading=6 * mm,
    )
    overall = card["overall"]
    c.setFont(BOLD, 10)
    c.drawString(left, y - 2 * mm, "Overall")
    c.drawRightString(
        left + sum(w for _, w, _ in columns[:4]) - 2,
        y - 2 * mm,
        "-" if overall["average"] is None else str(overall["average"]),
    )
    c.drawRightString(left + sum(w for _, w, _ in columns) - 2, y - 2 * mm, overall["letter"] or "-")
    y -= 14 * mm
    att = card["attendance"]
    attended = att.get("present", 0) + att.get("late", 0)
    total = att.get("total", 0)
    rate = f"{100 * attended / total:.1f}%" if total else "-"
    c.setFont(BOLD, 11)
    c.drawString(left, y, "Attendance")
    y -= 6 * mm
    c.setFont(FONT, 10)
    c.drawString(
        left,
        y,
        f"Present {att.get('present', 0)}   Late {att.get('late', 0)}   "
        f"Absent {att.get('absent', 0)}   Excused {att.get('excused', 0)}   "
        f"Marked {total}   Rate {rate}",
    )
    text_width = width - 40 * mm

    def new_page():
        c.showPage()
        return height - 25 * mm

    remarks = card.get("remarks") or {}
    sections = [
        (
            f"{r['subject_name']}" + (f" ({r['author']})" if r.get("author") else ""),
            r["text"],
        )
        for r in remarks.get("subjects", [])
    ]
    if sections:
        y -= 10 * mm
        c.setFont(BOLD, 11)
        c.drawString(left, y, "Subject teachers' comments")
        y -= 6 * mm
        for title, text in sections:
            if y < 30 * mm:
                y = new_page()
            c.setFont(BOLD, 10)
            c.drawString(left, y, _fit(title, text_width, BOLD, 10))
            y = _paragraph(c, left + 4 * mm, y - 5 * mm, text, text_width - 4 * mm, new_page) - 2 * mm
    for label, key in (("Class teacher's remarks", "class_teacher"), ("Head's remarks", "head")):
        y -= 8 * mm
        if y < 35 * mm:
            y = new_page()
        c.setFont(BOLD, 11)
        c.drawString(left, y, label)
        text = remarks.get(key)
        if text:
            y = _paragraph(c, left, y - 6 * mm, text, text_width, new_page)
        else:
            y -= 8 * mm
            c.setFont(FONT, 10)
            c.drawString(left, y, "______________________________________________")
    y -= 10 * mm
    if y < 20 * mm:
        y = new_page()
    c.setFont(FONT, 10)
    c.drawString(left, y, "Class teacher: ______________________")
    c.drawString(left + 95 * mm, y, "Head teacher: ______________________")


def class_roster(p, path, progress=None):

    table = roster_table(p)
    school, _ = _school()
    width, height = landscape(A4)
    c = _canvas(path, "Class roster", landscape(A4))

    class_name = db.session.execute(select(SchoolClass.name).where(SchoolClass.id == p.class_id)).scalar_one()
    generated = _generated()
    page = [1]

    def top():
        c.setFont(BOLD, 14)
        c.drawString(
            15 * mm,
            height - 18 * mm,
            _fit(f"{school} - {class_name} - class roster", width - 30 * mm, BOLD, 14),
        )
        return height - 28 * mm

    def new_page():
        _footer(c, width, f"{school} - {class_name} - page {page[0]} - generated {generated}")
        c.showPage()
        page[0] += 1
        return top()

    columns = [
        ("Admission no.", 32 * mm, "left"),
        ("Last name", 38 * mm, "left"),
        ("First name", 38 * mm, "left"),
        ("Gender", 18 * mm, "left"),
        ("Born", 22 * mm, "left"),
        ("Status", 20 * mm, "left"),
        ("Primary guardian", 50 * mm, "left"),
        ("Guardian phone", 40 * mm, "left"),
    ]
    rows = [
        (r[0], r[1], r[2], r[3], r[4].isoformat() if r[4] else "", r[5], r[7], r[8]) for r in table.rows()
    ]
    _table(c, 15 * mm, top(), columns, rows, bottom=20 * mm, on_new_page=new_page)
    _footer(
        c, width, f"{school} - {class_name} - page {page[0]} - {len(rows)} students - generated {generated}"
    )
    c.showPage()
    c.save()
    if progress:
        progress(len(rows), len(rows))
    return len(rows)


def fee_statement(p, path, progress=None):

    data = statement(p.student_id, None, None)
    student = db.session.execute(
        select(Student.first_name, Student.last_name, Student.admission_number).where(
            Student.id == p.student_id
        )
    ).one()
    school, _ = _school()
    currency = data["currency"]
    width, height = A4
    c = _canvas(path, "Fee statement")
    generated = _generated()
    left = 15 * mm

    def top():
        c.setFont(BOLD, 15)
        c.drawString(left, height - 20 * mm, _fit(school, width - 30 * mm, BOLD, 15))
        c.setFont(BOLD, 11)
        c.drawString(
            left,
            height - 28 * mm,
            _fit(
                f"Fee statement - {student.first_name} {student.last_name} ({student.admission_number})",
                width - 30 * mm,
                BOLD,
                11,
            ),
        )
        c.setFont(FONT, 9)
        c.drawString(left, height - 34 * mm, f"Amounts in {currency}. Generated {generated}.")
        return height - 44 * mm

    def new_page():
        c.showPage()
        return top()

    columns = [
        ("Date", 24 * mm, "left"),
        ("Reference", 34 * mm, "left"),
        ("Description", 58 * mm, "left"),
        ("Debit", 22 * mm, "right"),
        ("Credit", 22 * mm, "right"),
        ("Balance", 22 * mm, "right"),
    ]
    rows = [
        (
            e["date"].strftime("%Y-%m-%d") if hasattr(e["date"], "strftime") else e["date"],
            e["reference"],
            e["description"],
            e["debit"] if e["debit"] != "0.00" else "",
            e["credit"] if e["credit"] != "0.00" else "",
            e["balance"],
        )
        for e in data["entries"]
    ]
    y = _table(c, left, top(), columns, rows, bottom=30 * mm, on_new_page=new_page)
    y -= 4 * mm
    c.setFont(BOLD, 10)
    for label, value in (
        ("Total charged", data["total_debits"]),
        ("Total paid", data["total_credits"]),
        ("Balance due", data["closing_balance"]),
    ):
        if y < 20 * mm:
            y = new_page()
        c.drawString(left + 80 * mm, y, label)
        c.drawRightString(left + sum(w for _, w, _ in columns) - 2, y, f"{currency} {value}")
        y -= 6 * mm
    c.showPage()
    c.save()
    if progress:
        progress(len(rows), len(rows))
    return len(rows)


def timetable(p, path, progress=None):
    """A week's timetable of a class or a teacher on one landscape page: periods down, weekdays across,
    each lesson in two lines (what, then who and where)."""
    grid = KINDS["timetable_class" if hasattr(p, "class_id") else "timetable_teacher"].build(p)
    school, _ = _school()
    width, height = landscape(A4)
    c = _canvas(path, grid.title, landscape(A4))
    left, top = 15 * mm, height - 18 * mm
    c.setFont(BOLD, 14)
    c.drawString(left, top, _fit(f"{school} - {grid.title}", width - 30 * mm, BOLD, 14))
    c.setFont(FONT, 9)
    c.drawString(left, top - 6 * mm, f"Week of {grid.week.isoformat()}")
    days = grid.headers[2:]
    first = [18 * mm, 26 * mm]
    day_width = (width - 30 * mm - sum(first)) / max(len(days), 1)
    widths = first + [day_width] * len(days)
    rows = list(grid.rows())
    row_height = min(16 * mm, (top - 20 * mm - 20 * mm) / max(len(rows), 1))
    y = top - 16 * mm
    c.setFont(BOLD, 9)
    x = left
    for title, w in zip(grid.headers, widths):
        c.drawString(x + 2, y, _fit(title, w - 4, BOLD, 9))
        x += w
    y -= 3 * mm
    for row in rows:
        c.line(left, y, left + sum(widths), y)
        x = left
        for i, (value, w) in enumerate(zip(row, widths)):
            # a lesson's text is "what, who[, where]": the first part on the first line
            what, _, rest = (value or "").partition(", ")
            font = BOLD if i < 2 else FONT
            c.setFont(font, 8)
            c.drawString(x + 2, y - 4 * mm, _fit(what, w - 4, font, 8))
            if rest:
                c.setFont(FONT, 7)
                c.drawString(x + 2, y - 8 * mm, _fit(rest, w - 4, FONT, 7))
            x += w
        y -= row_height
    c.line(left, y, left + sum(widths), y)
    _footer(c, width, f"{school} - {grid.title} - generated {_generated()}")
    c.showPage()
    c.save()
    lessons = sum(1 for row in rows for value in row[2:] if value)
    if progress:
        progress(lessons, lessons)
    return lessons
