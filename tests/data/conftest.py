# A subprocess entry point, not a test module.
collect_ignore = ["sharding_worker.py", "prepare_worker.py"]
