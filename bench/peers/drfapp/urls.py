"""GET /students/<id>: a RetrieveAPIView with a ModelSerializer, the student's guardians prefetched
(the JSON of Schoolhouse's GET /api/v1/students/{id}); GET /ping for the benchmark's start probe."""

from django.db.models import Prefetch
from django.http import HttpResponse
from django.urls import path
from rest_framework import generics, serializers

from .models import Student, StudentGuardian


class GuardianLinkSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(source="guardian.id")
    first_name = serializers.CharField(source="guardian.first_name")
    last_name = serializers.CharField(source="guardian.last_name")
    email = serializers.CharField(source="guardian.email", allow_null=True)
    phone = serializers.CharField(source="guardian.phone", allow_null=True)

    class Meta:
        model = StudentGuardian
        fields = ["id", "first_name", "last_name", "email", "phone", "relationship", "is_primary"]


class StudentSerializer(serializers.ModelSerializer):
    guardians = GuardianLinkSerializer(source="guardian_links", many=True)

    class Meta:
        model = Student
        fields = [
            "id",
            "admission_number",
            "first_name",
            "last_name",
            "date_of_birth",
            "gender",
            "grade_level",
            "status",
            "email",
            "user_id",
            "created_at",
            "updated_at",
            "guardians",
        ]


class StudentDetail(generics.RetrieveAPIView):
    serializer_class = StudentSerializer
    queryset = Student.objects.filter(deleted_at__isnull=True).prefetch_related(
        Prefetch(
            "guardian_links",
            queryset=StudentGuardian.objects.select_related("guardian")
            .filter(guardian__deleted_at__isnull=True)
            .order_by("-is_primary", "guardian_id"),
        )
    )


def ping(request):
    return HttpResponse("pong")


urlpatterns = [path("students/<int:pk>", StudentDetail.as_view()), path("ping", ping)]
