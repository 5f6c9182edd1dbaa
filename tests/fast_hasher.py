"""The password hasher of the in-process tests: Django's PBKDF2 at 1,000 iterations instead of
~1,000,000 (0.36 s a hash here, and most tests make a user or log one in). The algorithm's name
and format are PBKDF2's, so a stack in another process (which keeps the production hasher) still
verifies these hashes: PBKDF2 reads the iteration count from the hash."""

from __future__ import annotations

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1000
