"""Known answers for the MO-ASHA rung rule (mtard.search.rung_rule): pure Python, no Ray."""

from __future__ import annotations

import pytest

from mtard.search.rung_rule import RungDecision, RungJournal, RungRule, read_decisions

MM = ("max", "max")


def judge(rule: RungRule, points, rung: int = 1) -> list[RungDecision]:
    return [rule.decide(f"t{i}", rung, p) for i, p in enumerate(points)]


def test_too_few_results_always_continue():
    rule = RungRule(MM, eta=3, rungs=[1])
    # The second newcomer is dominated, but with n = 2 < eta nobody is judged yet.
    first, second = judge(rule, [(0.9, 0.5), (0.1, 0.1)])
    assert (first.action, first.why) == ("continue", "too few results")
    assert (second.action, second.n) == ("continue", 2)


def test_dominated_newcomer_stops_once_n_reaches_eta():
    rule = RungRule(MM, eta=3, rungs=[1])
    *_, last = judge(rule, [(0.9, 0.5), (0.5, 0.9), (0.1, 0.1)])
    # n = 3, kept = 1; the newcomer is on front 1 at position 2.
    assert (last.action, last.front, last.position, last.n, last.kept) == ("stop", 1, 2, 3, 1)
    assert last.reason() == "stopped by MO-ASHA at epoch 1: front 1 of 3, position 2, kept 1 (not kept)"


def test_newcomer_that_dominates_everything_continues():
    # The case Syne Tune's MOASHA gets wrong: the worst item's rank is not the newcomer's.
    rule = RungRule(MM, eta=2, rungs=[1])
    *_, last = judge(rule, [(0.2, 0.2), (0.3, 0.1), (0.1, 0.3), (0.9, 0.9)])
    assert (last.action, last.front, last.position, last.why) == ("continue", 0, 0, "front 0")


def test_front_zero_continues_even_beyond_the_kept_fraction():
    # eta = 4, n = 5 -> kept 2. Five mutually non-dominated points: the newcomer is interior
    # (finite crowding distance) and sits at a position >= 2, yet front 0 always continues.
    rule = RungRule(MM, eta=4, rungs=[1])
    *_, last = judge(rule, [(0, 4), (4, 0), (1, 3), (3, 1), (2, 2)])
    assert last.front == 0 and last.position >= last.kept == 2
    assert (last.action, last.why) == ("continue", "front 0")


def test_kept_fraction_by_crowding_within_a_front():
    # eta = 2. (10, 10) is front 0 alone; the others form front 1 (and (0.5, 0.5) front 2).
    rule = RungRule(MM, eta=2, rungs=[1])
    d = judge(rule, [(10, 10), (1, 5), (5, 1), (3, 3), (0.5, 0.5), (6, 0.5)])
    # (3, 3) arrives with n = 4, kept 2: it is front 1's interior point (finite crowding) behind the two
    # boundary points (1, 5) and (5, 1) -> position 3, stop.
    assert (d[3].front, d[3].position, d[3].kept, d[3].action) == (1, 3, 2, "stop")
    # (6, 0.5) arrives with n = 6, kept 3: it is a new boundary of front 1 (infinite crowding, like (1, 5));
    # (5, 1) is now interior, so the newcomer orders right after (1, 5) -> position 2 < 3, continue.
    assert (d[5].front, d[5].position, d[5].kept, d[5].action, d[5].why) == (1, 2, 3, "continue", "kept fraction")


def test_ties_go_to_the_earlier_arrival():
    # eta = 2: two equal dominated points; the second one orders behind the first.
    rule = RungRule(MM, eta=2, rungs=[1])
    d = judge(rule, [(1.0, 1.0), (0.5, 0.5), (0.5, 0.5)])
    assert (d[1].position, d[1].kept, d[1].action) == (1, 1, "stop")
    assert (d[2].front, d[2].position, d[2].kept, d[2].action) == (1, 2, 2, "stop")
    # A newcomer equal to a front-0 point shares front 0 and continues.
    assert rule.decide("t3", 1, (1.0, 1.0)).why == "front 0"


def test_rescaling_an_objective_does_not_change_decisions():
    points = [(0.91, 0.30), (0.85, 0.42), (0.95, 0.12), (0.80, 0.20), (0.88, 0.35), (0.70, 0.45),
              (0.89, 0.31), (0.60, 0.10), (0.93, 0.25), (0.86, 0.40)]
    plain = judge(RungRule(MM, eta=3, rungs=[1]), points)
    scaled = judge(RungRule(MM, eta=3, rungs=[1]), [(100 * a - 5, b / 7) for a, b in points])
    assert [d.action for d in plain] == [d.action for d in scaled]
    assert [d.position for d in plain] == [d.position for d in scaled]
    assert {d.action for d in plain} == {"continue", "stop"}  # the sequence exercises both outcomes


def test_min_direction_mirrors_max():
    points = [(0.9, 0.5), (0.5, 0.9), (0.1, 0.1), (0.95, 0.95)]
    as_max = judge(RungRule(MM, eta=3, rungs=[1]), points)
    as_min = judge(RungRule(("max", "min"), eta=3, rungs=[1]), [(a, -b) for a, b in points])
    assert [d.action for d in as_max] == [d.action for d in as_min] == ["continue", "continue", "stop", "continue"]


def test_defaults_trial_always_continues():
    rule = RungRule(MM, eta=2, rungs=[1])
    judge(rule, [(0.9, 0.9), (0.8, 0.8)])
    d = rule.decide("defaults", 1, (0.0, 0.0), protected=True)
    assert (d.action, d.why) == ("continue", "defaults trial")


def test_repeated_call_returns_the_stored_decision():
    rule = RungRule(MM, eta=2, rungs=[1, 3])
    judge(rule, [(0.9, 0.9), (0.1, 0.1)])
    first = rule.decide("t1", 1, (0.1, 0.1))
    # Asked again (a retried trial), even with other values: same decision, and the rung did not grow.
    again = rule.decide("t1", 1, (0.99, 0.99))
    assert again == first and again.action == "stop" and again.n == 2
    assert rule.decide("t2", 1, (0.5, 0.5)).n == 3


def test_restore_replays_decisions():
    rule = RungRule(MM, eta=2, rungs=[1, 3])
    taken = judge(rule, [(0.9, 0.9), (0.1, 0.1), (0.95, 0.2)])
    taken.append(rule.decide("t0", 3, (0.92, 0.91)))
    rebuilt = RungRule(MM, eta=2, rungs=[1, 3])
    rebuilt.restore(RungDecision.from_dict(d.to_dict()) for d in taken)
    assert rebuilt.decisions() == taken
    # The next newcomer is judged against the restored results exactly as in the original.
    assert rebuilt.decide("t3", 1, (0.5, 0.5)) == rule.decide("t3", 1, (0.5, 0.5))


def test_bad_settings_and_values():
    with pytest.raises(ValueError, match="eta"):
        RungRule(MM, eta=1, rungs=[1])
    with pytest.raises(ValueError, match="rungs"):
        RungRule(MM, eta=3, rungs=[3, 1])
    rule = RungRule(MM, eta=3, rungs=[2])
    with pytest.raises(ValueError, match="not a rung"):
        rule.decide("t0", 1, (0.5, 0.5))
    with pytest.raises(ValueError, match="not 2 numbers"):
        rule.decide("t0", 2, (0.5, float("nan")))


def test_journal_persists_and_resumes(tmp_path):
    path = tmp_path / "rungs.jsonl"
    journal = RungJournal(RungRule(MM, eta=2, rungs=[1]), path)
    taken = [journal.decide(f"t{i}", 1, p) for i, p in enumerate([(0.9, 0.9), (0.1, 0.1), (0.95, 0.2)])]
    journal.decide("t1", 1, (0.1, 0.1))  # a repeat is not written twice
    assert len(path.read_text().splitlines()) == 3
    with open(path, "a") as f:
        f.write('{"trial_id": "t9", "rung"')  # a line torn by a crash
    resumed = RungJournal(RungRule(MM, eta=2, rungs=[1]), path)
    assert resumed.rule.decisions() == taken
    assert resumed.decide("t1", 1, (0.1, 0.1)).action == "stop"  # not re-decided
    new = resumed.decide("t3", 1, (0.5, 0.5))
    assert read_decisions(path) == [*taken, new]
