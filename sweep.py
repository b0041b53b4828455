"""Run a grid of runs (methods × targets × seeds × options or recipe fields) with one command; resumable.

Every run is one command of this project (``train_baseline.py``), started in a pool of ``--jobs`` workers, each
pinned to a device of ``--devices`` (``cpu``, or ``cuda:0,cuda:1,...``: several jobs may share a GPU) with
threads per job set so that the jobs do not oversubscribe the CPU. Rerunning the same command skips finished
runs and resumes killed ones from their checkpoints (the harness does that), so a sweep continues where it
stopped. A method that trains another run's mask (``ticket``) waits for its donor (``--donor``, same target and
seed) when the sweep makes it. A failed run does not stop the others; a summary at the end lists what finished, was skipped or failed, with log paths. Ctrl-C stops the
pool: every running job writes nothing beyond its last checkpoint, and the next sweep resumes it.

examples:
  python sweep.py --methods progressive,rigl,snip --targets 0.8,0.9,0.95 --seeds 42,123,456 \\
      --set schedule=linear,cubic -- --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist
  python sweep.py --methods progressive --set lr=0.1,0.05 -- --dataset mnist   # results/lr0.1/..., results/lr0.05/...
  python sweep.py ... --jobs 8 --devices cuda:0,cuda:1,cuda:2,cuda:3 -- --dataset cifar10
  python sweep.py ... --print-array > runs.txt      # one command per line, for a SLURM array (README)
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = "train_baseline.py"  # every run of a sweep is one of its commands (train_baseline.SCRIPT)


class SweepError(Exception):
    """Bad input: one line, exit code 2, nothing started."""


@dataclass
class Job:
    argv: list[str]  # the script's arguments
    name: str  # method label, target and seed, for progress lines and the log's name
    result: str  # the result file the run writes: there before it starts, the run is skipped
    waits_for: str | None = None  # a donor's result file that must exist first
    outcome: str = "pending"
    log: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)  # set when this job is over, however it ended


def split_list(text: str, flag: str, convert=str) -> list:
    try:
        values = [convert(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SweepError(f"{flag} {text!r}: not a comma-separated list of {convert.__name__} values") from None
    if not values:
        raise SweepError(f"{flag} is empty: the grid has no run")
    return values


def parse_sets(items: list[str]) -> dict[str, list[str]]:
    """``--set key=v1,v2`` (repeatable) -> {key: [v1, v2]}; keys are flags' names (dashes or underscores)."""
    sets = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep:
            raise SweepError(f"--set {item!r}: expected FIELD=V1,V2")
        sets[key.strip().replace("-", "_")] = split_list(values, f"--set {key.strip()}")
    return sets


NOT_SWEPT = {"seed": "--seeds", "method": "--methods", "target_sparsity": "--targets", "mask_from": "--donor"}


def split_sets(sets: dict[str, list[str]], names: list[str]) -> tuple[dict, dict]:
    """The swept fields as (common fields: every run, {name: values}; options: {method: {name: values}}), or
    SweepError naming a field that no run of the grid takes as a flag."""
    from harness import config, methods
    common, options = {}, {name: {} for name in names}
    offered = config.offered_options(methods.options_of(tuple(names)))  # option -> the methods taking its flag
    for key, values in sets.items():
        if key in NOT_SWEPT:
            raise SweepError(f"--set {key}: sweep it with {NOT_SWEPT[key]}")
        field = config.FIELDS.get(key)
        if field is not None and field.metadata["flag"] and field.metadata["role"] != config.RUN:
            common[key] = values
            continue
        owners = [n for n, _ in offered.get(key, [])]
        if not owners:
            what = "a run field: give it after --" if key in config.FIELDS else \
                f"neither a recipe field nor an option of {', '.join(names)}"
            raise SweepError(f"--set {key}: {what}")
        for n in owners:
            options[n][key] = values
    return common, options


def combinations(values: dict[str, list[str]]) -> list[dict[str, str]]:
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


def as_flags(combo: dict[str, str]) -> list[str]:
    """Flags for a combination of swept values (a true/false value of an on/off flag: the flag or nothing)."""
    from harness import config
    argv = []
    for key, value in combo.items():
        field = config.FIELDS.get(key)
        if field is not None and field.metadata["type"] is bool:
            if value.lower() not in ("true", "false"):
                raise SweepError(f"--set {key}={value}: {key} is an on/off flag; its values are true, false")
            argv += [f"--{key.replace('_', '-')}"] if value.lower() == "true" else []
        else:
            argv += [f"--{key.replace('_', '-')}", value]
    return argv


def build_jobs(args, passthrough: list[str]) -> list[Job]:
    """The grid, donors before the tickets that need them; each command checked by the script's own parser. Runs
    of other values of a swept recipe field go to their own results folder under --out (``lr0.05``, ...)."""
    from harness import methods
    from train_baseline import SCRIPT as script
    names = split_list(args.methods, "--methods")
    unknown = [m for m in names if m not in methods.METHODS]
    if unknown:
        raise SweepError(f"--methods: unknown method {unknown[0]!r} (methods: {', '.join(methods.METHODS)})")
    targets = split_list(args.targets, "--targets", float)
    bad = [t for t in targets if not 0.0 <= t < 1.0]
    if bad:
        raise SweepError(f"--targets: {bad[0]} is not a sparsity in [0, 1)")
    seeds = split_list(args.seeds, "--seeds", int)
    common, options = split_sets(parse_sets(args.set), names)
    base_out = out_of(passthrough)
    jobs = []
    for recipe in combinations(common):
        out = ["--out", os.path.join(base_out, "-".join(f"{k}{v}" for k, v in recipe.items()))] if recipe else []
        for name in sorted(names, key=lambda n: methods.METHODS[n].needs_donor):  # last: they wait for donors
            method = methods.METHODS[name]
            for target in (targets if method.prunes else [None]):  # dense: once per seed
                for seed in seeds:
                    for combo in combinations(options[name]):
                        jobs.append(make_job(script, name, target, seed, as_flags({**recipe, **combo}),
                                             passthrough + out, args.donor))
    return jobs


def out_of(passthrough: list[str]) -> str:
    """The --out the runs are given (the flags after ``--``), without parsing the rest: those are checked per run,
    against each run's own method."""
    from harness import config
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--out", default=config.FIELDS["out"].default)
    return p.parse_known_args(passthrough)[0].out


def make_job(script, name: str, target, seed: int, flags: list[str], passthrough: list[str], donor: str) -> Job:
    """One run's command and the result file it writes; a method that trains a donor's mask (``needs_donor``)
    names its donor's result (same target and seed) and waits for it."""
    from harness import methods, runfolder
    method = methods.METHODS[name]
    argv = ["--method", name, "--seed", str(seed)]
    if target is not None and not method.needs_donor:  # a donor's mask comes with the donor's target
        argv += ["--target-sparsity", f"{target:g}"]
    argv += flags
    waits_for = None
    if method.needs_donor:
        cfg = parse(script, argv + passthrough, read_files=False)  # the donor may not exist yet
        waits_for = runfolder.run_paths(cfg, f"{donor}-{target:g}")["result"]
        argv += method.donor_flags(waits_for)
        folder = method.folder_for(cfg.options, f"{donor}-{target:g}")
    else:
        cfg = parse(script, argv + passthrough)
        folder = methods.create(cfg).folder()
    return Job(argv + passthrough, f"{folder} seed {seed}", runfolder.run_paths(cfg, folder)["result"], waits_for)


def parse(script, argv: list[str], read_files: bool = True):
    """The run's completed config as the script would make it: bad flags raise SweepError."""
    from harness import config, loop
    try:
        return loop.parse(script, argv, read_files)
    except config.ConfigError as e:
        raise SweepError(f"{' '.join(argv)}: {e}") from None


def device_env(device: str, threads: int) -> tuple[dict, list[str]]:
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if device == "cpu":
        return env, ["--device", "cpu"]
    return {**env, "CUDA_VISIBLE_DEVICES": device.split(":", 1)[1]}, ["--device", "cuda"]


def check_devices(devices: list[str]) -> None:
    for d in devices:
        if d == "cpu":
            continue
        if not (d.startswith("cuda:") and d[5:].isdigit()):
            raise SweepError(f"--devices: {d!r} is not cpu or cuda:N")
        import torch
        if int(d[5:]) >= torch.cuda.device_count():
            raise SweepError(f"--devices: {d} does not exist here ({torch.cuda.device_count()} CUDA devices)")


def run_pool(jobs: list[Job], devices: list[str], n_jobs: int, log_dir: str) -> None:
    """Run every job, n_jobs at a time; job slot k uses devices[k % len(devices)]."""
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    free_slots = list(range(n_jobs))
    lock, stop, done = threading.Lock(), threading.Event(), [0]

    makers = {job.result: job for job in jobs}  # a donor's result file -> the job of this sweep that makes it

    def work(job: Job) -> None:
        try:
            if job.waits_for and not donor_ready(job, makers.get(job.waits_for), stop):
                return
            with lock:
                slot = free_slots.pop(0)
            env, device_args = device_env(devices[slot % len(devices)], threads)
            job.log = os.path.join(log_dir, job.name.replace(" ", "_") + ".log")
            job.outcome, start, existed = "running", time.time(), os.path.exists(job.result)
            with open(job.log, "a") as log:
                proc = subprocess.run([sys.executable, SCRIPT, *job.argv, *device_args], cwd=HERE, stdout=log,
                                      stderr=subprocess.STDOUT, env={**os.environ, **env})
            job.seconds = time.time() - start
            # exit 0 with the result there before: the harness found it finished (of this identity) and skipped it
            job.outcome = "interrupted" if proc.returncode == 130 else "failed" if proc.returncode else \
                "skipped" if existed else "finished"
            with lock:
                free_slots.append(slot)
                done[0] += 1
                print(f"[{time.strftime('%H:%M:%S')}] {done[0]}/{len(jobs)} {job.outcome:<11} {job.seconds:6.0f}s  "
                      f"{job.name}" + ("" if job.outcome in ("finished", "skipped") else f"  (log: {job.log})"),
                      flush=True)
        finally:
            job.done.set()

    with ThreadPoolExecutor(n_jobs) as pool:
        futures = [pool.submit(work, job) for job in jobs]
        try:
            for f in futures:
                f.result()
        except KeyboardInterrupt:
            stop.set()  # the jobs got the same SIGINT: each stops at its last checkpoint
            for f in futures:
                f.cancel()
            raise


def donor_ready(job: Job, maker: Job | None, stop: threading.Event) -> bool:
    """Wait until ``job``'s donor result exists: made by ``maker``, a job of this sweep (True once it finished,
    or was skipped: its result is there), or already there from before. Otherwise ``job`` fails, saying why."""
    if maker is not None:
        while not maker.done.wait(timeout=0.5):  # a timeout only to notice Ctrl-C (stop) between waits
            if stop.is_set():
                return False
    if os.path.exists(job.waits_for):
        return True
    job.outcome = "failed"
    job.extra["why"] = f"its donor {job.waits_for} was not produced" + ("" if maker else " (no run of this sweep makes it)")
    return False


def summary(jobs: list[Job]) -> str:
    counts = {k: sum(j.outcome == k for j in jobs) for k in ("finished", "skipped", "failed", "interrupted", "pending")}
    lines = [", ".join(f"{n} {k}" for k, n in counts.items() if n)]
    lines += [f"  failed: {j.name}: {j.extra.get('why') or j.log}" for j in jobs if j.outcome == "failed"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, passthrough = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(prog="sweep.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", required=True, help="comma-separated methods (train_baseline.py --method)")
    p.add_argument("--targets", default="0.9", help="comma-separated target sparsities (dense runs once per seed)")
    p.add_argument("--seeds", default="42", help="comma-separated seeds")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=V1,V2",
                   help="a recipe field (every run; each value in its own folder under --out) or a method option "
                        "(the runs of methods that have it) over several values; repeatable")
    p.add_argument("--donor", default="progressive", help="ticket: the donor's folder label, same target and seed")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time")
    p.add_argument("--devices", default="cpu", help="cpu, or cuda:0,cuda:1,... (jobs are spread over them)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    p.add_argument("--print-array", action="store_true", help="print one command per line (SLURM array) and stop")
    args = p.parse_args(own)
    try:
        if args.jobs < 1:
            raise SweepError(f"--jobs must be at least 1, got {args.jobs}")
        devices = split_list(args.devices, "--devices")
        check_devices(devices)
        jobs = build_jobs(args, passthrough)
    except SweepError as e:
        print(f"sweep.py: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run or args.print_array:
        try:
            print("\n".join(shlex.join(["python", SCRIPT, *job.argv]) for job in jobs), flush=True)
        except BrokenPipeError:  # `| head`: the reader left; no traceback
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    out = out_of(passthrough)
    log_dir = os.path.join(out, "logs")
    os.makedirs(log_dir, exist_ok=True)
    print(f"sweep: {len(jobs)} runs, {args.jobs} at a time on {', '.join(devices)}; logs in {log_dir}", flush=True)
    # Ctrl-C stops the sweep even where SIGINT came in ignored (a job started with & from a script): with a
    # handler here, the runs it starts get the default again and stop at their checkpoints too
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run_pool(jobs, devices, args.jobs, log_dir)
    except KeyboardInterrupt:
        print(f"sweep: interrupted; rerun the same command to resume.\n{summary(jobs)}", file=sys.stderr)
        return 130
    print(f"sweep: {summary(jobs)}")
    return 1 if any(j.outcome == "failed" for j in jobs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
