"""Human preference data: candidates from your own model, the annotation store, rankings -> pairs,
agreement, and the reward-model gate. No web code here (the pages are in webui/)."""
