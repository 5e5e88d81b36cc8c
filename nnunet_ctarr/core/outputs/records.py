"""The typed records a run writes: the sidecar ``<case>.ctarr.json`` (one schema for the crop and
the predict commands) and the batch report's rows.

A :class:`CaseRecord` holds the case's fields (input and its stamp, the settings, versions, anatomy,
image geometry, registration, seconds) and one :class:`RegionRecord` per region (status, trust
verdict, transform, boxes, outputs, warnings). Both convert to and from JSON explicitly; a sidecar
of another schema version reads as None (``--continue`` then redoes the case, never crashes).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from ..base.files import as_json
from ..localise.decision import Status

#: version of the sidecar schema; 1 = the crop command's ``regions`` map before 0.2 (no ``schema`` field)
SCHEMA = 2


@dataclass(frozen=True)
class OutputFile:
    """One file set written for a region: the crop of box ``box`` (None: the whole image), one
    image per channel, and the label crop."""
    images: tuple[str, ...]
    box: int | None = None
    labels: str | None = None

    @property
    def names(self) -> list[str]:
        return [*self.images, *([self.labels] if self.labels else [])]


@dataclass(frozen=True)
class RegionRecord:
    """A region's part of the sidecar."""
    name: str
    status: Status
    trusted: bool | None = None
    reasons: tuple[str, ...] = ()
    why: str = ""                                  # one line: why it was not cropped
    measures: dict = field(default_factory=dict)   # the trust rule's measures
    definition: dict = field(default_factory=dict)  # margins, z_only, atlas id, source, boxes_mm
    transform: dict | None = None
    boxes: tuple[dict, ...] = ()                   # the region's boxes in the image (index + world)
    crops: tuple[dict, ...] = ()                   # predict: the boxes nnU-Net ran on (fitted to its tiles)
    voxel_fraction_kept: float | None = None
    outputs: tuple[OutputFile, ...] = ()
    label_voxels_preserved_percent: float | None = None
    warnings: tuple[str, ...] = ()
    seconds: float | None = None                   # the case's seconds shared equally between its regions
    error: str | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        return as_json(d)

    @classmethod
    def from_json(cls, d: dict) -> RegionRecord:
        """The inverse of :meth:`to_json` (KeyError/ValueError/TypeError on a foreign dict)."""
        d = dict(d)
        d["status"] = Status(d["status"])
        d["outputs"] = tuple(OutputFile(tuple(o["images"]), o.get("box"), o.get("labels")) for o in d["outputs"])
        for k in ("reasons", "boxes", "crops", "warnings"):
            d[k] = tuple(d[k])
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass(frozen=True)
class CaseRecord:
    """A case's sidecar: its fields and its regions' records (by region name)."""
    case: str
    command: str                                   # "crop" or "predict"
    input: str | list[str]
    input_stamp: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    anatomy: str | None = None
    anatomy_groups_present: list[str] | None = None
    image: dict | None = None                      # Geometry.to_dict of the input
    registration: dict | None = None
    seconds: dict = field(default_factory=dict)
    regions: dict[str, RegionRecord] = field(default_factory=dict)
    error: str | None = None                       # the case failed before any region
    schema: int = SCHEMA

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "regions"}
        return as_json({**d, "regions": {k: r.to_json() for k, r in self.regions.items()}})

    @classmethod
    def from_json(cls, d: dict) -> CaseRecord | None:
        """The record of a sidecar dict, or None when it is not one of this schema."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            return None
        try:
            regions = {k: RegionRecord.from_json(r) for k, r in d["regions"].items()}
            return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d and f.name != "regions"},
                       regions=regions)
        except (KeyError, ValueError, TypeError, AttributeError):
            return None

    def with_regions(self, regions: dict[str, RegionRecord]) -> CaseRecord:
        return replace(self, regions=regions)

    def stamp(self) -> dict:
        """What ``--continue`` compares: input, its size and time, settings, package version."""
        return as_json({"input": self.input, "input_stamp": self.input_stamp, "settings": self.settings,
                        "nnunet_ctarr": self.versions.get("nnunet_ctarr")})


#: the batch report's columns
FIELDS = ("case", "region", "status", "n_outputs", "n_boxes", "trusted", "reasons", "orientation", "scale_xyz",
          "registration_dice", "region_dice", "voxel_fraction_kept", "label_voxels_preserved_percent", "seconds",
          "warnings", "error")


@dataclass(frozen=True)
class ReportRow:
    """One case-region row of a batch report (``status``: a :class:`Status` value or ``done before``)."""
    case: str
    region: str
    status: str
    n_outputs: int = 0
    n_boxes: int = 0                # boxes cut (or, with --boxes_only, to cut)
    trusted: bool | None = None
    reasons: str = ""
    orientation: str | None = None
    scale_xyz: list[float] | None = None
    registration_dice: float | None = None
    region_dice: float | None = None
    voxel_fraction_kept: float | None = None
    label_voxels_preserved_percent: float | None = None
    seconds: float | None = None
    warnings: str = ""
    error: str | None = None

    @classmethod
    def of(cls, case: str, r: RegionRecord, done_before: bool = False) -> ReportRow:
        """The row of a region record; a clean record found by ``--continue`` is ``done before``."""
        t = r.transform or {}
        status = "done before" if done_before and r.status is Status.CROPPED else r.status.value
        cut = r.status in (Status.CROPPED, Status.ANYWAY)
        n_boxes = sum(b.get("status") != "outside" for b in r.boxes) if cut else 0
        return cls(case, r.name, status, len(r.outputs), n_boxes, r.trusted, "; ".join(r.reasons) or r.why,
                   t.get("orientation"), t.get("scale_xyz"), r.measures.get("registration_dice"),
                   r.measures.get("region_dice"), r.voxel_fraction_kept, r.label_voxels_preserved_percent,
                   r.seconds, " | ".join(r.warnings), r.error)

    @classmethod
    def failed(cls, case: str, region: str, message: str) -> ReportRow:
        return cls(case, region, Status.FAILED.value, error=message)

    def to_json(self) -> dict:
        return as_json(asdict(self))

    @classmethod
    def from_json(cls, d: dict) -> ReportRow:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})
