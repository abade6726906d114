"""The FastAPI peer: GET /students/{id} as a sync endpoint (FastAPI runs it in its thread pool) with
SQLAlchemy Core, response_model serialisation by Pydantic, no authentication. Served by gunicorn with
uvicorn workers (uvicorn_worker.UvicornWorker, uvloop + httptools): its best server setup.

The student and its guardians are two statements, as Schoolhouse's GET /api/v1/students/{id} answers
with both (app/people/routes.py: StudentDetailOut)."""

import os
from datetime import date, datetime

from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    select,
)

_meta = MetaData()
students = Table(
    "students",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("admission_number", String),
    Column("first_name", String),
    Column("last_name", String),
    Column("date_of_birth", Date),
    Column("gender", String),
    Column("grade_level", Integer),
    Column("status", String),
    Column("email", String),
    Column("user_id", Integer),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    Column("deleted_at", DateTime(timezone=True)),
)
guardians = Table(
    "guardians",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("first_name", String),
    Column("last_name", String),
    Column("email", String),
    Column("phone", String),
    Column("deleted_at", DateTime(timezone=True)),
)
links = Table(
    "student_guardians",
    _meta,
    Column("student_id", Integer),
    Column("guardian_id", Integer),
    Column("relationship", String),
    Column("is_primary", Boolean),
)

engine = create_engine(
    os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://", 1),
    pool_size=4,  # as Schoolhouse's bench workers (DB_POOL_SIZE / DB_MAX_OVERFLOW in bench/run.py)
    max_overflow=4,
    pool_pre_ping=False,
)
_STUDENT = select(*(c for c in students.c if c.name != "deleted_at")).where(
    students.c.id == bindparam("id"), students.c.deleted_at.is_(None)
)
_GUARDIANS = (
    select(
        guardians.c.id,
        guardians.c.first_name,
        guardians.c.last_name,
        guardians.c.email,
        guardians.c.phone,
        links.c.relationship,
        links.c.is_primary,
    )
    .join(links, links.c.guardian_id == guardians.c.id)
    .where(links.c.student_id == bindparam("id"), guardians.c.deleted_at.is_(None))
    .order_by(links.c.is_primary.desc(), guardians.c.id)
)


class GuardianLink(BaseModel):
    id: int
    first_name: str
    last_name: str
    email: str | None
    phone: str | None
    relationship: str
    is_primary: bool


class StudentDetail(BaseModel):
    id: int
    admission_number: str
    first_name: str
    last_name: str
    date_of_birth: date | None
    gender: str | None
    grade_level: int | None
    status: str
    email: str | None
    user_id: int | None
    created_at: datetime
    updated_at: datetime
    guardians: list[GuardianLink]


app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/ping", response_class=PlainTextResponse)
def ping():
    return "pong"


@app.get("/students/{student_id}", response_model=StudentDetail)
def get_student(student_id: int):
    with engine.connect() as conn:
        row = conn.execute(_STUDENT, {"id": student_id}).mappings().first()
        if row is None:
            raise HTTPException(status_code=404, detail="Not found")
        found = conn.execute(_GUARDIANS, {"id": student_id}).mappings().all()
    return {**row, "guardians": found}
