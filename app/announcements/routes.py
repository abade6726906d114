"""Announcements: staff post and list them; everyone reads theirs under /me/announcements."""

from flask import Blueprint, g, jsonify

from app.access.rules import ANNOUNCEMENT_AUDIENCES, POSTED_ANNOUNCEMENTS
from app.announcements import services
from app.announcements.models import Announcement, AnnouncementRecipient
from app.announcements.schemas import AnnouncementIn, AnnouncementOut, MyAnnouncementOut
from app.core.auth import ROLES, SELF, roles
from app.core.openapi import doc
from app.core.pagination import Choice, Filter, ListSpec, apply_list, page_response
from app.core.queryargs import BOOLEAN
from app.core.schemas import dump, fields_of, parse_body
from app.extensions import db

bp = Blueprint("announcements", __name__)

STAFF_FIELDS = tuple(f for f in fields_of(AnnouncementOut) if f != "read_count")
MINE_FIELDS = fields_of(MyAnnouncementOut)

STAFF_SPEC = ListSpec(
    id_column=Announcement.id,
    filters={
        "audience": Choice(Announcement.audience, ("school", "grade", "class", "guardians", "staff")),
        "class_id": Announcement.class_id,
    },
    default_sort="-id",
)
MINE_SPEC = ListSpec(
    id_column=Announcement.id,
    filters={
        "unread": Filter(
            BOOLEAN,
            lambda s, v: s.where(
                AnnouncementRecipient.read_at.is_(None) if v else AnnouncementRecipient.read_at.is_not(None)
            ),
        ),
    },
    default_sort="-id",
)


def staff_out(announcement, read_count) -> dict:
    return {**dump(announcement, STAFF_FIELDS), "read_count": read_count or 0}


@bp.post("/announcements")
@roles("admin", "teacher", reach=ANNOUNCEMENT_AUDIENCES)
@doc(
    "Post an announcement to an audience; it is delivered (in the app, and by e-mail or SMS as each "
    "guardian chose) by a background task",
    body=AnnouncementIn,
    out=AnnouncementOut,
    status=201,
    errors=(404,),  # class_id out of the caller's reach (a teacher's own classes) or of another school
    rules={
        "class_id": "given for audience class or guardians, absent otherwise; a class of the school "
        "(for a teacher: one they teach or lead)",
        "grade_level": "given for audience grade (a grade some class of the school is in), absent otherwise",
    },
    tags=["announcements"],
)
def post_announcement():
    announcement = services.post_announcement(g.principal, parse_body(AnnouncementIn).model_dump())
    return jsonify(staff_out(announcement, 0)), 201


@bp.get("/announcements")
@roles("admin", "teacher", reach=POSTED_ANNOUNCEMENTS)
@doc(
    "Announcements posted (admins: the school's; teachers: their own), newest first, with delivery counts",
    out=AnnouncementOut,
    many=True,
    query=STAFF_SPEC,
    tags=["announcements"],
)
def list_announcements():
    stmt, limit, sort, col = apply_list(services.staff_announcements(g.principal), STAFF_SPEC)
    rows = db.session.execute(stmt).all()
    return page_response(rows, limit, sort, col, lambda r: staff_out(r[0], r[1]), keyed=lambda r: r[0])


@bp.get("/me/announcements")
@roles(*ROLES, reach=SELF)
@doc(
    "The caller's announcements, newest first, with read state (`unread=true`: unread ones only); "
    "`unread_count` counts all unread",
    out=MyAnnouncementOut,
    many=True,
    query=MINE_SPEC,
    tags=["announcements"],
)
def my_announcements():
    stmt, limit, sort, col = apply_list(services.my_announcements(g.principal), MINE_SPEC)
    rows = db.session.execute(stmt).all()
    return page_response(
        rows,
        limit,
        sort,
        col,
        lambda r: dump(r, MINE_FIELDS),
        unread_count=services.unread_count(g.principal),
    )


@bp.post("/me/announcements/<int:ident>/read")
@roles(*ROLES, reach=SELF)
@doc("Mark one of the caller's announcements read", out=MyAnnouncementOut, tags=["announcements"])
def mark_read(ident):
    return jsonify(dump(services.mark_read(g.principal, ident), MINE_FIELDS))
