"""A dlbc-ray net plugin: a small residual CNN, found through the ``dlbc_ray.nets`` entry point."""
