"""Pure measurements on frames and stacks: contrast limits, ROI time series, line profiles, and
the read cost of a dataset. numpy/scipy only; no Panel, no state."""
