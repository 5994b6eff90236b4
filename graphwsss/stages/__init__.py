"""Pipeline stages: each a function from files to files, resumable and runnable alone."""
