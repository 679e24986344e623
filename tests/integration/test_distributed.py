"""One fold trained by 2 processes under torchrun (gloo on the CPU) equals one process; only
the main rank writes; a torchrun job killed with SIGKILL resumes to the same numbers."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sdm import constants as C
from sdm import storage
from sdm.config import to_yaml
from sdm.engine.distributed import DistributedContext

TESTS = Path(__file__).parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# Losses with a learned parameter (margin's beta) and without, SDM on (trunk feature
# dropout included) and off.
CASES = {
    "margin_sdm": ("loss.name=margin", "loss.params={margin: 0.2, init_beta: 1.0}",
                   "sdm.enabled=true", "sdm.feature_dropout=0.2"),
    "ms_off": ("loss.name=multi_similarity", "sdm.enabled=false"),
}
# `sdm ARGS` with plain SGD in place of RMSprop (see distributed_steps.py: RMSprop amplifies
# float rounding, SGD does not), and, with SDM_TEST_HOLD_AT=n, every process stopping before
# its n-th training step: it prints "held <rank> <pid>" and waits for a signal.
LAUNCHER = """
import itertools
import os
import signal
import sys

from distributed_steps import sgd_optimizers
from sdm.cli import main
from sdm.engine import build, fold

build.build_optimizers = sgd_optimizers
train_step, steps = fold.train_step, itertools.count(1)
hold_at = int(os.environ.get("SDM_TEST_HOLD_AT", "0"))


def held_train_step(*args, **kwargs):
    if next(steps) == hold_at:
        # One write(2) of under PIPE_BUF bytes: the two ranks' lines cannot interleave (print
        # writes each of its arguments apart, and "heldheld 1 ..." lost both).
        os.write(1, f"held {os.environ.get('RANK', '0')} {os.getpid()}\\n".encode())
        signal.alarm(600)  # SIGALRM ends a process that the test failed to kill
        while True:
            signal.pause()
    return train_step(*args, **kwargs)


fold.train_step = held_train_step
sys.exit(main(sys.argv[1:]))
"""


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a torchrun job: its temporary files (torchrun's torchelastic_*
    folders) under the test's ``tmp_path``, which pytest cleans, not in /tmp."""
    path = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
            "PYTHONPATH": os.pathsep.join(path), "TMPDIR": str(tmp_path), **extra}


def _config_file(tiny_config, tmp_path: Path, name: str, *extra: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(to_yaml(tiny_config(name, *extra)))
    return path


@pytest.mark.parametrize(("case", "optimizer", "steps"), [
    ("margin_sdm", "rmsprop", 3), ("ms_off", "rmsprop", 3), ("margin_sdm", "sgd", 12)])
def test_two_processes_take_the_same_steps_as_one(tiny_config, tmp_path, case, optimizer,
                                                  steps):
    config = _config_file(tiny_config, tmp_path, case, *CASES[case])
    run = subprocess.run([*TORCHRUN, str(TESTS / "distributed_steps.py"), str(config),
                          "--steps", str(steps), "--optimizer", optimizer],
                         capture_output=True, text=True, timeout=300, env=_environment(tmp_path))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["world_size"] == 2
    # Measured with the CPU kernels of AVX-512, AVX2 and none: losses within 2e-7, first
    # gradients within 2e-6 of each tensor's largest entry.
    assert found["loss"] <= 1e-5, found
    assert found["first_gradients"] <= 1e-4, found
    assert found["ranks_identical"], found
    assert len(set(found["losses"])) == steps, "different batches must give different losses"
    if optimizer == "sgd":
        # Measured 3e-5 after 12 steps; a wrong gradient gives a difference of the order of
        # the parameters' change itself.
        assert found["last_vs_moved"] <= 1e-2, found


def test_each_rank_keeps_its_share_of_the_global_batch():
    batch = torch.arange(12)
    shares = [DistributedContext(rank, 3, rank).local_share(batch) for rank in range(3)]
    assert [s.tolist() for s in shares] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    with pytest.raises(ValueError, match="does not split evenly over 5 processes"):
        DistributedContext(0, 5, 0).local_share(batch)


def _train_command(launcher: Path, config: Path, processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, str(launcher), "train", str(config)]
    return [*TORCHRUN, str(launcher), "train", str(config)]


def _checkpoint(experiment: Path, name: str = C.LATEST_CHECKPOINT) -> dict:
    return storage.load_checkpoint(experiment / "fold_0" / name)


def _training_losses(experiment: Path) -> list[float]:
    events = EventAccumulator(str(experiment / "fold_0" / C.TENSORBOARD_FOLDER))
    events.Reload()
    return [scalar.value for scalar in events.Scalars("train/loss")]


def _tensors(checkpoint: dict) -> dict[str, torch.Tensor]:
    return {f"{part}.{key}": value for part in ("trunk", "embedder", "loss")
            for key, value in checkpoint[part].items() if value.is_floating_point()}


def test_torchrun_trains_like_one_process_and_resumes_after_sigkill(tiny_config, tmp_path):
    # Two epochs, so that the second one's batches come after a validation (whose random
    # state the main rank shares); SGD, so that parameters can be compared after 12 steps.
    extra = ("training.folds=[0]", "training.max_epochs=2", "training.iterations_per_epoch=6",
             *CASES["margin_sdm"])
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    results = {}
    for name, processes in (("alone", 1), ("torchrun", 2)):
        config = _config_file(tiny_config, tmp_path, name, *extra)
        run = subprocess.run(_train_command(launcher, config, processes), capture_output=True,
                             text=True, timeout=600, env=_environment(tmp_path))
        assert run.returncode == 0, run.stderr[-4000:]
        results[name] = tmp_path / name
    alone, together = (storage.read_csv(results[n] / "fold_0" / C.METRICS_CSV)
                       for n in ("alone", "torchrun"))
    assert [r["epoch"] for r in together] == [r["epoch"] for r in alone] == [
        "-1", "0", "1", "2"]
    # Validated before training, the same model gives the very same numbers; after training,
    # parameters within rounding of each other are compared themselves, not their rankings.
    assert together[:2] == alone[:2]
    losses = {name: _training_losses(folder) for name, folder in results.items()}
    assert len(losses["alone"]) == len(losses["torchrun"]) == 12
    for one, two in zip(losses["alone"], losses["torchrun"], strict=True):
        assert abs(two - one) <= 1e-5 * max(abs(one), 1.0), losses
    start = _tensors(_checkpoint(results["alone"], C.PRETRAINED_CHECKPOINT))
    ends = {name: _tensors(_checkpoint(folder)) for name, folder in results.items()}
    for key, first in start.items():  # measured: below 1e-4 of the change in training
        moved = float((ends["alone"][key] - first).abs().max())
        gap = float((ends["torchrun"][key] - ends["alone"][key]).abs().max())
        assert gap <= 1e-2 * moved, (key, gap, moved)
    events = list((results["torchrun"] / "fold_0").glob(f"{C.TENSORBOARD_FOLDER}/*"))
    assert len(events) == 1, "only the main rank writes records"

    # Killed in the second epoch (both processes held before its third step), after the
    # first epoch's checkpoint; the rerun resumes from that checkpoint.
    config = _config_file(tiny_config, tmp_path, "killed", *extra)
    errors = tmp_path / "killed.stderr"
    with errors.open("w") as stderr:
        job = subprocess.Popen(_train_command(launcher, config, 2), stdout=subprocess.PIPE,
                               stderr=stderr, text=True, start_new_session=True,
                               env=_environment(tmp_path, SDM_TEST_HOLD_AT="9"))
    held = {}
    for line in job.stdout:
        if "held" in line:
            found = re.fullmatch(r"held (\d) (\d+)\n", line)
            assert found, f"not a line of one held rank: {line!r}"
            held[found[1]] = int(found[2])
            if len(held) == 2:
                break
    assert len(held) == 2, (f"the job ended (status {job.wait()}) before both ranks were held:\n"
                            + errors.read_text()[-4000:])
    # torchrun starts each worker in a session of its own: killing torchrun's process group
    # leaves them running, so each one is killed by its id.
    os.killpg(job.pid, signal.SIGKILL)
    for pid in held.values():
        os.kill(pid, signal.SIGKILL)
    job.wait()
    job.stdout.close()
    assert _checkpoint(tmp_path / "killed")["epoch"] == 1
    assert not (tmp_path / "killed" / "fold_0" / C.FOLD_DONE_FILE).exists()
    rerun = subprocess.run(_train_command(launcher, config, 2), capture_output=True, text=True,
                           timeout=600, env=_environment(tmp_path))
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert storage.read_csv(tmp_path / "killed" / "fold_0" / C.METRICS_CSV) == together
    resumed = _tensors(_checkpoint(tmp_path / "killed"))
    for key, value in ends["torchrun"].items():
        assert torch.equal(resumed[key], value), key


@pytest.mark.parametrize(("overrides", "message"), [
    (["training.device=cuda:0"], "training.device=cuda:0 would put all 2 processes of this "
     "torchrun job on one GPU; use training.device=cuda"),
    (["training.batch_size=15", "training.m_per_class=5"],
     "training.batch_size=15 does not split evenly over 2 processes"),
    (["dataset.root=no_such_folder"], "no_such_folder"),
])
def test_bad_input_under_torchrun_is_one_line_from_each_rank(tiny_config, tmp_path, overrides,
                                                             message):
    config = _config_file(tiny_config, tmp_path, "bad", *overrides)
    run = subprocess.run([*TORCHRUN, "-m", "sdm.cli", "train", str(config)], capture_output=True,
                         text=True, timeout=300, env=_environment(tmp_path))
    assert run.returncode != 0
    # torchrun stops the other rank when the first one ends: one or both report it.
    errors = [line for line in run.stderr.splitlines() if line.startswith("sdm train: error: ")]
    assert errors and all(message in line for line in errors), run.stderr[-4000:]
    assert "exitcode  : 2 " in run.stderr, "exit status 2, bad input, not 1, a crash"
    assert "/sdm/" not in run.stderr, "no traceback through sdm's code"
