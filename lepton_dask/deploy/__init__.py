"""Deployment: Kubernetes manifests (dask-kubernetes operator) and the scaler
that applies the cost-aware policy to worker-group replicas."""
