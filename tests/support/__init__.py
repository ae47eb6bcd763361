"""What the tests share: run directories written in the run format (runs.py), a
hand-made lab run (lab_run.py), and real traffic between lab hosts (triggers.py)."""
