"""Guards on the private parts of distributed that lepton-dask wraps
(``lepton_dask/_distributed.py``): each is called against a real scheduler or
cluster, and a change in distributed fails here with the wrapper's name."""

from __future__ import annotations

import asyncio

import dask
import pytest
from distributed import Scheduler, SpecCluster, Worker
from distributed.scheduler import TaskPrefix

from lepton_dask import _distributed as private


def _fail(name: str, e: BaseException) -> None:
    pytest.fail(
        f"distributed changed what lepton_dask._distributed.{name} wraps "
        f"({type(e).__name__}: {e}); re-read distributed and update the wrapper"
    )


def test_prefix_duration_follows_the_documented_rule():
    async def main():
        with dask.config.set(
            {
                "distributed.scheduler.unknown-task-duration": "700ms",
                "distributed.scheduler.default-task-durations": {"known": "2s"},
            }
        ):
            async with Scheduler(dashboard_address=":0", validate=False) as s:
                try:
                    assert private.unknown_duration(s) == pytest.approx(0.7)
                    fresh = TaskPrefix("fresh")
                    assert private.prefix_duration(s, fresh) == pytest.approx(0.7)
                    fresh.add_exec_time(1.5)  # seen running 1.5 s
                    assert private.prefix_duration(s, fresh) == 3.0
                    fresh.add_duration("compute", 0.0, 1.0)
                    fresh.add_duration("compute", 0.0, 3.0)
                    assert private.prefix_duration(s, fresh) == pytest.approx(2.0)
                    known = TaskPrefix("known")
                    assert private.prefix_duration(s, known) == 2.0
                    known.add_exec_time(5.0)  # more than twice the average
                    assert private.prefix_duration(s, known) == 10.0
                    s.task_prefixes["fresh"] = fresh
                    got = private.prefix_knowledge(s, "fresh")
                    assert got == (pytest.approx(2.0), True, 1.5, False)
                    s.task_prefixes["known2"] = TaskPrefix("known")
                    _, measured, _, prior = private.prefix_knowledge(s, "known2")
                    assert measured and prior  # the configured default, unreplaced
                    assert private.prefix_knowledge(s, "never") == (
                        pytest.approx(0.7),
                        False,
                        0.0,
                        False,
                    )
                except (AttributeError, TypeError, AssertionError) as e:
                    _fail("prefix_duration / prefix_knowledge", e)

    asyncio.run(main())


def test_install_and_remove_priors():
    key = "distributed.scheduler.default-task-durations"

    async def main():
        async with Scheduler(dashboard_address=":0", validate=False) as s:
            s.task_prefixes["seen"] = TaskPrefix("seen")
            with dask.config.set({key: {"mine": 9.0}}):
                got = private.install_priors(s, {"seen": 1.5, "mine": 2.0, "new": 3.0})
                assert got == {"seen": 1.5, "new": 3.0}  # the user's entry wins
                assert private.prefix_duration(s, s.task_prefixes["seen"]) == 1.5
                assert private.prefix_duration(s, TaskPrefix("new")) == 3.0
                private.remove_priors(got)
                assert dask.config.get(key) == {"mine": 9.0}

    asyncio.run(main())


def test_correct_state_starts_the_specified_workers():
    async def main():
        async with SpecCluster(
            scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
            workers={},
            asynchronous=True,
        ) as cluster:
            cluster.worker_spec["w"] = {"cls": Worker, "options": {"nthreads": 1}}
            try:
                await private.correct_state(cluster)
            except (AttributeError, TypeError) as e:
                _fail("correct_state", e)
            assert "w" in cluster.workers

    asyncio.run(asyncio.wait_for(main(), 30))
