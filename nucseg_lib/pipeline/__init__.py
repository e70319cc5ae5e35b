"""The pipeline that runs the study: the workflow's jobs, the runner that publishes a run, the book it builds, and the folders a run may write."""
