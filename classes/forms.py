"""Forms of the class pages. They only parse and bound the input; the rules (catalog labs, seat
limits, admission) are in lifecycle.ClassSpec and the services, shared with the API and the CLI."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from classes.lifecycle import ClassSpec
from classes.models import LabClass
from classes.seats import SeatAction
from labs.services.catalog import catalog

LAB_FIELDS = ("lab_1", "lab_2", "lab_3")  # labs in teaching order; the API takes up to CLASSES_MAX_LABS


def lab_choices(optional: bool) -> list[tuple[str, str]]:
    lang = get_language() or "en"
    labs = [(slug, lab.title.get(lang)) for slug, lab in sorted(catalog().labs.items())]
    return [("", "—"), *labs] if optional else labs


class DateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="%Y-%m-%dT%H:%M", **kwargs)


class ClassForm(forms.Form):
    title = forms.CharField(label=_("Title"), max_length=120)
    lab_1 = forms.ChoiceField(label=_("First lab"))
    lab_2 = forms.ChoiceField(label=_("Then (optional)"), required=False)
    lab_3 = forms.ChoiceField(label=_("Then (optional)"), required=False)
    starts_at = forms.DateTimeField(label=_("Starts (UTC)"), widget=DateTimeInput())
    ends_at = forms.DateTimeField(label=_("Ends (UTC)"), widget=DateTimeInput())
    seats = forms.IntegerField(label=_("Seats"), min_value=1)
    grace_minutes = forms.IntegerField(
        label=_("Grace after the end (minutes)"), min_value=0, max_value=240, initial=15,
        help_text=_("Seats stay this long after the end, then they are torn down."),
    )  # fmt: skip
    lead_minutes = forms.IntegerField(
        label=_("Prepare seats before the start (minutes)"), min_value=0, max_value=240, initial=10,
        help_text=_("Learners who join find a running VM at once."),
    )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["seats"]
        assert isinstance(field, forms.IntegerField)
        field.max_value = settings.CLASSES_MAX_SEATS
        field.widget.attrs["max"] = settings.CLASSES_MAX_SEATS
        for name in LAB_FIELDS:
            lab_field = self.fields[name]
            assert isinstance(lab_field, forms.ChoiceField)
            lab_field.choices = lab_choices(optional=name != "lab_1")
        if not self.is_bound and "starts_at" not in self.initial:
            start = timezone.now().replace(second=0, microsecond=0) + timedelta(hours=1)
            self.initial.update(starts_at=start, ends_at=start + timedelta(hours=2))

    @classmethod
    def for_class(cls, klass: LabClass, data: Any = None) -> ClassForm:
        initial = {
            "title": klass.title, "starts_at": klass.starts_at, "ends_at": klass.ends_at, "seats": klass.seats,
            "grace_minutes": klass.grace_minutes, "lead_minutes": klass.lead_minutes,
            **dict(zip(LAB_FIELDS, klass.labs, strict=False)),
        }  # fmt: skip
        return cls(data, initial=initial)

    def spec(self) -> ClassSpec:
        data = self.cleaned_data
        labs = [data[name] for name in LAB_FIELDS if data.get(name)]
        return ClassSpec(
            title=data["title"], labs=labs, starts_at=data["starts_at"], ends_at=data["ends_at"], seats=data["seats"],
            grace_minutes=data["grace_minutes"], lead_minutes=data["lead_minutes"],
        )  # fmt: skip


class JoinForm(forms.Form):
    code = forms.CharField(label=_("Invite code"), max_length=32)


class SeatActionForm(forms.Form):
    action = forms.ChoiceField(
        label=_("Action"),
        choices=[
            (SeatAction.RESET, _("Reset to step")),
            (SeatAction.EXTEND, _("Extend")),
            (SeatAction.REPROVISION, _("Destroy and re-provision")),
            (SeatAction.REMOVE, _("Remove from the class")),
        ],
    )
    seats = forms.TypedMultipleChoiceField(coerce=int, label=_("Seats"))
    step = forms.IntegerField(label=_("Step"), min_value=1, max_value=1000, required=False, initial=1)
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, klass: LabClass, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["seats"]
        assert isinstance(field, forms.TypedMultipleChoiceField)
        field.choices = [
            (seat.pk, seat.user.get_username()) for seat in klass.seat_set.present().select_related("user")
        ]


class ClassActionForm(forms.Form):
    action = forms.ChoiceField(
        choices=[
            ("open_joining", _("Open joining")),
            ("close_joining", _("Close joining")),
            ("add_seats", _("Add seats")),
            ("provision", _("Prepare the seats now")),
            ("next_lab", _("Move on to the next lab")),
            ("end", _("End the class now")),
        ]
    )
    count = forms.IntegerField(label=_("Seats to add"), min_value=1, max_value=1000, required=False)
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)


class InviteForm(forms.Form):
    expires_in_hours = forms.IntegerField(
        label=_("Expires after (hours, empty: never)"), min_value=1, max_value=24 * 90, required=False
    )


class CoInstructorForm(forms.Form):
    name = forms.CharField(label=_("Username or e-mail address"), max_length=254)
