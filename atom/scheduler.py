"""Schedules: APScheduler 3 (`AsyncIOScheduler`) on the runtime's event loop.

Every process whose start has a schedule (`schedule:` starts, and `connector:` starts with a
`schedule:`) gets one job named after the process: `cron` (five fields, in its `timezone`) or `every`
(seconds). `sync(deployment)` mounts, replaces and removes jobs after a redeploy; a job whose
schedule did not change keeps its next run time. The job itself only asks the runtime to start an
execution (`fire(process name)`); whether a run is skipped (allow_simultaneous: false and the previous
run still going) is the runtime's decision.

A scheduler made with `fires=False` (the workers of a multi-process Atom other than the first) keeps
the triggers of the deployment, so it can say when each process runs next, but never fires them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .model import Deployment, ProcessDef

log = logging.getLogger("atom.scheduler")


def schedule_of(pdef: ProcessDef) -> dict[str, Any] | None:
    """The schedule of a process (cron/every/timezone), or None when it is not scheduled."""
    if pdef.start.schedule is None:
        return None
    return dict(pdef.start.schedule)


def make_trigger(schedule: dict[str, Any]) -> CronTrigger | IntervalTrigger:
    tz = schedule.get("timezone") or "UTC"
    if schedule.get("cron"):
        return CronTrigger.from_crontab(str(schedule["cron"]), timezone=tz)
    return IntervalTrigger(seconds=float(schedule["every"]), timezone=tz)


class Scheduler:
    """The process schedules of the current deployment. `fires=False`: the schedules are known (next
    run times) but never run."""

    def __init__(self, fire: Callable[[str], Awaitable[None]], *, fires: bool = True) -> None:
        self._fire = fire
        self.fires = fires
        self._started = False
        self._sched: AsyncIOScheduler | None = None
        self._signatures: dict[str, tuple[Any, ...]] = {}
        #: the triggers of a scheduler that does not fire (next run times only)
        self._triggers: dict[str, CronTrigger | IntervalTrigger] = {}

    def start(self) -> None:
        self._started = True
        if self.fires:
            self._sched = AsyncIOScheduler(timezone=dt.UTC)
            self._sched.start()

    def sync(self, deployment: Deployment) -> None:
        """Make the jobs match the deployment's scheduled processes."""
        if not self._started:
            return
        wanted: dict[str, dict[str, Any]] = {}
        for name, pdef in deployment.processes.items():
            sch = schedule_of(pdef)
            if sch is not None:
                wanted[name] = sch
        for name in list(self._signatures):
            if name not in wanted:
                if self._sched is not None:
                    self._sched.remove_job(name)
                self._triggers.pop(name, None)
                del self._signatures[name]
                log.log(logging.INFO if self.fires else logging.DEBUG, "schedule of process '%s' removed", name)
        for name, sch in wanted.items():
            sig = (sch.get("cron"), sch.get("every"), sch.get("timezone") or "UTC")
            if self._signatures.get(name) == sig:
                continue
            trigger = make_trigger(sch)
            if self._sched is not None:
                self._sched.add_job(self._fire, trigger, args=[name], id=name, name=f"process {name}",
                                    replace_existing=True, coalesce=True, max_instances=1_000_000,
                                    misfire_grace_time=None)
            else:
                self._triggers[name] = trigger
            self._signatures[name] = sig
            if self.fires:
                log.info("schedule of process '%s': %s (next run %s)", name, _describe(sch), self.next_run(name))
            else:
                log.debug("schedule of process '%s': %s (run by the first worker)", name, _describe(sch))

    def next_run(self, name: str) -> dt.datetime | None:
        """When a process runs next (UTC), or None."""
        if self._sched is None:
            trigger = self._triggers.get(name)
            if trigger is None:
                return None
            t = trigger.get_next_fire_time(None, dt.datetime.now(dt.UTC))
        else:
            job = self._sched.get_job(name)
            t = job.next_run_time if job is not None else None
        return t.astimezone(dt.UTC) if t is not None else None

    def pause(self) -> None:
        if self._sched is not None and self._sched.running:
            self._sched.pause()

    def shutdown(self) -> None:
        if self._sched is not None and self._sched.running:
            self._sched.shutdown(wait=False)
        self._sched = None
        self._started = False
        self._signatures.clear()
        self._triggers.clear()


def _describe(sch: dict[str, Any]) -> str:
    if sch.get("cron"):
        return f"cron '{sch['cron']}' ({sch.get('timezone') or 'UTC'})"
    return f"every {sch['every']:g} s"
