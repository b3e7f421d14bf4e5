"""CostAwareAdaptive on the managers users have: a stock LocalCluster (threads
and processes), a plain SpecCluster with two worker templates as two pools,
dask-jobqueue's SLURMCluster on a real SLURM (slurmctld + slurmd + munged,
started here from the Debian packages), and a SpecCluster whose scheduler
runs in another process (the monitor goes over RPC).

In every case: it scales up under load, within adapt's minimum and maximum,
retires the worker it chose by name (not another), learns the startup delay,
and installs the CostMonitor exactly once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import dask
import pytest
from distributed import Client, Event, LocalCluster, Scheduler, SpecCluster, Worker
from distributed import wait as wait_futures
from distributed.deploy.spec import ProcessInterface

from lepton_dask.cost import CostMonitor
from lepton_dask.scaling import BalancedPolicy, CostAwareAdaptive, PoolSpec
from lepton_dask.scaling.managers import ManagedPools
from lepton_dask.store.server import free_port
from tests.helpers import kill_started_since, wait_for

pytestmark = pytest.mark.timeout(240)

INTERVAL = 0.2


@pytest.fixture(autouse=True)
def _config():
    with dask.config.set(
        {"lepton.cost.ledger": False, "lepton.cost.minimum-billing": "1s"}
    ):
        yield


def hold(x, s=0.3):
    time.sleep(s)
    return x


def monitors(cluster):
    return [p for p in cluster.scheduler.plugins.values() if isinstance(p, CostMonitor)]


def workers_on_scheduler(cluster):
    return {str(ws.name) for ws in cluster.scheduler.workers.values()}


def arrivals(monitor):
    """When each worker reached the scheduler (the monitor's own record)."""
    return {e["worker"]: t for t, e in monitor.log if e["event"] == "add-worker"}


def check_learned_startup(ad, monitor, pool):
    """The learned delay lies between the true delays (asked -> arrived), less
    a little, and the slowest one plus a decision interval (it is seen at a tick)."""
    asked, came = ad.managed.launch_times(), arrivals(monitor)
    true = [came[n] - asked[n] for n in asked if n in came]
    learned = ad.managed.learned_startup()[pool]
    assert true and min(true) - 0.05 <= learned <= max(true) + INTERVAL + 0.5
    assert ad.managed.pools[pool].startup_s == learned  # the policy sees it


def wait_for_release(name):
    Event(name).wait()
    return 1


def pin_a_task_to_the_newest(client, cluster, ad, n):
    """While load runs: once ``n`` workers are on the scheduler (and none of
    them is being retired), a task that waits for an Event is pinned to the
    one whose spec entry is newest (the one stock ``scale(n)`` would drop).
    Pinned during the load, so the scaler never sees all ``n`` idle at once.
    Returns (busy, idle, event, future)."""

    def planned():
        plan = ad.managed.requested()
        return {n for n in workers_on_scheduler(cluster) if n in plan}

    wait_for(lambda: len(planned()) >= n, 60)
    order = [str(k) for k in cluster.worker_spec]
    names = sorted(planned(), key=order.index)
    busy = names[-1]
    addr = next(
        a for a, ws in cluster.scheduler.workers.items() if str(ws.name) == busy
    )
    event = Event(f"release-{uuid.uuid4().hex}", client=client)
    held = client.submit(wait_for_release, event.name, workers=[addr], pure=False)
    return busy, names[:-1], event, held


def check_retires_the_chosen_worker(ad, cluster, pinned, load, then=None):
    """Once ``load`` is done the scaler retires the idle workers by name, and
    never the busy one; ``then(busy)`` runs once the others are gone."""
    busy, idle, event, held = pinned
    assert len(wait_futures(load, timeout=60).done) == len(load)
    retired = lambda: {n for e in ad.log for n in e[1]["retired"]}  # noqa: E731
    wait_for(lambda: set(idle) <= retired(), 30)
    wait_for(lambda: not set(idle) & workers_on_scheduler(cluster), 30)
    assert busy in workers_on_scheduler(cluster) and busy not in retired()
    if then is not None:
        then(busy)
    event.set()
    assert held.result(timeout=30) == 1


def run_local_cluster(processes):
    with (
        LocalCluster(
            n_workers=0,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=":0",
            **({"host": "127.0.0.1"} if processes else {}),
        ) as cluster,
        Client(cluster) as client,
    ):
        assert not monitors(cluster)
        ad = cluster.adapt(
            Adaptive=CostAwareAdaptive,
            policy=BalancedPolicy(weight=100.0),
            minimum=1,
            maximum=3,
            interval=INTERVAL,
            instance_type="m6i.large",
        )
        assert ad.managed.pools["default"].usd_per_hour == 0.096  # the catalog's
        wait_for(lambda: len(cluster.scheduler.workers) == 1, 60)  # the minimum
        (monitor,) = monitors(cluster)
        futures = client.map(hold, range(30), pure=False)
        most = 0
        while not all(f.done() for f in futures):
            most = max(most, len(cluster.worker_spec), len(cluster.scheduler.workers))
            time.sleep(0.02)
        assert most == 3  # scaled up to the maximum under load, never past it
        del futures
        check_learned_startup(ad, monitor, "default")
        # down to the minimum, never below: idle paid-out workers go
        wait_for(lambda: len(cluster.worker_spec) == 1, 30)
        decisions = monitor.scaler_decisions
        wait_for(lambda: monitor.scaler_decisions >= decisions + 5, 10)
        assert len(cluster.worker_spec) == 1
        # a second worker under a little load, then the chosen one goes
        ad2 = cluster.adapt(
            Adaptive=CostAwareAdaptive,
            policy=BalancedPolicy(weight=100.0),
            minimum=1,
            maximum=2,
            interval=INTERVAL,
        )
        futures = client.map(hold, range(16), pure=False)
        pinned = pin_a_task_to_the_newest(client, cluster, ad2, 2)
        check_retires_the_chosen_worker(ad2, cluster, pinned, futures)
        assert len(client.gather(futures)) == 16
        del futures
        assert monitors(cluster) == [monitor]  # installed once, kept on re-adapt
        assert "lepton-cost" in cluster.scheduler.plugins


def test_stock_local_cluster_threads():
    run_local_cluster(processes=False)


def test_stock_local_cluster_processes():
    run_local_cluster(processes=True)


def test_spec_cluster_with_two_templates_as_two_pools():
    """A plain SpecCluster: a CPU worker already there (its spec is the CPU
    template) and a GPU template (a GPU resource label); GPU work grows the
    GPU pool only, CPU work the CPU pool; a maximum of 3 workers in all. The
    CPU pool keeps its one worker (``min_workers=1``): with no idle gap seen
    yet, an idle paid-out worker would otherwise go during the GPU work."""
    cpu = {"cls": Worker, "options": {"nthreads": 1}}
    gpu = {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}}
    monitor = CostMonitor(ledger=False, minimum_billing=1.0)
    with (
        SpecCluster(
            workers={"cpu-0": cpu},
            scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
        ) as cluster,
        Client(cluster) as client,
    ):
        pools = {
            "cpu-": PoolSpec.from_catalog("cpu", "m6i.large", min_workers=1),
            "gpu-": PoolSpec.from_catalog("gpu", "g5.xlarge", kind="gpu"),
        }
        ad = cluster.adapt(
            Adaptive=CostAwareAdaptive,
            policy=BalancedPolicy(weight=1000.0),
            pools=pools,
            templates={"gpu": gpu},
            minimum=1,
            maximum=3,
            interval=INTERVAL,
            monitor=monitor,
        )
        wait_for(lambda: monitor in monitors(cluster), 10)
        with dask.annotate(resources={"GPU": 1}):
            futures = client.map(hold, range(12), pure=False)
        most = gpus = 0
        specs = {}
        while not all(f.done() for f in futures):
            specs.update(cluster.worker_spec)
            counts = ad.managed.counts()
            most, gpus = max(most, sum(counts.values())), max(gpus, counts["gpu"])
            assert counts["cpu"] == 1  # GPU work does not grow the CPU pool
            time.sleep(0.02)
        assert most == 3 and gpus == 2  # up to the maximum, no further
        ran = client.run_on_scheduler(
            lambda dask_scheduler: {
                str(ws.name)
                for ws in dask_scheduler.workers.values()
                if ws.resources.get("GPU")
            }
        )
        assert ran and all(n.startswith("gpu-") for n in ran)
        assert specs["gpu-0"]["options"]["resources"] == {"GPU": 1}  # the template
        check_learned_startup(ad, monitor, "gpu")
        del futures
        # idle: down to the minimum, kept in the cheaper pool
        wait_for(lambda: ad.managed.counts() == {"cpu": 1, "gpu": 0}, 30)
        # CPU work grows the CPU pool, from the spec of its first worker
        futures = client.map(hold, range(24), pure=False)
        wait_for(lambda: ad.managed.counts()["cpu"] == 3, 30)
        pinned = pin_a_task_to_the_newest(client, cluster, ad, 3)
        assert ad.managed.counts()["gpu"] == 0
        assert cluster.worker_spec["cpu-2"]["options"] == {"nthreads": 1}
        check_retires_the_chosen_worker(ad, cluster, pinned, futures)
        assert len(client.gather(futures)) == 24
        assert monitors(cluster) == [monitor]


def test_bad_input_fails_at_construction():
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as c:
        with pytest.raises(
            ValueError, match=r"unknown instance type 'm9.huge'.*known types"
        ):
            CostAwareAdaptive(c, instance_type="m9.huge")
        with pytest.raises(ValueError, match=r"minimum \(3\) > maximum \(2\)"):
            c.adapt(Adaptive=CostAwareAdaptive, minimum=3, maximum=2)
        with pytest.raises(
            ValueError, match=r"pool 'gpu' \(prefix 'gpu-'\) matches no worker"
        ):
            CostAwareAdaptive(c, pools={"gpu-": PoolSpec("gpu", kind="gpu")})
    with dask.config.set({"lepton.scaling.pools": [{"name": "x", "colour": "red"}]}):
        with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
            ManagedPools(
                LocalCluster(n_workers=0, processes=False, dashboard_address=":0")
            )


def test_pool_from_explicit_spec_then_config_then_catalog():
    spot = {
        "name": "spot",
        "instance-type": "m6i.large",
        "pricing": "spot",
        "threads": 2,
        "startup": "45s",
    }
    with LocalCluster(
        n_workers=0, threads_per_worker=3, processes=False, dashboard_address=":0"
    ) as c:
        explicit = PoolSpec("mine", usd_per_hour=1.5, threads=4, startup_s=9.0)
        with dask.config.set({"lepton.scaling.pools": [spot]}):
            assert ManagedPools(c, pool=explicit).pools == {"mine": explicit}
            (p,) = ManagedPools(c).pools.values()
            assert (p.name, p.pricing, p.usd_per_hour, p.threads, p.startup_s) == (
                "spot",
                "spot",
                0.0384,
                2,
                45.0,
            )
        (p,) = ManagedPools(c, instance_type="g5.xlarge", pricing="spot").pools.values()
        assert (p.instance_type, p.threads, p.startup_s) == ("g5.xlarge", 3, 0.0)
        (p,) = ManagedPools(c).pools.values()  # lepton.cost.default-instance-type
        assert p.instance_type == dask.config.get("lepton.cost.default-instance-type")


# -- SLURM ---------------------------------------------------------------------------
@contextlib.contextmanager
def slurm(tmp):
    """A one-node SLURM (munged, slurmctld, slurmd) in ``tmp``, on free ports,
    with the node declaring 8 CPUs; yields the environment that points
    ``sbatch``/``scancel`` at it."""
    need = ["munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scancel"]
    missing = [b for b in need if shutil.which(b) is None]
    assert not missing, (
        f"SLURM is not installed ({', '.join(missing)} missing): "
        "apt-get install slurmctld slurmd slurm-client munge (.ci/system-deps)"
    )
    key = tmp / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = tmp / "munge.sock"
    host = socket.gethostname().split(".")[0]
    conf = tmp / "slurm.conf"
    conf.write_text(f"""\
ClusterName=lepton
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/slurmctld.log
SlurmdLogFile={tmp}/slurmd.log
ReturnToService=2
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs=8 RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    (tmp / "state").mkdir()
    (tmp / "spool").mkdir()
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs = []
    started = time.time()
    try:
        procs.append(
            subprocess.Popen(
                [
                    "munged",
                    "-F",
                    "-f",
                    f"--key-file={key}",
                    f"--socket={sock}",
                    f"--pid-file={tmp}/munged.pid",
                    f"--log-file={tmp}/munged.log",
                    f"--seed-file={tmp}/munged.seed",
                ]
            )
        )
        wait_for(sock.exists, 10)
        procs.append(subprocess.Popen(["slurmctld", "-D", "-f", str(conf)], env=env))
        procs.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env))

        def idle():
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True
            )
            return out.stdout.strip() == "idle"

        wait_for(idle, 60, interval=0.3)
        yield env
    finally:
        subprocess.run(
            ["scancel", "--full", "-u", "root"], env=env, capture_output=True
        )

        def no_jobs():
            out = subprocess.run(
                ["squeue", "-h"], env=env, capture_output=True, text=True
            )
            return out.returncode != 0 or not out.stdout.strip()

        with contextlib.suppress(TimeoutError, AssertionError):
            wait_for(no_jobs, 20, interval=0.3)  # the jobs' steps end first
        for p in reversed(procs):
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
            if p.poll() is None:
                p.kill()
        # a job's worker that outlived its slurmstepd (reparented to init)
        kill_started_since(started, "SLURMCluster")


def test_slurm_cluster_on_a_real_slurm(tmp_path, monkeypatch):
    """dask-jobqueue's SLURMCluster: sbatch submits each worker's job script
    to a real slurmctld, slurmd runs it; the scaler grows the cluster through
    SLURMCluster.scale, retires by name (scancel of that job), and learns how
    long a job takes from sbatch to a registered worker."""
    from dask_jobqueue import SLURMCluster

    with slurm(tmp_path) as env:
        monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
        with (
            SLURMCluster(
                cores=1,
                processes=1,
                memory="500MB",
                nanny=False,
                python=sys.executable,
                walltime="00:10:00",
                log_directory=str(tmp_path / "logs"),
                scheduler_options={"host": "127.0.0.1", "dashboard_address": None},
            ) as cluster,
            Client(cluster) as client,
        ):
            assert "#SBATCH" in cluster.job_script()
            ad = cluster.adapt(
                Adaptive=CostAwareAdaptive,
                policy=BalancedPolicy(weight=1000.0),
                minimum=0,
                maximum=2,
                interval=INTERVAL,
                instance_type="m6i.large",
            )
            wait_for(lambda: monitors(cluster), 10)
            (monitor,) = monitors(cluster)
            futures = client.map(hold, range(30), [0.5] * 30, pure=False)

            def slurm_jobs():
                out = subprocess.run(
                    ["squeue", "-h", "-o", "%i"],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                return set(out.stdout.split())

            most, most_jobs, asked, pinned = 0, 0, 0.0, None
            while not all(f.done() for f in futures):
                if pinned is None and len(cluster.scheduler.workers) == 2:
                    pinned = pin_a_task_to_the_newest(client, cluster, ad, 2)
                most = max(
                    most, len(cluster.worker_spec), len(cluster.scheduler.workers)
                )
                if time.monotonic() - asked > 0.3:  # squeue is a real RPC
                    most_jobs = max(most_jobs, len(slurm_jobs()))
                    asked = time.monotonic()
                time.sleep(0.05)
            assert most == 2  # up under load, to the maximum and no further
            assert pinned is not None  # both workers were up while it ran
            # real SLURM jobs, seen while the load ran (once it is done the
            # scaler may already have cancelled one)
            assert most_jobs == 2
            check_learned_startup(ad, monitor, "default")

            def only_the_busy_workers_job_is_left(busy):
                wait_for(lambda: slurm_jobs() == {cluster.workers[busy].job_id}, 30)

            check_retires_the_chosen_worker(
                ad, cluster, pinned, futures, then=only_the_busy_workers_job_is_left
            )
            del futures
            assert monitors(cluster) == [monitor]


class SchedulerProcess(ProcessInterface):
    """A scheduler in its own process (``dask scheduler``), as a cloud
    manager's scheduler runs on another machine."""

    async def start(self):
        import asyncio

        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            ":0",
            stderr=asyncio.subprocess.PIPE,
        )
        while self.address is None:
            line = (await asyncio.wait_for(self.proc.stderr.readline(), 60)).decode()
            assert line, "the scheduler process exited"
            if "Scheduler at:" in line:
                self.address = line.split("Scheduler at:")[1].strip()
        self._drain = asyncio.ensure_future(self.proc.stderr.read())
        await super().start()

    async def close(self):
        self.proc.terminate()
        await self.proc.wait()
        await self._drain
        await super().close()


def test_monitor_installed_over_rpc_on_a_remote_scheduler():
    def monitors_remote(client):
        return client.run_on_scheduler(
            lambda dask_scheduler: [
                n
                for n, p in dask_scheduler.plugins.items()
                if type(p).__name__ == "CostMonitor"
            ]
        )

    with (
        SpecCluster(
            scheduler={"cls": SchedulerProcess, "options": {}},
            worker={"cls": Worker, "options": {"nthreads": 1}},
        ) as cluster,
        Client(cluster) as client,
    ):
        assert monitors_remote(client) == []
        ad = cluster.adapt(
            Adaptive=CostAwareAdaptive,
            policy=BalancedPolicy(100.0),
            minimum=0,
            maximum=2,
            interval=INTERVAL,
        )
        futures = client.map(hold, range(12), pure=False)
        wait_for(lambda: len(cluster.worker_spec) == 2, 30)  # decides from its state
        assert len(client.gather(futures)) == 12
        cluster.adapt(
            Adaptive=CostAwareAdaptive,
            policy=BalancedPolicy(100.0),
            minimum=0,
            maximum=2,
            interval=INTERVAL,
        )
        wait_for(lambda: cluster._adaptive._monitor_checked, 10)
        assert ad.monitor is None  # it lives in the scheduler's process
        assert monitors_remote(client) == ["lepton-cost"]  # once
