"""Training: model flavors and packages, autologging, AutoML, jobs on local processes or Ray."""
