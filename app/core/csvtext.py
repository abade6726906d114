"""CSV formula injection, one rule for every CSV the app writes (app/jobs/exporters.py and the
OneRoster CSV binding, app/oneroster/csvexport.py).

Formula injection (OWASP, "CSV Injection"): a spreadsheet evaluates a CSV cell that starts with
= + - @ TAB or CR. Such a text cell gets a leading ' (shown by the spreadsheet, read as text) unless
it is a plain number or phone number: an optional sign, then only digits, spaces and . ( ) / - with at
least one digit, which no formula can turn into a call (so -5 and +254 700 111222 stay as written).
Every text, date and time field is quoted, so a separator or quote inside a cell (";=1+1" read with
; as the separator) never starts a new cell. The same rule in Python (csv_text) and in SQL for COPY
(app/jobs/exporters.py _csv_text_sql).
"""

import re

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = r"[+-]?[0-9 ()./-]*[0-9][0-9 ()./-]*"
_PLAIN = re.compile(PLAIN_NUMBER)


def csv_text(v: str) -> str:
    return "'" + v if v and v[0] in FORMULA_START and not _PLAIN.fullmatch(v) else v
