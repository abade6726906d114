"""The Schoolhouse tables the student read touches, mapped read-only (managed = False)."""

from django.db import models


class Guardian(models.Model):
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    email = models.CharField(max_length=255, null=True)
    phone = models.CharField(max_length=40, null=True)
    deleted_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "guardians"


class Student(models.Model):
    admission_number = models.CharField(max_length=40)
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    date_of_birth = models.DateField(null=True)
    gender = models.CharField(max_length=20, null=True)
    grade_level = models.IntegerField(null=True)
    status = models.CharField(max_length=20)
    email = models.CharField(max_length=255, null=True)
    user_id = models.IntegerField(null=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "students"


class StudentGuardian(models.Model):
    pk = models.CompositePrimaryKey("student_id", "guardian_id")
    student = models.ForeignKey(Student, models.DO_NOTHING, related_name="guardian_links")
    guardian = models.ForeignKey(Guardian, models.DO_NOTHING)
    relationship = models.CharField(max_length=40)
    is_primary = models.BooleanField()

    class Meta:
        managed = False
        db_table = "student_guardians"
