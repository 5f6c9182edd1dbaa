"""The lab world every hostile-input test asks in (tests/access_matrix.py: a private Redis, the
test lab, an advertised host, alice's ready session, bob, staff charlie) and hostile content."""

from tests.access_matrix import (  # noqa: F401  (fixtures)
    charlie,
    fast_passwords,
    lab_world,
    people,
    session,
    shared_redis,
)
from tests.hostile.hostile_content import hostile_world  # noqa: F401  (fixture)
