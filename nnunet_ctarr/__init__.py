"""nnunet-ctarr: CT Anatomical Region Recognition (CTARR) for nnU-Net v2.

Data flow (one module per step)::

    io -> anatomy -> atlas -> registration -> regions -> cropping -> pipeline / cli
"""
__version__ = "0.1.0"
