"""A quick password hasher for the test suite: PBKDF2-SHA256 with few iterations.

Django's default PBKDF2 runs 870,000 iterations (about 0.4 s a password on
a small machine), and the suite's fixtures set hundreds of passwords. The
hashes this writes are ordinary `pbkdf2_sha256$<iterations>$...` strings,
which the default hasher of any process (a portal server a test starts)
checks as well; such a process would upgrade them at the next login.
Never for a real portal: the suite's conftest puts it first, nothing else does.
"""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1_000
