"""Usage accounting with no write on the request path.

Each decision bumps an in-memory counter (key, hour, route, outcome) and, on an
allow, the key's last-used time. A background task flushes them to the store
in one transaction every few seconds, and once more at shutdown; a flush that
fails puts its counts back, so none are lost while the process lives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keystile.core.decide import Decision
from keystile.core.model import SESSION
from keystile.store import Store

UsageKey = tuple[str, int, str, str]  # key id, hour start, route, outcome


class UsageMeter:
    def __init__(self) -> None:
        self.counts: Counter[UsageKey] = Counter()
        self.last_used: dict[str, float] = {}
        self.seen: dict[str, float] = {}  # sessions: the idle timeout's clock
        self.tokens: Counter[tuple[str, int, str]] = Counter()  # (key id, hour, route)

    def add_tokens(self, key_id: str, hour: int, route: str, tokens: int) -> None:
        """Tokens a report said an allowed request of ``key_id`` spent."""
        self.tokens[(key_id, hour, route)] += tokens

    def record(self, decision: Decision, now: float) -> None:
        record = decision.record
        if record is None or record.origin == "static":
            return
        reason = decision.reason
        route = decision.route.name if decision.route is not None else ""
        hour = int(now // 3600 * 3600)
        self.counts[(record.id, hour, route, "allow" if reason is None else reason.code)] += 1
        if reason is None:
            if record.kind == SESSION:
                self.seen[record.id] = now
            else:
                self.last_used[record.id] = now

    @property
    def pending(self) -> int:
        return sum(self.counts.values())

    async def flush(self, store: Store) -> int:
        """Write what was counted since the last flush; returns how many requests."""
        counts, last_used, seen, tokens = self.counts, self.last_used, self.seen, self.tokens
        if not counts and not last_used and not seen and not tokens:
            return 0
        self.counts, self.last_used, self.seen, self.tokens = Counter(), {}, {}, Counter()
        try:
            await store.touch_sessions(seen)  # first: a retry only raises times again
            await store.add_usage(counts, last_used, tokens)
        except BaseException:
            self.counts.update(counts)  # put them back: the next flush tries again
            self.tokens.update(tokens)
            for kept, taken in ((self.last_used, last_used), (self.seen, seen)):
                for item_id, at in taken.items():
                    kept[item_id] = max(at, kept.get(item_id, 0.0))
            raise
        return sum(counts.values())


def summarize(rows: list[tuple[int, str, str, int]]) -> dict[str, object]:
    """Totals by outcome and route, and the hourly rows, as the CLI and API show them."""
    by_outcome: Counter[str] = Counter()
    by_route: Counter[str] = Counter()
    for _, route, outcome, count in rows:
        by_outcome[outcome] += count
        if outcome == "allow":
            by_route[route or "(no route)"] += count
    return {
        "allowed": by_outcome.get("allow", 0),
        "denied": {k: v for k, v in sorted(by_outcome.items()) if k != "allow"},
        "allowed_by_route": dict(sorted(by_route.items())),
        "hours": [{"hour": hour, "route": route, "outcome": outcome, "count": count}
                  for hour, route, outcome, count in rows],
    }  # fmt: skip


def spend(rows: Iterable[tuple[str, int, str, int]], prices: Mapping[str, float]) -> dict[str, Any]:
    """Tokens reported (key id, hour, route, tokens rows) in total, per key, per
    route and per hour; with their cost where routes have a price per 1,000 tokens
    (``cost`` None when no route the tokens went through has one)."""
    total, per_key, per_route, per_hour = 0, Counter[str](), Counter[str](), Counter[int]()
    cost: float | None = None
    cost_per_key: dict[str, float] = {}
    for key_id, hour, route, tokens in rows:
        total += tokens
        per_key[key_id] += tokens
        per_route[route or "(no route)"] += tokens
        per_hour[hour] += tokens
        price = prices.get(route)
        if price is not None:
            spent = tokens / 1000 * price
            cost = (cost or 0.0) + spent
            cost_per_key[key_id] = cost_per_key.get(key_id, 0.0) + spent
    return {
        "tokens": total,
        "cost": None if cost is None else round(cost, 6),
        "tokens_by_key": dict(per_key.most_common()),
        "cost_by_key": {k: round(v, 6) for k, v in cost_per_key.items()},
        "tokens_by_route": dict(sorted(per_route.items())),
        "token_hours": [{"hour": h, "tokens": n} for h, n in sorted(per_hour.items())],
    }  # fmt: skip


def prices_of(routes: Iterable[Any]) -> dict[str, float]:
    """Route name -> price per 1,000 tokens, for the routes that set one."""
    return {r.name: r.price_per_1k_tokens for r in routes if r.price_per_1k_tokens is not None}


async def spend_of(
    store: Store, key_ids: Sequence[str], since: float, routes: Iterable[Any]
) -> dict[str, Any]:
    """:func:`spend` of the tokens stored for ``key_ids`` since ``since``, priced by
    ``routes`` (the CLI, the admin API and the UI all show this)."""
    return spend(await store.token_usage(key_ids, since), prices_of(routes))
