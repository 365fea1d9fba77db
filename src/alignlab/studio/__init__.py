"""Human preference data: candidates, annotation store, ranking export, agreement, RM gate."""
