"""Roles are Django groups; one place names them and answers who holds which.

A role is a group only when something checks it: "instructor" (classes are built on it). Every
account is a learner, so that needs no group, and staff is Django's own `is_staff`.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group

INSTRUCTOR = "instructor"
ALL_ROLES = (INSTRUCTOR,)


def has_role(user: AbstractBaseUser | AnonymousUser, role: str) -> bool:
    if not user.is_authenticated:
        return False
    if getattr(user, "is_superuser", False):
        return True
    return user.groups.filter(name=role).exists()  # type: ignore[attr-defined]


def grant_role(user: AbstractBaseUser, role: str) -> None:
    if role not in ALL_ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ALL_ROLES)}")
    group, _ = Group.objects.get_or_create(name=role)
    user.groups.add(group)  # type: ignore[attr-defined]
