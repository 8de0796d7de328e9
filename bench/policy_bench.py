#!/usr/bin/env python3
"""Policy decision speed: ``bastion.policy.decide`` decisions per second with 1,000 grants.

Two policies of 1,000 grants each are built from a fixed seed:

* realistic: every grant names one team group (``team-0`` .. ``team-249``, so a group is
  named by 4 grants) and sometimes an on-call user; cluster globs such as ``prod-*``,
  ``prod-eu-?``, ``team-N-*``, ``dev-[0-9]``; namespace globs ``team-N-*``; pod selectors
  such as ``app in (api,worker),tier!=db``; varied modes; 1-3 toolbox images pinned by
  digest; varied session and idle limits, Vault roles, reason/recording flags and
  validity windows. The principal is in ``team-7`` and one group no grant names, so the
  index hands ``decide`` only a handful of grants (the common path).
* worst case: every grant also names ``engineering``, the principal's group, and every
  grant's cluster and namespace globs, pod selector, mode and validity window match the
  target, so each of the 1,000 grants is evaluated all the way to the image check. Only
  the last grant approves the requested image ("allowed by the last grant"); an image no
  grant approves is denied after 1,000 full evaluations (and the denial lists every
  approved image); a cluster no grant names is denied at the first glob of every grant.

The baseline, measured in the same run, is a policy of one grant (the worst-case policy's
last grant) answering the same kinds of request: each row's cost is compared with the
1-grant row that ends the same way (allowed, denied at the image, denied at the cluster,
no grant applies).

Each scenario is checked once (the decision must be the expected one), calibrated so a
round takes about ``--round`` seconds, then timed with ``time.perf_counter`` for
``--rounds`` rounds; the table shows the median round. ``now`` is a fixed aware datetime.
Timings include the loop and a ``functools.partial`` call (tens of nanoseconds).

Run from the repository root::

    .venv/bin/python bench/policy_bench.py            # ~10 s
    .venv/bin/python bench/policy_bench.py --quick    # ~2 s
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bastion.labels import parse_selector
from bastion.policy import (
    DebugRequest,
    DebugTarget,
    Decision,
    Grant,
    Mode,
    Policy,
    Principal,
    decide,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
GRANTS = 1000
TEAMS = 250
SEED = 20261128


def image(n: int) -> str:
    """A toolbox image pinned by digest, distinct for every ``n``."""
    digest = hashlib.sha256(f"toolbox-{n}".encode()).hexdigest()
    return f"registry.example.com/toolbox@sha256:{digest}"


TOOLBOXES = [image(n) for n in range(24)]  # the approved images of the realistic policy
UNAPPROVED = "registry.example.com/toolbox@sha256:" + "0" * 64  # in no grant of any policy
WORST_IMAGE = image(999_999)  # approved only by the worst-case policy's last grant

LABELS = {"app": "api", "tier": "backend", "team": "payments"}
TARGET = DebugTarget("prod-eu-1", "payments-api", "api-7f9c6d5b8-x2k4q", LABELS, "app")
TEAM_TARGET = DebugTarget("prod-eu-1", "team-7-api", "api-7f9c6d5b8-x2k4q", LABELS, "app")
REASON = "INC-4821 checkout latency spike"


# ---------------------------------------------------------------------- policies
def realistic_grants(rng: random.Random) -> list[Grant]:
    clusters = ["prod-*", "prod-eu-?", "prod-us-*", "staging-*", "dev-[0-9]", "edge-??"]
    selectors = [
        "app in (api,worker),tier!=db",
        "",
        "app=api",
        "tier in (backend,frontend),!legacy",
        "team in (payments,billing)",
        "app notin (db,cache)",
    ]
    modes = [
        frozenset({Mode.EPHEMERAL}),
        frozenset({Mode.EPHEMERAL, Mode.COPY}),
        frozenset({Mode.EPHEMERAL, Mode.COPY, Mode.POD}),
        frozenset({Mode.COPY}),
    ]
    grants = []
    for i in range(GRANTS):
        team = i % TEAMS
        window: tuple[datetime | None, datetime | None] = (None, None)
        roll = rng.random()
        if roll < 0.10:  # a change window in force now
            window = (NOW - timedelta(hours=2), NOW + timedelta(hours=6))
        elif roll < 0.13:  # an expired temporary grant
            window = (NOW - timedelta(days=30), NOW - timedelta(days=23))
        grants.append(
            Grant(
                name=f"team-{team}-{i:04d}",
                clusters=(*rng.sample(clusters, rng.randint(1, 2)), f"team-{team}-*"),
                namespaces=(f"team-{team}-*", *rng.sample(["shared-tools", "ingress-*"], 1)),
                modes=rng.choice(modes),
                images=frozenset(rng.sample(TOOLBOXES, rng.randint(1, 3))),
                max_session=timedelta(minutes=rng.choice([15, 30, 60, 120, 240])),
                idle_timeout=timedelta(minutes=rng.choice([5, 10, 15, 30])),
                vault_role=f"debug-team-{team}",
                users=frozenset({f"oncall-{i}"}) if i % 10 == 0 else frozenset(),
                groups=frozenset({f"team-{team}"}),
                pod_selector=parse_selector(rng.choice(selectors)),
                reason_required=rng.random() < 0.3,
                record_input=rng.random() < 0.2,
                not_before=window[0],
                not_after=window[1],
            )
        )
    # The first team-7 grant is pinned so the allowed request has a grant that covers it.
    grants[7] = Grant(
        name="team-7-0007",
        clusters=("prod-*", "team-7-*"),
        namespaces=("team-7-*",),
        modes=frozenset({Mode.EPHEMERAL, Mode.COPY}),
        images=frozenset({TOOLBOXES[0]}),
        max_session=timedelta(hours=1),
        idle_timeout=timedelta(minutes=15),
        vault_role="debug-team-7",
        groups=frozenset({"team-7"}),
        pod_selector=parse_selector("app in (api,worker),tier!=db"),
        reason_required=True,
    )
    return grants


def worst_grant(i: int, rng: random.Random, *, last: bool) -> Grant:
    # Each list has globs that miss prod-eu-1/payments-api first, so the alternation works
    # a little, and always one that matches.
    cluster_hits = ["prod-*", "prod-eu-*", "prod-??-1", "prod-[a-z][a-z]-?", "prod-eu-[0-9]"]
    namespace_hits = ["payments-*", "pay*", "*-api", "payments-api", "payments-[a-z]*"]
    selectors = [
        "app in (api,worker),tier!=db",
        "app=api",
        "tier,!legacy",
        "team in (payments,billing)",
        "app notin (db,cache),tier=backend",
    ]
    team = i % TEAMS
    return Grant(
        name=f"grant-{i:04d}",
        clusters=(f"team-{team}-*", "staging-*", rng.choice(cluster_hits)),
        namespaces=(f"team-{team}-*", rng.choice(namespace_hits)),
        modes=frozenset({Mode.EPHEMERAL, *rng.sample([Mode.COPY, Mode.POD], rng.randint(0, 2))}),
        images=frozenset({WORST_IMAGE} if last else {image(1000 + i), image(2000 + i)}),
        max_session=timedelta(minutes=rng.choice([15, 30, 60, 120])),
        idle_timeout=timedelta(minutes=rng.choice([5, 10, 15])),
        vault_role=f"debug-team-{team}",
        groups=frozenset({f"team-{team}", "engineering"}),
        pod_selector=parse_selector(rng.choice(selectors)),
        reason_required=rng.random() < 0.3,
        record_input=rng.random() < 0.2,
        not_before=NOW - timedelta(days=rng.randint(1, 90)),
        not_after=NOW + timedelta(days=rng.randint(1, 90)),
    )


def worst_grants(rng: random.Random) -> list[Grant]:
    return [worst_grant(i, rng, last=i == GRANTS - 1) for i in range(GRANTS)]


# ---------------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Scenario:
    name: str
    policy: Policy
    principal: Principal
    target: DebugTarget
    request: DebugRequest
    outcome: str  # allowed / image / cluster / no-grant: how the decision must end
    baseline: str | None = None  # name of the 1-grant scenario that ends the same way

    def call(self) -> Callable[[], Decision]:
        return functools.partial(
            decide, self.policy, self.principal, self.target, self.request, NOW
        )

    def check(self) -> Decision:
        """Decide once and make sure the scenario measures what its name says."""
        decision = self.call()()
        prefixes = {
            "image": "image ",
            "cluster": "no grant lets ",
            "no-grant": "no grant applies ",
        }
        ok = (
            decision.allowed
            if self.outcome == "allowed"
            else not decision.allowed and decision.reason.startswith(prefixes[self.outcome])
        )
        if not ok:
            raise SystemExit(f"scenario {self.name!r}: unexpected decision {decision}")
        return decision


def scenarios() -> tuple[list[Scenario], dict[str, float]]:
    rng = random.Random(SEED)
    built: dict[str, float] = {}

    start = time.perf_counter()
    realistic = Policy(realistic_grants(rng))
    built["realistic"] = time.perf_counter() - start
    start = time.perf_counter()
    worst_list = worst_grants(rng)
    worst = Policy(worst_list)
    built["worst case"] = time.perf_counter() - start
    single = Policy([worst_list[-1]])

    engineer = Principal("alice", frozenset({"engineering", "team-7"}))
    team_member = Principal("bob", frozenset({"team-7", "viewers"}))
    stranger = Principal("mallory", frozenset({"contractors"}))
    allowed = DebugRequest(Mode.EPHEMERAL, WORST_IMAGE, REASON)
    unapproved = DebugRequest(Mode.EPHEMERAL, UNAPPROVED, REASON)
    elsewhere = DebugTarget("dev-1", "payments-api", "api-0", LABELS)

    b_allow, b_image = "1 grant: allowed", "1 grant: denied, image"
    b_cluster, b_none = "1 grant: denied, cluster", "1 grant: no grant applies"
    team_request = DebugRequest(Mode.EPHEMERAL, TOOLBOXES[0], REASON)
    return [
        Scenario(b_allow, single, engineer, TARGET, allowed, "allowed"),
        Scenario(b_image, single, engineer, TARGET, unapproved, "image"),
        Scenario(b_cluster, single, engineer, elsewhere, allowed, "cluster"),
        Scenario(b_none, single, stranger, TARGET, allowed, "no-grant"),
        Scenario(
            "(a) index: allowed",
            realistic,
            team_member,
            TEAM_TARGET,
            team_request,
            "allowed",
            b_allow,
        ),
        Scenario(
            "(a) index: denied, image",
            realistic,
            team_member,
            TEAM_TARGET,
            DebugRequest(Mode.EPHEMERAL, UNAPPROVED, REASON),
            "image",
            b_image,
        ),
        Scenario(
            "(a) index: no grant applies", realistic, stranger, TARGET, allowed, "no-grant", b_none
        ),
        Scenario(
            "(b) worst: allowed by last", worst, engineer, TARGET, allowed, "allowed", b_allow
        ),
        Scenario("(b) worst: denied, image", worst, engineer, TARGET, unapproved, "image", b_image),
        Scenario(
            "(b) worst: denied, cluster", worst, engineer, elsewhere, allowed, "cluster", b_cluster
        ),
    ], built


# ---------------------------------------------------------------------- timing
@dataclass(frozen=True)
class Measured:
    scenario: Scenario
    candidates: int
    per_round: int
    seconds: list[float]  # per decision, one entry per round
    reason_chars: int
    covering: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(fn: Callable[[], Decision], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return time.perf_counter() - start


def measure(scenario: Scenario, rounds: int, round_seconds: float) -> Measured:
    decision = scenario.check()
    fn = scenario.call()
    count = 1
    while (elapsed := timed(fn, count)) < round_seconds / 10:
        count *= 2
    per_round = max(1, round(count * round_seconds / elapsed))
    seconds = [timed(fn, per_round) / per_round for _ in range(rounds)]
    return Measured(
        scenario,
        len(scenario.policy.grants_for(scenario.principal)),
        per_round,
        seconds,
        len(decision.reason),
        len(decision.grants),
    )


def print_table(results: list[Measured]) -> None:
    medians = {m.scenario.name: m.median for m in results}
    header = (
        "scenario",
        "grants",
        "naming",
        "covering",
        "decisions/s",
        "us/decision",
        "spread",
        "vs 1 grant",
        "reason chars",
    )
    rows = []
    for m in results:
        base = m.scenario.baseline
        ratio = f"{m.median / medians[base]:.1f}x" if base else "(baseline)"
        spread = f"{(max(m.seconds) - min(m.seconds)) / m.median * 100:.0f}%"
        rows.append(
            (
                m.scenario.name,
                str(len(m.scenario.policy.grants)),
                str(m.candidates),
                str(m.covering),
                f"{1 / m.median:,.0f}",
                f"{m.median * 1e6:.1f}",
                spread,
                ratio,
                str(m.reason_chars),
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(cells)

    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a run of a couple of seconds")
    parser.add_argument("--rounds", type=int, help="timed rounds per scenario (default 5)")
    parser.add_argument("--round", type=float, help="seconds per round (default 0.2)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.round is None:
        args.round = 0.03 if args.quick else 0.2
    if args.rounds < 1 or args.round <= 0:
        parser.error("--rounds and --round must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    cases, built = scenarios()
    print(
        f"policy_bench: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"now={NOW.isoformat()}, {args.rounds} rounds of ~{args.round:g} s, median shown"
    )
    print(
        "built "
        + ", ".join(
            f"{name} policy ({GRANTS} grants) in {s * 1e3:.0f} ms" for name, s in built.items()
        )
        + "\n"
    )
    print_table([measure(case, args.rounds, args.round) for case in cases])
    print(
        "\ngrants: in the policy; naming: grants naming the principal (what the index hands "
        "decide);\ncovering: grants that cover the request; spread: (max-min)/median over "
        "the rounds;\nvs 1 grant: time per decision over the 1-grant row that ends the same way"
    )
    print(f"total time {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
