"""The competition arena: checks, times and ranks backends, each in its own worker.

The parent process is trusted and the worker is not: the parent generates the
inputs, computes float64 references, reads the clock and measures memory; the
worker only loads one backend and runs what it is sent (see worker.py).

Modules, in the order a run uses them: events (leaderboard/events.toml),
problems (inputs, references, cheap checks per event kind), wire (the pipe
protocol), worker / runner (the two ends of a worker), competition (the
check and timing phases), rules and sandbox and blasguard (what a backend may
not do, and how the worker is confined), scoring, results (the JSON run file)
and results_schema (its published JSON Schema), board (README.md, index.html)
with display (how every string from a run file is shown), charts and history
(scores across runs), compete and leaderboard_cmd (the commands), grades
(CSV and Gradescope exports).
Class-sized runs: sharding (which backends a shard runs), merging (shards into
one board) and slurm (the job-array script).
"""
