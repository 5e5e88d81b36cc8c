"""Stage 2: regions (boxes in atlas mm), a model's region settings (``ctarr.json``), and the crop
plan that maps boxes into a scan's index space, cuts the crops and pastes them back. Imports only
``core.base``."""
