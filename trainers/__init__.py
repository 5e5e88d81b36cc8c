"""nnU-Net trainers of nnunet-ctarr (installed as ``nnunet_ctarr.trainers``)."""
