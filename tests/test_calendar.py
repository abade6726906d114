"""The school calendar (app/institutions/calendar.py): zones, local today, local day boundaries."""

from datetime import UTC, date, datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from app.institutions.calendar import day_start, school_today, zone


@pytest.mark.parametrize("name", [None, "", "Nowhere/Special", "../etc/passwd", "America"])
def test_no_zone_or_an_unknown_one_counts_in_utc(name):
    assert zone(name) is UTC


def test_a_known_zone_is_used():
    assert zone("Africa/Nairobi") == ZoneInfo("Africa/Nairobi")


def test_a_local_day_starts_at_local_midnight_given_in_utc():
    nairobi = SimpleNamespace(timezone="Africa/Nairobi")  # UTC+3, no daylight saving
    assert day_start(date(2024, 3, 4), nairobi) == datetime(2024, 3, 3, 21, 0, tzinfo=UTC)
    assert day_start(date(2024, 3, 4), SimpleNamespace(timezone="Bad/Zone")) == datetime(
        2024, 3, 4, tzinfo=UTC
    )


def test_today_is_the_schools_date():
    far_east = SimpleNamespace(timezone="Pacific/Kiritimati")  # UTC+14
    assert school_today(far_east) == datetime.now(ZoneInfo("Pacific/Kiritimati")).date()
