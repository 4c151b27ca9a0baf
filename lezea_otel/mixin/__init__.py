"""The monitoring mixin: what Prometheus and Grafana run on the package's metrics, made from code.

``rules``: the alerting and recording rules of ``collector/rules/`` (``python scripts/rules.py`` writes
them), every metric name and label taken from the names module through the Prometheus naming the run's
/metrics and the Collector share (``exporter.prometheus``), never retyped.
"""
