"""Sign-ups: the row and its welcome task are written in one transaction.

``POST /signups`` (form fields ``email`` and, optionally, ``referred_by``: the address of an
earlier signup, credited with a referral) answers 201 with the signup's id and its task's id;
``POST /signups/async`` is the same from an async view; ``GET /signups/<id>`` shows a signup.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django import forms
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET, require_POST

from signups.models import Signup
from signups.tasks import send_welcome


class SignupForm(forms.Form):
    email = forms.EmailField()
    referred_by = forms.EmailField(required=False)


class SignupRefused(Exception):
    """Ends a signup's transaction without committing anything (the message says why)."""


def create_signup(email: str, referred_by: str) -> tuple[Signup, str]:
    """Write the signup, send its welcome and credit the referrer, all or nothing; returns the
    signup and its task's id.

    Raises:
        IntegrityError: ``email`` has already signed up.
        SignupRefused: ``referred_by`` is no signup's address.
        RuntimeError: the welcome could not be sent (no horsies schema, database error).
    """
    # Django has no type hints: the type checker cannot tell atomic() from its decorator form.
    with transaction.atomic():  # pyright: ignore[reportGeneralTypeIssues]
        signup = Signup.objects.create(email=email)
        # Written through Django's connection, inside this transaction: the task exists only if
        # the transaction commits, and workers are woken at the commit.
        handle = send_welcome.within(connection).send(signup.pk)
        if not handle.sent:
            # Refused or failed (its get() says why, without a round trip). Raising rolls the
            # signup back: none is committed without its welcome (Django answers 500).
            raise RuntimeError(f"welcome not sent: {handle.get().err_value.message}")
        # From here on, whatever fails rolls back the signup and its task together.
        if referred_by:
            credited = Signup.objects.filter(email=referred_by).update(referrals=F("referrals") + 1)
            if not credited:
                raise SignupRefused(f"no signup has the address {referred_by!r}")
    return signup, handle.task_id


def _respond(form: SignupForm) -> JsonResponse:
    """The signup of a posted form, as a response."""
    if form.errors:  # a bound form: the same as not form.is_valid()
        return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    email: str = form.cleaned_data["email"]
    try:
        signup, task_id = create_signup(email, form.cleaned_data["referred_by"])
    except IntegrityError:
        return JsonResponse({"error": f"{email} has already signed up"}, status=409)
    except SignupRefused as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"id": signup.pk, "email": email, "task_id": task_id}, status=201)


@require_POST
def sign_up(request: HttpRequest) -> JsonResponse:
    return _respond(SignupForm(request.POST))


@require_POST
async def sign_up_async(request: HttpRequest) -> JsonResponse:
    """``sign_up`` from an async view: Django's connections and transactions are for blocking
    code, so the transaction runs in one call through ``sync_to_async`` (in one thread, on that
    thread's connection)."""
    return await sync_to_async(_respond)(SignupForm(request.POST))


@require_GET
def signup_detail(request: HttpRequest, signup_id: int) -> JsonResponse:
    signup = get_object_or_404(Signup, pk=signup_id)
    return JsonResponse(
        {
            "id": signup.pk,
            "email": signup.email,
            "referrals": signup.referrals,
            "welcomed": signup.welcomed_at is not None,
        }
    )
