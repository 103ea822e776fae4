"""The load benchmark: the real bot in a subprocess against fake Slack, Discord and Replicate servers.

Run it with `bin/bench` (see `bench/README.md`); `python -m bench --help` lists the options.
"""
