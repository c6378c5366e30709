"""Serving: online model servers (Open Inference Protocol and plain JSON), dynamic batching,
deployments with rollouts, the prediction log, and batch inference."""
