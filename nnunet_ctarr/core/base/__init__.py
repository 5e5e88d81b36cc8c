"""Stage 0 of the core: errors, the one geometry object, the atlas transform, image and file I/O,
case matching, nnU-Net's file conventions (read without nnunetv2). Imports nothing else of the core."""
