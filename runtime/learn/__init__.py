"""Learning on the device: a clip's head rows, the new bundle solved from the sums, fleets
merged, and the live session of stpr-run --learn."""
