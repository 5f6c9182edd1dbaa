"""Fixtures for class tests: an instructor, a co-instructor, another instructor, learners, and a
class of the test lab in a lab world (private Redis, the test lab, one advertised host)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from classes.models import LabClass
from portal.roles import INSTRUCTOR, grant_role
from tests import access_matrix
from tests.conftest import make_user
from tests.labs.conftest import sent_tasks

shared_redis, lab_world = access_matrix.shared_redis, access_matrix.lab_world
fast_passwords = access_matrix.fast_passwords  # autouse
__all__ = ["sent_tasks"]  # every task message a test publishes
HOST = access_matrix.HOST


@pytest.fixture
def teacher(db: None) -> User:
    """An instructor: owns the class."""
    user = make_user("teacher")
    grant_role(user, INSTRUCTOR)
    return user


@pytest.fixture
def ta(db: None) -> User:
    """The class's co-instructor (not an instructor in their own right)."""
    return make_user("ta")


@pytest.fixture
def rival(db: None) -> User:
    """Another instructor, of no part in the class."""
    user = make_user("rival")
    grant_role(user, INSTRUCTOR)
    return user


@pytest.fixture
def klass(teacher: User, ta: User, lab_world: str) -> LabClass:
    """A class of the test lab, 2 seats, running now."""
    now = timezone.now()
    made = LabClass.objects.create(
        title="Intro", owner=teacher, labs=[lab_world], seats=2, starts_at=now - timedelta(minutes=5),
        ends_at=now + timedelta(hours=1),
    )  # fmt: skip
    made.co_instructors.add(ta)
    return made


@pytest.fixture
def klass_open(teacher: User, ta: User, lab_world: str) -> LabClass:
    """A class under way, created as an instructor does (admitted, invite, reservation on the host)."""
    from classes import lifecycle

    now = timezone.now()
    spec = lifecycle.ClassSpec(title="Open", labs=[lab_world], starts_at=now - timedelta(minutes=1),
                               ends_at=now + timedelta(hours=1), seats=2)  # fmt: skip
    made = lifecycle.create_class(teacher, spec)
    made.co_instructors.add(ta)
    return made
