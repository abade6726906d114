"""What the rest of the code asks of a school's standing."""

from sqlalchemy import select

from app.core.errors import ApiError
from app.extensions import db
from app.institutions.models import Institution


def school_suspended(institution_id) -> bool:
    suspended_at = db.session.execute(
        select(Institution.suspended_at).where(Institution.id == institution_id)
    ).scalar_one_or_none()
    return suspended_at is not None


def refuse_if_suspended(institution_id):
    """403 for the people of a suspended school (app/operator): no login, refresh or new password."""
    if school_suspended(institution_id):
        raise ApiError(
            403,
            "This school is suspended; its records are kept. Ask the school's office.",
            title="School suspended",
            type_="school-suspended",
        )
