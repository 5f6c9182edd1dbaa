from django.contrib import admin

from labs.models import LabSession, PoolVM, StepResult


class StepResultInline(admin.TabularInline):  # type: ignore[type-arg]
    model = StepResult
    extra = 0
    readonly_fields = ("step", "passed", "message", "duration_s", "created_at")


@admin.register(LabSession)
class LabSessionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "user", "lab_slug", "state", "host", "current_step", "created_at", "expires_at")
    list_filter = ("state", "host", "lab_slug")
    search_fields = ("id", "user__username", "lab_slug")
    readonly_fields = ("id", "created_at", "updated_at", "ready_at", "ended_at")
    inlines = [StepResultInline]


@admin.register(PoolVM)
class PoolVMAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "host", "profile", "lab_slug", "reservation", "state", "session", "created_at")
    list_filter = ("host", "profile", "state")
