"""Reads of access reviews: campaigns, their progress, a reviewer's items, the evidence, removals the IdP lacks."""

from __future__ import annotations

import dataclasses

from django.contrib.auth import get_user_model
from django.db.models import Count, Q

from grants import policy, reviews
from grants.models import AccessProfile, AccessReview, AccessReviewItem, EligibilityRemoval

REVIEW_DECISIONS = AccessReviewItem.Decision
REVIEW_ROLES = AccessReviewItem.Role
UNDECIDED_RULES = AccessReview.Undecided
may_open_review = reviews.may_open
may_reinstate = reviews.may_open  # whoever may open campaigns reinstates a removal after its campaign closed
review_refusal = reviews.review_refusal

_ITEM_RELATED = ("review", "profile__policy", "person__manager", "decided_by")
_REMOVAL_RELATED = ("person", "profile__policy", "item__review", "reinstated_by")


def sees_all_reviews(user) -> bool:
    """Return whether `user` sees every campaign and item: auditors, openers and admins."""
    return user.is_authenticated and (user.has_perm("audit.view_auditevent") or reviews.may_open(user))


def reviewer_pools(review: AccessReview) -> dict:
    """Return profile id -> the profile's reviewers, read once for a page of the campaign's items."""
    return {p.pk: reviews.profile_reviewers(p) for p in review.profiles.select_related("policy")}


def review_items(review: AccessReview):
    """Return every item of the campaign, by profile, role and person (the evidence's rows)."""
    return review.items.select_related(*_ITEM_RELATED).order_by("profile__name", "role", "person__username", "pk")


def items_for_reviewer(user, review: AccessReview) -> list:
    """Return the campaign's items `user` may decide (reviews.review_refusal), undecided first."""
    pools = reviewer_pools(review)
    mine = [item for item in review_items(review) if reviews.review_refusal(user, item, pools=pools) is None]
    return sorted(mine, key=lambda item: bool(item.decision))


def may_view_review(user, review: AccessReview) -> bool:
    """Return whether `user` may see the campaign page: auditors, openers, admins, and its reviewers."""
    return sees_all_reviews(user) or bool(items_for_reviewer(user, review))


def reviews_for(user) -> list[AccessReview]:
    """Return the campaigns `user` may see, newest first, each with `total` and `decided` counts."""
    campaigns = AccessReview.objects.annotate(
        total=Count("items"), decided=Count("items", filter=~Q(items__decision=""))
    ).select_related("opened_by", "closed_by")
    if sees_all_reviews(user):
        return list(campaigns)
    return [r for r in campaigns if r.is_open and items_for_reviewer(user, r)]


def review_of(review_id) -> AccessReview | None:
    return (
        AccessReview.objects.annotate(total=Count("items"), decided=Count("items", filter=~Q(items__decision="")))
        .select_related("opened_by", "closed_by")
        .filter(pk=review_id)
        .first()
    )


def review_item_of(item_id) -> AccessReviewItem | None:
    return AccessReviewItem.objects.select_related(*_ITEM_RELATED).filter(pk=item_id).first()


@dataclasses.dataclass
class Progress:
    label: str
    total: int = 0
    decided: int = 0
    removed: int = 0

    @property
    def percent(self) -> int:
        return round(100 * self.decided / self.total) if self.total else 100


def review_progress(review: AccessReview) -> tuple[list[Progress], list[Progress]]:
    """Return the campaign's progress per profile, and per reviewer (the items each may decide, and decided)."""
    per_profile: dict[str, Progress] = {}
    per_reviewer: dict[str, Progress] = {}
    pools = reviewer_pools(review)
    for item in review_items(review):
        row = per_profile.setdefault(item.profile.title, Progress(item.profile.title))
        row.total += 1
        row.decided += bool(item.decision)
        row.removed += item.decision == REVIEW_DECISIONS.REMOVE
        for user in reviews.item_reviewers(item, pools=pools):
            who = per_reviewer.setdefault(user.username, Progress(user.username))
            who.total += 1
            who.decided += bool(item.decision) and item.decided_by_id == user.pk
        if item.decided_by_id is None and item.by_rule:
            rule = per_reviewer.setdefault("(the campaign's rule)", Progress("(the campaign's rule)"))
            rule.decided += 1
    return list(per_profile.values()), sorted(per_reviewer.values(), key=lambda p: p.label)


def open_review_items_of(user) -> int:
    """Return how many undecided items of open campaigns `user` may decide (for a reminder or a badge)."""
    return sum(
        1 for r in AccessReview.objects.filter(closed_at=None) for i in items_for_reviewer(user, r) if not i.decision
    )


def undecided_reviewers(review: AccessReview) -> list:
    """Return the people who may decide some undecided item of the campaign, by username."""
    pools = reviewer_pools(review)
    found = {}
    for item in review_items(review).filter(decision=""):
        for user in reviews.item_reviewers(item, pools=pools):
            found[user.pk] = user
    return sorted(found.values(), key=lambda u: u.username)


def removal_of(removal_id) -> EligibilityRemoval:
    return EligibilityRemoval.objects.select_related(*_REMOVAL_RELATED).get(pk=removal_id)


def removal_or_none(removal_id) -> EligibilityRemoval | None:
    return EligibilityRemoval.objects.select_related(*_REMOVAL_RELATED).filter(pk=removal_id).first()


def removals_in_force():
    """Return the removals the policy honours now, newest first."""
    return EligibilityRemoval.objects.in_force().select_related(*_REMOVAL_RELATED)


def idp_groups_of(removal: EligibilityRemoval) -> list[str]:
    """Return the IdP groups that still give the removed eligibility (empty: the IdP has caught up)."""
    person, profile = removal.person, removal.profile
    names = set(person.groups.values_list("name", flat=True))
    if removal.role == REVIEW_ROLES.REQUESTER:
        return sorted(names & set(profile.requestable_by.values_list("name", flat=True)))
    wanted = {g for s in policy.steps_for(profile) for g in (s.group, s.fallback_group) if g}
    return sorted(names & wanted)


def removals_with_idp_groups() -> list[tuple[EligibilityRemoval, list[str]]]:
    """Return every removal in force with the IdP groups that still give its eligibility (empty: caught up).

    Those with groups are what the IdP's group managers have yet to do; the
    others stay in force too (the person may be put back in the group), and
    are reinstated from the same list.
    """
    return [(removal, idp_groups_of(removal)) for removal in removals_in_force()]


def removals_behind_idp() -> list[tuple[EligibilityRemoval, list[str]]]:
    """Return the removals whose person is still in an IdP group that gives the eligibility, with those groups.

    The portal refuses them anyway; the list is what the IdP's group managers have yet to do.
    """
    return [(removal, groups) for removal, groups in removals_with_idp_groups() if groups]


def reviewable_profiles():
    """Return the profiles a campaign may cover, by title."""
    return AccessProfile.objects.order_by("title")


def idp_group_managers(usernames: list[str]) -> list:
    """Return the active people with these usernames, or the portal's admins when none is named."""
    User = get_user_model()
    if usernames:
        return list(User.objects.filter(username__in=usernames, is_active=True).order_by("username"))
    return list(User.objects.filter(is_superuser=True, is_active=True).order_by("username"))
