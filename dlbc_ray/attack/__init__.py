"""`dlbc-ray attack`: adversaries played for real on a network (harness) and judged by pure rules (judging)."""
