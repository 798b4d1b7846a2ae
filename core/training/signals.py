"""How a training process answers signals, whoever sends them.

SIGTERM (the job runner's cancel, sent to the run's process group; ``scancel``) and SIGINT (Ctrl-C)
alike end the run as ``cancelled``; launched again, it resumes from its last checkpoint. SIGUSR1
(SLURM's ``--signal=USR1@90`` before a preemption or the time limit) checkpoints at the next step
boundary and ends the run as ``preempted`` (exit code 75). SIGXFSZ is ignored, so a file over the
size limit is an error message instead of a silent death.
"""

import signal
import threading

# sysexits' EX_TEMPFAIL: the run stopped on SIGUSR1 after a checkpoint; `--resume` continues it.
EXIT_PREEMPTED = 75
PREEMPT = threading.Event()  # set by SIGUSR1: checkpoint at the next step boundary, then stop


class RunPreempted(Exception):
    """SIGUSR1 stopped the run after a checkpoint (a scheduler's warning before preemption or
    the time limit); resuming continues exactly from that checkpoint."""


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def handle_stop_signals() -> None:
    """SIGTERM (scancel, a scheduler stopping the job) and SIGINT end the run as cancelled;
    SIGUSR1 (SLURM's ``--signal=USR1@90``) checkpoints at the next step and ends it as preempted."""
    signal.signal(signal.SIGTERM, _interrupt)
    # A process started with SIGINT ignored (`python app.py &` from a script, nohup) passes SIG_IGN
    # to its children and Python keeps it: the app's cancel would go unheard.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGUSR1, lambda signum, frame: PREEMPT.set())


def ignore_file_size_signal() -> None:
    """Past RLIMIT_FSIZE the kernel sends SIGXFSZ, which kills silently by default; ignored, the
    write fails with EFBIG instead, and the run ends `failed` with a disk message. CPython ignores
    it at start-up already: set here so the guarantee does not rest on an interpreter detail."""
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
