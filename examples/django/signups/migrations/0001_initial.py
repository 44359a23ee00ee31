from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="Signup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("email", models.EmailField(max_length=254, unique=True)),
                (
                    "referrals",
                    models.PositiveIntegerField(default=0),  # pyright: ignore[reportArgumentType]
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("welcomed_at", models.DateTimeField(blank=True, null=True)),
            ],
        ),
    ]
