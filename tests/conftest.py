"""Test configuration: hypothesis profiles.

``QBB_HYPOTHESIS_PROFILE`` picks one: ``ci`` (default, bounded for the 10-minute suite),
``dev`` (fewer examples, quick edit-test loop) or ``deep`` (long exploratory runs).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "deep", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("QBB_HYPOTHESIS_PROFILE", "ci"))
