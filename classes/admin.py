"""Staff's view of classes. The instructor role itself is granted on the user (Groups: "instructor")
or with `manage.py classes grant-instructor USER`."""

from django.contrib import admin

from classes.models import ClassAction, Invite, LabClass, Seat


class InviteInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Invite
    extra = 0
    fields = ("code", "created_by", "created_at", "expires_at", "revoked_at")
    readonly_fields = ("code", "created_by", "created_at")


class SeatInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Seat
    extra = 0
    fields = ("user", "session", "waiting", "joined_at")
    readonly_fields = ("user", "session", "joined_at")


class ClassActionInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ClassAction
    extra = 0
    fields = ("at", "actor", "action", "detail")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(LabClass)
class LabClassAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "title", "owner", "state", "seats", "starts_at", "ends_at", "joining_open")
    list_filter = ("state", "joining_open")
    search_fields = ("title", "owner__username")
    filter_horizontal = ("co_instructors",)
    readonly_fields = ("state", "host_shares", "provisioned_at", "created_at", "ended_at")
    inlines = [InviteInline, SeatInline, ClassActionInline]
