"""Stage 4: what a run writes: the case writer of the crop command, the sidecar and the batch
report (typed records), the HTML report and the QC pictures. Imports the stages below it."""
