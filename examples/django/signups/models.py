from __future__ import annotations

from django.db import models


class Signup(models.Model):
    """One person who signed up; ``welcomed_at`` is set by the welcome task once it has run."""

    email = models.EmailField(unique=True)
    # Django has no type hints: the type checker takes `default`'s own default for its type.
    referrals = models.PositiveIntegerField(default=0)  # pyright: ignore[reportArgumentType]
    created_at = models.DateTimeField(auto_now_add=True)
    welcomed_at = models.DateTimeField(null=True, blank=True)

    # Declared (Django would add the same) so that the type checker knows it.
    objects = models.Manager()
