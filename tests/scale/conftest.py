# Scripts that the tests run in subprocesses: importing them would start JAX's
# distributed runtime or need 4 devices in this process.
collect_ignore = ["multiprocess_worker.py", "sharded_checks.py"]
