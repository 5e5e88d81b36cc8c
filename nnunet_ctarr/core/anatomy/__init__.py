"""Stage 1: a scan's anatomy as 19 CTARR groups (label schemes, label maps, mask folders, the HU
anatomy, TotalSegmentator's weights folder), the registration grid (``MaskVolume``) and the atlas.
Imports only ``core.base``."""
