"""A Raft group's membership (pure): voters, learners, and which changes are safe.

A group's configuration is a :class:`Config`: the **voters** (they elect the
leader and count toward commit and ReadIndex majorities) and the **learners**
(non-voters: they receive the log and snapshots, never vote, never campaign, and
count toward nothing).  A new replica joins as a learner, catches up, and is then
promoted; a replica leaves by being removed.

A change is one entry in the group's own log (``commands.change_members``) and
takes effect, on every replica, when that entry is **applied** -- as etcd's raft
does -- not when it is appended (pysyncobj's own membership entries do the
latter, and are pickled).  Applied-time changes are safe with single-server
steps provided that

* each change adds or removes at most **one voter** (any two majorities of the
  old and the new voter sets then overlap);
* a leader proposes a change only once its term's no-op is applied (so it has
  applied everything an earlier leader may have committed, the fix for the
  single-server bug Ongaro described in 2015), and only when no earlier change
  of its is still unapplied: one change at a time.

The version counts changes; a change names the version it was decided from, so
two changes decided from the same configuration cannot both apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_MEMBERS = 16  # voters + learners; a group of more is a mistake, not a configuration
PROMOTE_AT = 0.9  # a learner is promoted once it holds 90 % of the leader's log (etcd's rule)


@dataclass(frozen=True)
class Config:
    """One configuration of a group: node ids, sorted; ``version`` counts changes."""

    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()
    version: int = 0

    @classmethod
    def of(cls, voters: Iterable[str], learners: Iterable[str] = (), version: int = 0) -> Config:
        """A config from any iterables (sorted, so equal configs compare equal)."""
        return cls(tuple(sorted(voters)), tuple(sorted(learners)), version)

    @property
    def members(self) -> frozenset[str]:
        """Every node holding a replica: voters and learners."""
        return frozenset(self.voters) | frozenset(self.learners)

    def to_wire(self) -> dict[str, Any]:
        """Stored / wire form."""
        return {"voters": list(self.voters), "learners": list(self.learners), "version": self.version}

    @classmethod
    def from_wire(cls, d: Any) -> Config:
        """Inverse of :meth:`to_wire`; ValueError if malformed (it may come from a peer)."""
        if not isinstance(d, Mapping):
            raise ValueError("a configuration must be a map")
        voters, learners, version = d.get("voters"), d.get("learners", []), d.get("version", 0)
        for name, ids in (("voters", voters), ("learners", learners)):
            if not (isinstance(ids, list) and all(isinstance(n, str) and 0 < len(n) <= 64 for n in ids)
                    and len(set(ids)) == len(ids)):
                raise ValueError(f"configuration {name} must be a list of distinct node ids")
        if type(version) is not int or not 0 <= version < 2**63:
            raise ValueError("configuration version must be a non-negative int")
        return cls.of(voters, learners, version)


def refusal(old: Config, voters: Iterable[str], learners: Iterable[str]) -> str | None:
    """Why changing ``old`` to (``voters``, ``learners``) is not one safe step, or None if it is."""
    new_v, new_l = set(voters), set(learners)
    if not new_v:
        return "a group needs at least one voter"
    if new_v & new_l:
        return f"{sorted(new_v & new_l)} cannot be both voter and learner"
    if len(new_v) + len(new_l) > MAX_MEMBERS:
        return f"a group has at most {MAX_MEMBERS} members"
    old_v = set(old.voters)
    if len(old_v ^ new_v) > 1:
        return "a change may add or remove at most one voter at a time"
    added = new_v - old_v
    if added and not added <= set(old.learners):
        return f"{sorted(added)[0]} must join as a learner and catch up before it votes"
    if new_v == old_v and new_l == set(old.learners):
        return "the change changes nothing"
    return None


def apply(old: Config, voters: Iterable[str], learners: Iterable[str], expected_version: int) -> Config | str:
    """The configuration after a change decided from version ``expected_version``, or why not."""
    if expected_version != old.version:
        return f"the configuration is at version {old.version}, not {expected_version}"
    why = refusal(old, voters, learners)
    return why if why is not None else Config.of(voters, learners, old.version + 1)


def caught_up(match_index: int, leader_last: int) -> bool:
    """Whether a learner holding the log up to ``match_index`` may be promoted: at least 90 % of
    the leader's last index, as etcd requires (it then catches up the rest as a voter)."""
    return match_index > 0 and match_index >= PROMOTE_AT * leader_last


@dataclass(frozen=True)
class Step:
    """What a group's leader does next to move a replica: ``change`` to (voters, learners),
    ``transfer`` its leadership to ``target``, ``wait``, or nothing left (``done``)."""

    kind: str
    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()
    target: str | None = None
    why: str = ""


def next_step(config: Config, *, add: str | None, remove: str | None, me: str,
              learner_match: Mapping[str, int], last_index: int) -> Step:
    """The next step toward ``add`` holding a voting replica and ``remove`` none, as leader ``me``
    sees it; each step is one safe change, so a crash between steps leaves a valid group and the
    same call resumes.  ``add`` joins as a learner and is promoted once caught up before anything
    is removed, so the group never drops below its voter count on the way.
    """
    voters, learners = set(config.voters), set(config.learners)
    if add is not None and add not in voters:
        if add not in learners:
            return Step("change", config.voters, tuple(sorted(learners | {add})), why=f"{add} joins as a learner")
        match = learner_match.get(add, 0)
        if not caught_up(match, last_index):
            return Step("wait", why=f"{add} is catching up ({match} of {last_index})")
        return Step("change", tuple(sorted(voters | {add})), tuple(sorted(learners - {add})),
                    why=f"{add} is promoted")
    if remove is not None and remove in learners:
        return Step("change", config.voters, tuple(sorted(learners - {remove})), why=f"learner {remove} leaves")
    if remove is not None and remove in voters:
        if len(voters) == 1:
            return Step("wait", why=f"{remove} is the group's last voter")
        if remove == me:
            # a leader cannot remove itself (pysyncobj; and it would have to step down anyway)
            others = sorted(voters - {me})
            return Step("transfer", target=add if add in others else others[0],
                        why=f"{me} hands leadership away before it leaves")
        return Step("change", tuple(sorted(voters - {remove})), config.learners, why=f"{remove} leaves")
    return Step("done")
