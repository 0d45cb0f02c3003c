"""Prometheus: engine presets, PromQL, and Observations with explicit data quality.

`observe.observe(spec, client, now_s)` is the entry point; the controller and `tokenscale plan
--prometheus` call it. Only this package talks to Prometheus (STYLE.md, "Layers").
"""
