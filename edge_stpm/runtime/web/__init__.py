"""The station's web app: pages for operators and engineers (live, history, review, recipes and models, health,
audit) and the JSON API under them, with roles; served by the run's HTTP server, every asset inside the package."""
