"""The model registry: registered models, versions, aliases, stages, cards, evaluations,
lineage, approvals, and package export (folder, tarball, ONNX, deployable image folder)."""
