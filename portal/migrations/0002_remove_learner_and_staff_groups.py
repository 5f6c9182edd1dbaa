"""The learner and staff groups were granted but never checked: every account is a learner, and
staff is Django's `is_staff`. Reversing recreates the empty groups (memberships are not restored)."""

from django.db import migrations

UNUSED = ("learner", "staff")


def remove_groups(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("auth", "Group").objects.filter(name__in=UNUSED).delete()


def recreate_groups(apps, schema_editor):  # type: ignore[no-untyped-def]
    Group = apps.get_model("auth", "Group")
    for name in UNUSED:
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [("portal", "0001_roles")]
    operations = [migrations.RunPython(remove_groups, recreate_groups)]
