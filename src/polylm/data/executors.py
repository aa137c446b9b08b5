"""Running the staged pipeline (stages.py) on datatrove's executors: local processes, Slurm job arrays, Ray.

polylm writes no scheduler: each stage is one datatrove executor (`LocalPipelineExecutor`,
`SlurmPipelineExecutor`, `RayPipelineExecutor`) with its own logging directory `OUT/logs/STAGE/`, where datatrove
keeps each task's log, its stats and a completion mark. A task with a mark is skipped when the same command is
run again, which is how a killed run resumes. Locally and on Ray, `polylm` runs the stages one after another and
waits; on Slurm it submits one job array per stage, each depending on the previous one (`afterok`), and returns.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from polylm.durable import write_json
from polylm.errors import PolyLMError
from polylm.runlock import hold_run_dir

if TYPE_CHECKING:
    from polylm.data.prepare import DataConfig
    from polylm.data.stages import Plan

EXECUTORS = ("local", "slurm", "ray")
RAY_CONNECT_SECONDS = 10.0


@dataclass
class SlurmSettings:
    partition: str | None = None
    """Required for `--executor slurm`."""
    time: str = "24:00:00"
    """Time limit of each task (sbatch --time)."""
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    qos: str = "normal"
    job_name: str = "polylm-data"
    env_command: str | None = None
    """Run before each task, e.g. `source /shared/venv/bin/activate`; default: activate the environment that
    submits (its `bin/activate`), which must then be on a filesystem the nodes share."""
    sbatch_args: dict = field(default_factory=dict)
    """Extra `#SBATCH --KEY=VALUE` lines, e.g. {account: myproj, constraint: cpu}."""


@dataclass
class RaySettings:
    address: str = "auto"
    """`auto` joins the cluster `ray start` began on this machine; or HOST:PORT of the head node."""
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0


@dataclass
class ExecutorSection:
    tasks: int = 4
    """Inputs (files, parallel entries) are dealt to this many tasks; also the number of dedup hash partitions.
    Changing it starts the run afresh."""
    workers: int = -1
    """Tasks running at once (-1: all)."""
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    ray: RaySettings = field(default_factory=RaySettings)


def check(kind: str, section: ExecutorSection) -> None:
    """Refuse what cannot run before anything is written: unknown executor, tasks < 1, no sbatch, no Ray."""
    if kind not in EXECUTORS:
        raise PolyLMError(f"--executor {kind!r} is not one of {', '.join(EXECUTORS)}")
    if section.tasks < 1:
        raise PolyLMError(f"tasks must be >= 1, got {section.tasks}")
    if section.workers == 0 or section.workers < -1:
        raise PolyLMError(f"workers must be >= 1 (or -1: all tasks at once), got {section.workers}")
    if kind == "slurm":
        if shutil.which("sbatch") is None:
            raise PolyLMError("--executor slurm: `sbatch` is not on PATH; submit from a Slurm login node")
        if not section.slurm.partition:
            raise PolyLMError("--executor slurm: executor.slurm.partition is not set in the data config")
    if kind == "ray":
        _connect_ray(section.ray.address)


def _connect_ray(address: str) -> None:
    """Join the Ray cluster at `address`, failing within seconds when nothing answers there (ray.init would wait
    for minutes)."""
    import ray

    if ray.is_initialized():
        return
    if address != "auto":
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=RAY_CONNECT_SECONDS).close()
        except (OSError, ValueError) as exc:
            message = f"Ray address {address!r} does not answer ({exc}); is `ray start --head` running?"
            raise PolyLMError(message) from None
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PolyLMError(f"Ray address {address!r}: cannot join the cluster ({first})") from None


def run(config: DataConfig, out: Path, config_path: Path | None, kind: str) -> dict | None:
    """Run (local, ray) or submit (slurm) the staged preparation into `out`; the summary when it ran here."""
    # A failing task's log keeps its traceback; without loguru's variable dumps, which bury the message.
    os.environ.setdefault("LOGURU_DIAGNOSE", "NO")
    from polylm.data.stages import Plan

    section = config.executor
    check(kind, section)
    plan = Plan(config, out.resolve(), section.tasks, config_path)
    _check_inputs(plan)
    with hold_run_dir(plan.out, f"polylm data prepare --executor {kind}"):
        return _run(plan, section, kind)


def _run(plan: Plan, section: ExecutorSection, kind: str) -> dict | None:
    from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor, SlurmPipelineExecutor

    from polylm.data.stages import stages

    _claim(plan)
    facts = {"executor": kind, "tasks": section.tasks}
    executors = []
    for step, tasks in stages(plan, facts):
        workers = -1 if section.workers == -1 else min(section.workers, tasks)
        logs = str(plan.out / "logs" / step.name)
        if kind == "local":
            executors.append(LocalPipelineExecutor([step], tasks=tasks, workers=workers, logging_dir=logs))
        elif kind == "ray":
            settings = section.ray
            executors.append(RayPipelineExecutor([step], tasks=tasks, workers=workers, logging_dir=logs,
                                                 cpus_per_task=settings.cpus_per_task,
                                                 mem_per_cpu_gb=settings.mem_per_cpu_gb))  # fmt: skip
        else:
            executors.append(_slurm(SlurmPipelineExecutor, section.slurm, step.name, tasks, workers, logs,
                                    [step], executors[-1] if executors else None))  # fmt: skip
    if kind == "slurm":
        executors[-1].run()  # launches the chain of dependencies first
        return None
    for step_executor in executors:
        step_executor.run()
        missing = step_executor.get_incomplete_ranks(skip_completed=True)
        if missing:
            stage = step_executor.pipeline[0].name
            listed = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise PolyLMError(f"stage {stage}: tasks {listed} did not complete; see {plan.out / 'logs' / stage}")
    return json.loads((plan.out / "data.json").read_text(encoding="utf-8"))


def _slurm(cls, settings: SlurmSettings, name: str, tasks: int, workers: int, logs: str, pipeline, depends):
    activate = Path(sys.prefix) / "bin" / "activate"
    env_command = settings.env_command or (f"source {activate}" if activate.is_file() else None)
    return cls(
        pipeline,
        tasks=tasks,
        workers=workers,
        time=settings.time,
        partition=settings.partition,
        cpus_per_task=settings.cpus_per_task,
        mem_per_cpu_gb=settings.mem_per_cpu_gb,
        qos=settings.qos,
        job_name=f"{settings.job_name}-{name}",
        env_command=env_command,
        sbatch_args=dict(settings.sbatch_args),
        logging_dir=logs,
        depends=depends,
    )


def _check_inputs(plan: Plan) -> None:
    """Open every input once (readers check files and formats at the call) so a config mistake stops the run
    before any task is launched."""
    from polylm.data.documents import Ledger
    from polylm.data.prepare import input_documents

    for item in plan.inputs:
        input_documents(plan.config.sources[item.source], item.number, plan.config, Ledger())


def _claim(plan: Plan) -> None:
    """Record which plan `out` holds; a rerun must be the same plan, else its completed tasks would be wrong."""
    record = plan.out / "logs" / "plan.json"
    if record.exists():
        found = json.loads(record.read_text(encoding="utf-8")).get("plan")
        if found != plan.identity:
            raise PolyLMError(
                f"{plan.out}: holds a staged run of another config or task count (plan {found}, this one "
                f"{plan.identity}); use a new --out, or delete {plan.out} to start again"
            )
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json(record, {"plan": plan.identity, "tasks": plan.tasks})
