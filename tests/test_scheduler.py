"""Scheduling decisions: critical path order, placement, circuit breaker, reasons."""

from __future__ import annotations

from swarm.controller.scheduler import (
    BLOCKED,
    BUILDING,
    DONE,
    QUEUED,
    DroneView,
    Job,
    Planner,
    critical_paths,
)


def drone(name: str, cores: int = 4, load: float = 0.0, slots: int = 1, running: int = 0) -> DroneView:
    return DroneView(id=name, name=name, cores=cores, load1=load, slots=slots, running=running, healthy=True)


def test_job_cpn_strips_the_version() -> None:
    assert Job("j", "s", "dev-lang/python-3.12.1-r2").cpn == "dev-lang/python"
    assert Job("j", "s", "swarm-test/lib-2d-1.0").cpn == "swarm-test/lib-2d"


def test_critical_path_is_own_time_plus_longest_dependent_chain() -> None:
    # base <- mid1 <- top ; base <- mid2 (slow) <- top ; leaf alone
    jobs = {
        j.id: j
        for j in [
            Job("base", "s", "t/base-1"),
            Job("mid1", "s", "t/mid1-1", deps=("base",)),
            Job("mid2", "s", "t/mid2-1", deps=("base",)),
            Job("top", "s", "t/top-1", deps=("mid1", "mid2")),
            Job("leaf", "s", "t/leaf-1"),
        ]
    }
    times = {"base": 1.0, "mid1": 1.0, "mid2": 5.0, "top": 2.0, "leaf": 3.0}
    paths = critical_paths(jobs, lambda j: times[j.id])
    assert paths == {"top": 2.0, "mid1": 3.0, "mid2": 7.0, "base": 8.0, "leaf": 3.0}


def test_critical_path_handles_a_deep_chain() -> None:
    jobs = {f"j{i}": Job(f"j{i}", "s", f"t/p{i}-1", deps=(f"j{i - 1}",) if i else ()) for i in range(5000)}
    assert critical_paths(jobs, lambda j: 1.0)["j0"] == 5000.0


def test_plan_places_the_most_critical_job_on_the_strongest_drone() -> None:
    planner = Planner()
    ready = [
        Job("short", "s", "t/a-1", state=QUEUED, priority=1.0),
        Job("long", "s", "t/b-1", state=QUEUED, priority=9.0),
    ]
    drones = [drone("small", cores=2), drone("big", cores=16)]
    plan = planner.plan(ready, drones, now=0.0)
    assert [(a.job_id, a.drone_id) for a in plan] == [("long", "big"), ("short", "small")]


def test_plan_respects_slots_and_avoids_drones_a_job_failed_on() -> None:
    planner = Planner()
    retry = Job("retry", "s", "t/a-1", state=QUEUED, priority=5.0, failed_on=["big"])
    other = Job("other", "s", "t/b-1", state=QUEUED, priority=1.0)
    drones = [drone("big", cores=16), drone("small", cores=2), drone("full", cores=32, running=1)]
    plan = planner.plan([retry, other], drones, now=0.0)
    assert [(a.job_id, a.drone_id) for a in plan] == [("retry", "small"), ("other", "big")]
    assert planner.plan([Job("x", "s", "t/x-1", state=QUEUED)], [drone("full", running=1)], 0.0) == []


def test_breaker_grounds_after_k_failures_then_allows_one_probe() -> None:
    planner = Planner(ground_after=3, cooldown=60.0)
    for i in range(2):
        assert not planner.record_failure("bad", f"j{i}", now=0.0, online=4)
    assert planner.record_failure("bad", "j2", now=0.0, online=4)
    assert planner.grounded("bad", now=10.0)
    job = Job("next", "s", "t/n-1", state=QUEUED)
    assert planner.plan([job], [drone("bad")], now=10.0) == []
    # After the cooldown: one probe, and no second job while it runs.
    plan = planner.plan([job, Job("more", "s", "t/m-1", state=QUEUED)], [drone("bad", slots=2)], now=61.0)
    assert len(plan) == 1 and plan[0].drone_id == "bad"
    assert planner.grounded("bad", now=61.0)  # half-open: the probe is out
    planner.record_success("bad")
    assert not planner.grounded("bad", now=62.0)


def test_failed_probe_grounds_again() -> None:
    planner = Planner(ground_after=1, cooldown=60.0)
    assert planner.record_failure("bad", "j0", now=0.0, online=4)
    planner.start_probe("bad", now=61.0)
    assert planner.record_failure("bad", "j1", now=61.0, online=4)
    assert planner.grounded("bad", now=100.0)


def test_breaker_never_grounds_more_than_half_the_fleet() -> None:
    planner = Planner(ground_after=1, cooldown=60.0)
    assert planner.record_failure("a", "j", now=0.0, online=4)
    assert planner.record_failure("b", "j", now=0.0, online=4)
    assert not planner.record_failure("c", "j", now=0.0, online=4)
    assert not planner.grounded("c", now=1.0)


def test_failed_probe_does_not_ground_more_than_half_the_fleet() -> None:
    planner = Planner(ground_after=1, cooldown=60.0)
    assert planner.record_failure("a", "j", now=0.0, online=4)
    assert planner.record_failure("b", "j", now=30.0, online=4)
    planner.start_probe("a", now=61.0)
    # One drone left the fleet meanwhile: "a" grounded again beside "b" would be two of three.
    assert not planner.record_failure("a", "k", now=61.0, online=3)
    assert not planner.grounded("a", now=62.0)
    assert planner.grounded("b", now=62.0)


def test_forgiven_package_failures_do_not_count() -> None:
    planner = Planner(ground_after=2, cooldown=60.0)
    assert not planner.record_failure("a", "broken", now=0.0, online=4)
    planner.forgive("broken")
    assert not planner.record_failure("a", "other", now=0.0, online=4)
    assert not planner.grounded("a", now=1.0)


def test_why_waiting_says_what_blocks_a_job() -> None:
    planner = Planner()
    base = Job("base", "s", "t/base-1", state=BUILDING, drone_id="d1")
    top = Job("top", "s", "t/top-1", deps=("base",), state=BLOCKED)
    jobs = {"base": base, "top": top}
    names = {"d1": "drone-io"}
    assert (
        planner.why_waiting(top, jobs, [], names, 0.0, False) == "waiting on t/base-1 (building on drone-io)"
    )
    base.state = DONE
    queued = Job("q", "s", "t/q-1", state=QUEUED)
    assert planner.why_waiting(queued, jobs, [], names, 0.0, False) == "no drone online"
    assert planner.why_waiting(queued, jobs, [drone("d1", running=1)], names, 0.0, False) == "all drones busy"
    assert planner.why_waiting(queued, jobs, [drone("d1")], names, 0.0, True) == "the session is paused"
    queued.failed_on = ["d1"]
    assert planner.why_waiting(queued, jobs, [drone("d1")], names, 0.0, False) == (
        "failed on drone-io; waiting for another drone"
    )
    planner.record_failure("d2", "x", 0.0, online=1)
    planner.breakers["d2"].grounded_until = 100.0
    queued.failed_on = []
    assert planner.why_waiting(queued, jobs, [drone("d2")], names, 1.0, False) == "all drones grounded"


def test_failure_summary_finds_portages_error_line() -> None:
    from swarm.controller.builds import failure_summary

    output = """>>> Compiling source in /var/tmp/portage/swarm-test/broken-1/work ...
 * ERROR: swarm-test/broken-1::gentoo failed (compile phase):
 *   swarm-test/broken fails in src_compile on purpose
 *
 * Call stack:
 *     ebuild.sh, line  136:  Called src_compile
 * S: '/var/tmp/portage/swarm-test/broken-1/work'
"""
    assert failure_summary(output) == (
        "ERROR: swarm-test/broken-1::gentoo failed (compile phase): "
        "swarm-test/broken fails in src_compile on purpose"
    )
    assert failure_summary("one\ntwo\n\n") == "two"
    assert failure_summary("") == "failed"


def test_failure_summary_ignores_colours() -> None:
    from swarm.controller.builds import failure_summary

    coloured = (
        "\x1b[31;01m*\x1b[0m ERROR: cat/p-1::gentoo failed (compile phase):\n\x1b[31;01m*\x1b[0m   boom\n"
    )
    assert failure_summary(coloured) == "ERROR: cat/p-1::gentoo failed (compile phase): boom"


def test_forgiving_a_bad_package_lifts_a_grounding_it_caused() -> None:
    planner = Planner(ground_after=2, cooldown=600.0)
    assert not planner.record_failure("a", "broken", now=0.0, online=4)
    assert planner.record_failure("a", "other", now=0.0, online=4)
    assert planner.grounded("a", now=1.0)
    planner.forgive("broken")
    assert not planner.grounded("a", now=1.0)
    assert planner.breakers["a"].failures == ["other"]


def test_an_admins_grounding_lasts_until_ungrounded() -> None:
    p = Planner(ground_after=2, cooldown=10.0)
    job = Job("j1", "s", "t/a-1", state=QUEUED)
    p.ground("d1", "alice")
    assert p.grounded("d1", now=1e9)  # no cooldown runs out
    assert p.plan([job], [drone("d1")], now=0.0) == []
    # Neither the job it was allowed to finish nor a forgiven package lifts it.
    p.record_success("d1")
    p.forgive("j1")
    assert p.grounded("d1", now=0.0) and p.breakers["d1"].grounded_by == "alice"
    p.unground("d1")
    assert not p.grounded("d1", now=0.0)
    assert [a.drone_id for a in p.plan([job], [drone("d1")], now=0.0)] == ["d1"]

    # Ungrounding also ends a grounding by the breaker, and forgets its failures.
    p.record_failure("d2", "x", now=0.0, online=10)
    assert p.record_failure("d2", "y", now=0.0, online=10) and p.grounded("d2", now=1.0)
    p.unground("d2")
    assert not p.grounded("d2", now=1.0) and not p.record_failure("d2", "z", now=1.0, online=10)


def test_a_draining_drone_gets_no_job_and_the_reason_says_so() -> None:
    held = DroneView("d1", "d1", 4, 0.0, 1, 0, True, held="draining")
    job = Job("j1", "s", "t/a-1", state=QUEUED)
    p = Planner()
    assert p.plan([job], [held], now=0.0) == []
    assert p.why_waiting(job, {"j1": job}, [held], {}, 0.0, False) == "every drone is grounded or draining"
    p.ground("d2", "alice")
    grounded = drone("d2")
    assert p.why_waiting(job, {"j1": job}, [grounded], {}, 0.0, False) == "all drones grounded"
    assert [a.drone_id for a in p.plan([job], [held, drone("d3")], now=0.0)] == ["d3"]


def test_a_drone_taking_a_payload_gets_no_job_and_the_reason_says_so() -> None:
    taking = DroneView("d1", "d1", 4, 0.0, 1, 0, True, held="payload")
    job = Job("j1", "s", "t/a-1", state=QUEUED)
    p = Planner()
    assert p.plan([job], [taking], now=0.0) == []
    assert (
        p.why_waiting(job, {"j1": job}, [taking], {}, 0.0, False)
        == "every drone is grounded or taking a payload"
    )
    draining = DroneView("d2", "d2", 4, 0.0, 1, 0, True, held="draining")
    assert (
        p.why_waiting(job, {"j1": job}, [taking, draining], {}, 0.0, False)
        == "every drone is grounded, draining or taking a payload"
    )
