"""Self-contained HTML reports: a detection page (video + score timeline) and an evaluation page.

Every page is one ``.html`` file that opens from disk with no server and no network: the plotting
library (uPlot, vendored in ``assets/`` with its licence), the page's own script and style, and its
data (one inline JSON block) are all written into the file. See ``docs/report.md``.
"""
