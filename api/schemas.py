"""What the JSON API reads and writes (pydantic models via django-ninja); the OpenAPI document is made from them."""

from __future__ import annotations

import datetime
from typing import Annotated

from ninja import Field, Schema
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from grants import selectors


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; the pages' form fields refuse it too.
    if "\x00" in value:
        raise ValueError("Null characters are not allowed.")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
# Bounded so that a huge number is a validation error, not an overflow; the
# lifecycle says what the profile allows.
Seconds = Annotated[int, Field(ge=1, le=10**8)]


class Error(Schema):
    code: str = Field(
        description="Stable: invalid, unauthorized, not_allowed, not_found, conflict, rate_limited, server_error."
    )
    message: str = Field(description="For people: what went wrong and what to do.")
    field: str | None = Field(None, description="The input field at fault, for `invalid`.")
    errors: list[FieldError] | None = Field(None, description="Every field at fault, for `invalid`.")


class FieldError(Schema):
    field: str | None
    message: str


Error.model_rebuild()


class ProfileOut(Schema):
    name: str
    title: str
    description: str
    target: str
    kind: str
    default_duration_seconds: int
    max_duration_seconds: int
    risk: str
    approvers: str = Field(description="Who decides each step, e.g. 'a member of db-approvers'.")
    request_fields: list[str] = Field(description="Extra fields its kind takes in POST /requests, e.g. public_key.")


def _kind_field_type(field, kinds):
    which = " or ".join(sorted(kinds))
    value = Annotated[str, Field(max_length=field.max_length), AfterValidator(_no_nul)]
    return Annotated[value | None, Field(None, description=f"For {which} profiles. {field.help_text}".strip())]


def _kind_fields_schema(schema: dict) -> None:
    """Document the request fields of every registered target kind among RequestIn's properties.

    Called when the OpenAPI document is made, not at import, so that the web
    processes do not import every connector's driver to start.
    """
    for name, (field, kinds) in selectors.request_fields().items():
        prop = TypeAdapter(_kind_field_type(field, kinds)).json_schema()
        prop.pop("default", None)
        schema["properties"].setdefault(name, {**prop, "title": name.replace("_", " ").title()})


class RequestIn(BaseModel):
    """A new request; the profile's target kind may take more fields (GET /profiles lists them as request_fields)."""

    # Those fields are the kind's connector's own (`Connector.request_fields`):
    # `kind_params` reads and checks them, so a new kind needs no change here.
    # A plain pydantic model, not a ninja Schema: Schema reads its input
    # through attribute access (for ORM objects) and so drops the extra fields.
    model_config = ConfigDict(extra="allow", json_schema_extra=_kind_fields_schema)

    profile: Text = Field(
        max_length=64, description="The profile's name, as listed by GET /profiles.", examples=["appdb-readonly"]
    )
    duration_seconds: Seconds = Field(examples=[1800])
    justification: Text = Field(max_length=20000, examples=["Investigate INC-4711: slow order queries on appdb"])
    ticket: Text = Field("", max_length=1000, examples=["INC-4711"])
    starts_at: AwareDatetime | None = Field(
        None, description="Start of a scheduled window (with a time zone); empty: as soon as approved."
    )
    reviewers: list[Text] = Field(
        [], max_length=10, description="Approvers you suggest (usernames); they are told first."
    )

    def kind_params(self, kind: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """Return the request fields of target `kind` filled in, and (field, message) for each that breaks its rules."""
        extra = self.model_extra or {}
        params, errors = {}, []
        for name, (field, kinds) in selectors.request_fields([kind]).items():
            try:
                value = TypeAdapter(_kind_field_type(field, kinds)).validate_python(extra.get(name))
            except PydanticValidationError as exc:
                errors += [(name, f"{name}: {error['msg']}") for error in exc.errors()]
                continue
            if value:
                params[name] = value
        return params, errors


class DecisionIn(Schema):
    comment: Text = Field("", max_length=2000)


class ExtensionIn(Schema):
    duration_seconds: Seconds = Field(examples=[1800])
    justification: Text = Field(max_length=20000, examples=["The migration runs longer than planned (INC-4711)"])


class ApprovalOut(Schema):
    approver: str
    on_behalf_of: str | None = Field(description="The approver whose delegate decided.")
    step: int = Field(description="1-based.")
    comment: str
    created_at: datetime.datetime


class GrantOut(Schema):
    id: int
    status: str = Field(description="scheduled, active, revoking, revoked or failed.")
    is_active: bool = Field(description="Active and not past expiry.")
    starts_at: datetime.datetime | None
    expires_at: datetime.datetime | None
    end_reason: str = Field(description="expired, released, revoked or policy; empty while live.")
    credentials_available: bool = Field(description="GET .../credentials would return them (once).")
    last_error: str


class OnCallOut(Schema):
    user: str
    schedule: str
    why: str = Field(description="How the schedule came to name them (rotation shift, override or calendar event).")
    fallback: bool = Field(description="Asked when the step escalated.")


class RequestOut(Schema):
    id: int
    status: str = Field(description="pending, approved, denied, cancelled or lapsed.")
    profile: str
    profile_title: str
    target: str
    requester: str
    scope: dict = Field(
        description="What the request grants, frozen when it was submitted: exactly this is approved and provisioned."
    )
    duration_seconds: int
    justification: str
    ticket: str
    starts_at: datetime.datetime | None
    created_at: datetime.datetime
    decided_at: datetime.datetime | None
    decided_by: str | None
    decision_comment: str
    auto_rule: str
    break_glass: bool
    extends: int | None = Field(description="For an extension: the grant it extends.")
    step: int = Field(description="The step waiting (1-based).")
    steps: int
    waiting_for: str | None = Field(description="While pending: who may decide the current step.")
    reviewers: list[str] = Field(description="Approvers the requester suggested; told first.")
    on_call: list[OnCallOut] = Field(description="Whom on-call schedules named for the current step, and why.")
    approvals: list[ApprovalOut]
    grant: GrantOut | None
    url: str = Field(description="The request's page in the portal.")


class CredentialsOut(Schema):
    request: int
    grant: int
    kind: str = Field(description="The target's kind: postgres, mysql, ssh, aws.")
    expires_at: datetime.datetime
    credentials: dict[str, str]


class DelegationIn(Schema):
    delegate: Text = Field(max_length=150, description="The delegate's username.")
    starts_at: AwareDatetime = Field(description="From (with a time zone).")
    ends_at: AwareDatetime = Field(description="Until (at most 90 days after the start).")
    reason: Text = Field("", max_length=200, examples=["Out of office"])


class DelegationOut(Schema):
    id: int
    delegator: str
    delegate: str
    starts_at: datetime.datetime
    ends_at: datetime.datetime
    reason: str


class ReviewOut(Schema):
    id: int
    title: str
    opened_at: datetime.datetime
    opened_by: str | None = Field(description="Empty when the catalog's schedule opened it.")
    due_at: datetime.datetime
    undecided: str = Field(description="What happens to undecided items at the due date: keep or remove.")
    open: bool
    closed_at: datetime.datetime | None
    closed_by: str | None = Field(default=None, description="Who closed it before its due date; empty otherwise.")
    items: int
    decided: int
    url: str = Field(description="The campaign's page in the portal.")


class ReviewItemOut(Schema):
    id: int
    review: int
    profile: str
    person: str
    role: str = Field(description="requester (may request the profile) or approver (may approve it).")
    via: str = Field(description="What gives it: IdP groups or on-call schedules.")
    grants: int = Field(description="The person's grants of the profile in the campaign's period.")
    hours: float
    last_used_at: datetime.datetime | None
    break_glass: int
    decisions: int = Field(description="Requests of the profile the person decided in the period.")
    decision: str = Field(description="keep, remove, or empty while undecided.")
    decided_by: str | None
    decided_at: datetime.datetime | None
    comment: str
    by_rule: bool
    changed_from: str = Field(default="", description="The decision the latest change replaced; empty if none.")
    earlier_decisions: str = Field(default="", description="Every decision replaced, oldest first, one a line.")
    may_decide: bool = Field(description="Whether you may decide it now (or change your decision).")


class ReviewDecisionIn(Schema):
    decision: str = Field(description="keep or remove.", examples=["keep"])
    comment: Text = Field(max_length=2000, description="Why (at least 5 characters): it is evidence.")


class RemovalOut(Schema):
    id: int
    person: str
    profile: str
    role: str = Field(description="requester or approver: what the person was removed from.")
    review: int | None = Field(description="The campaign whose decision removed it.")
    created_at: datetime.datetime
    in_force: bool = Field(description="Whether the portal refuses the person now.")
    reinstated_at: datetime.datetime | None
    reinstated_by: str | None
    reinstate_reason: str


class ReinstateIn(Schema):
    reason: Text = Field(max_length=2000, description="Why (at least 5 characters): it is evidence.")
