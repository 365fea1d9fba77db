"""`alignlab webui`: the Gradio pages (app.py) over a job runner (jobs.py) and a run-folder reader (runs.py)."""
