"""The eval harness (`fusion-router eval`): a dataset asked of targets through the sidecar.

`dataset` loads and checks the JSONL items, `targets` turns target strings into request
bodies, `grading` and `stats` are pure, `sidecar` finds (or starts) the sidecar and tells
simulated providers apart, `runner` drives the calls and resumes, `results` is the
`results.jsonl` record, `report` writes `summary.json`, `report.md` and the chart,
`progress` draws the bar, and `command` is the CLI glue.
"""
