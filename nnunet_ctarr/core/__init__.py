"""The CTARR core: everything from an image and its anatomy to crops, without nnU-Net.

io -> geometry -> anatomy (+ anatomy_sources) -> volume -> atlas -> registration -> transform
-> pipeline (locate, trust) -> regions -> cropping; atlas_builder, region_learning, prealign and
qc build on these. Imports neither ``nnunetv2`` nor any other subpackage of nnunet_ctarr
(tests/test_architecture.py checks it).
"""
