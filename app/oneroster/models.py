from datetime import date, datetime

from sqlalchemy import JSON, Date, DateTime, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import TenantMixin
from app.extensions import db


class OneRosterClient(TenantMixin, db.Model):
    """A platform allowed to read (and, by scope, write) one school's roster and gradebook through the
    OneRoster 1.2 REST binding (app/oneroster). Its secret is stored as an argon2id hash only; its tokens
    are sessions of the sessions table (`auth_sessions.client_id`), so they are revoked like a login's."""

    __tablename__ = "oneroster_clients"
    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))  # public: the HTTP Basic user name
    secret_hash: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[str] = mapped_column(String(500))  # space-separated, as OAuth 2 writes them
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_token_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # POST /oauth/token: the client named by HTTP Basic, across schools
        Index("uq_oneroster_clients_client_id", "client_id", unique=True),
        # GET /oneroster/clients: a school's clients
        Index("ix_oneroster_clients_institution", "institution_id", "id"),
    )


class OneRosterSourcedId(TenantMixin, db.Model):
    """The sourcedId a record had in a OneRoster CSV zip imported into this school (app/oneroster/
    csvimport.py): importing the same file again, or a newer one from the same system, updates the
    record it made instead of making a second one."""

    __tablename__ = "oneroster_sourced_ids"
    id: Mapped[int] = mapped_column(primary_key=True)
    entity: Mapped[str] = mapped_column(String(20))  # year, term, subject, class, section, student, ...
    sourced_id: Mapped[str] = mapped_column(String(255))
    local_id: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # upsert by sourcedId: the local record an imported sourcedId names, per school and kind of record
        Index("uq_oneroster_sourced_ids_key", "institution_id", "entity", "sourced_id", unique=True),
    )


class OneRosterTombstone(TenantMixin, db.Model):
    """A OneRoster record whose rows were deleted outright (an enrolment, a class subject, a term, an
    assessment ...): written in the deleting transaction (app/oneroster/tombstones.py), listed by the
    REST collections and the delta CSV as `tobedeleted` with dateLastModified = deleted_at, so a delta
    client learns of the deletion; pruned after ONEROSTER_TOMBSTONE_DAYS."""

    __tablename__ = "oneroster_tombstones"
    id: Mapped[int] = mapped_column(primary_key=True)
    collection: Mapped[str] = mapped_column(String(30))  # enrollments, classes, lineItems, ...
    sourced_id: Mapped[str] = mapped_column(String(255))
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # what the record's minimal shape names: role, classType, type, user/class/lineItem/student sourcedIds
    data: Mapped[dict] = mapped_column(JSON, default=dict)

    __table_args__ = (
        # one tombstone per record (a second delete of the same sourcedId moves deleted_at)
        Index("uq_oneroster_tombstones_key", "institution_id", "collection", "sourced_id", unique=True),
        # a collection's tombstones of a school, in a delta (dateLastModified > ...)
        Index("ix_oneroster_tombstones_institution_deleted", "institution_id", "collection", "deleted_at"),
        # the nightly prune: tombstones older than the retention window, across schools
        Index("ix_oneroster_tombstones_deleted_at", "deleted_at"),
    )


class OneRosterRow(TenantMixin):
    """What every derived OneRoster row has: its kind of record (the collection's branch `_t`), its key
    within the kind (`_k`, `_k2`), and the record's common fields (sourcedId, status, dateLastModified)."""

    kind: Mapped[int] = mapped_column(primary_key=True)
    k: Mapped[int] = mapped_column(primary_key=True)
    k2: Mapped[int] = mapped_column(primary_key=True)
    sourced_id: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    dlm: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OneRosterEnrollment(OneRosterRow, db.Model):
    """A OneRoster enrollment as a row (GET /ims/oneroster/rostering/v1p2/enrollments): a student's in
    its homeroom class (kind 0) and in each subject of it (kind 1), a teacher's in the class it leads
    (kind 2) and in each subject it teaches (kind 3). Derived: migration 0016_oneroster_rows
    defines the fields (the view oneroster_enrollments_live) and, on PostgreSQL, keeps this table equal
    to the view by triggers and gives each sortable field an index; on SQLite it is the view itself.
    Never written by the application."""

    __tablename__ = "oneroster_enrollments"
    role: Mapped[str] = mapped_column(String)
    is_primary: Mapped[bool]
    begin_date: Mapped[date | None] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    user_sid: Mapped[str] = mapped_column(String)
    class_sid: Mapped[str] = mapped_column(String)
    user_id: Mapped[int]
    class_ref: Mapped[int]
    enrolment_id: Mapped[int | None]
    class_id: Mapped[int]
    section_id: Mapped[int | None]


class OneRosterClass(OneRosterRow, db.Model):
    """A OneRoster class as a row (GET /ims/oneroster/rostering/v1p2/classes): a homeroom class (kind 0,
    a Schoolhouse class) or a scheduled class (kind 1, a subject taught in a class). Derived, as
    OneRosterEnrollment is (migration 0016_oneroster_rows, the view oneroster_classes_live)."""

    __tablename__ = "oneroster_classes"
    title: Mapped[str] = mapped_column(String)
    class_code: Mapped[str] = mapped_column(String)
    class_type: Mapped[str] = mapped_column(String)
    grade: Mapped[int]
    course_sid: Mapped[str] = mapped_column(String)
    year_id: Mapped[int]
    subject: Mapped[str | None] = mapped_column(String)
    subject_id: Mapped[int | None]
    class_id: Mapped[int]
    section_id: Mapped[int | None]
