"""The CTARR core: everything from an image and its anatomy to crops, without nnU-Net.

Subpackages in the order the data flows (tests/test_architecture.py enforces what may import what)::

    base/      errors, geometry, transform, images, cases, files, integrity, nnU-Net file conventions
    anatomy/   groups, label maps, mask folders, anatomy sources (incl. HU, TotalSegmentator weights),
               registration grid (MaskVolume), atlas
    regions/   regions (atlas-mm boxes), model region settings, crop plans (crop + paste back)
    localise/  registration, refinement, locate, trust, the one decision, prealignment
    outputs/   case writer, sidecar and report records, batch report, HTML report, QC pictures
    build/     atlas builder, region learning, warp

Imports neither ``nnunetv2`` nor any other subpackage of nnunet_ctarr.
"""
