"""The incident lab: workloads and fault scenarios that produce labelled runs."""
