"""Jobs: command lines and environments of training processes (torch-free), the executors that
start them (local processes, SLURM), the app's job manager, sweeps and wall-time estimates.
"""
