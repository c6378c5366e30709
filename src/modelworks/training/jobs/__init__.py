"""Jobs: training and AutoML work queued and run by the local runner or on a Ray cluster."""
