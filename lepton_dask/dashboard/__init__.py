"""Dashboards: the Cost page in the Dask dashboard, and the Grafana dashboards."""
