"""Building the resources: the atlas from registered anatomy, regions learned from labelled scans,
and the warp both use. Imports the stages below ``outputs``."""
