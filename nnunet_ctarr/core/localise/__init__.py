"""Stage 3: where a scan sits on the atlas (registration, refinement, ``locate``), whether that may
place a crop (trust), the one decision per region, and two-scan prealignment. Imports ``core.base``,
``core.anatomy`` and ``core.regions``."""
